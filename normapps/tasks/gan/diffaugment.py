"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same kind of random, differentiable augmentation is applied to every image D sees, real
and fake, in the D and the G steps, so D cannot overfit a small training set and G still gets
gradients through the augmentation. Policies as in the paper's reference code: ``color``
(brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5]), ``translation`` (up to 1/8 of the
side, zero padding), ``cutout`` (one square of half the side set to 0). Images in [-1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # Output pixel (i, j) reads input pixel (i - dy, j - dx); out of range reads the zero border.
    yy = (gy.unsqueeze(0) - dy + 1).clamp(0, h + 1)
    xx = (gx.unsqueeze(0) - dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    flat = padded.flatten(2)  # (N, C, (H+2)(W+2))
    index = (yy * (w + 2) + xx).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # Rows/columns [offset - size//2, offset - size//2 + size), cut at the border as in the
    # reference code (a square near the border is partly outside the image).
    top, left = oy - ch // 2, ox - cw // 2
    inside = (gy >= top) & (gy < top + ch) & (gx >= left) & (gx < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


class DiffAugment:
    """``DiffAugment("color,translation,cutout")(x)`` or ``DiffAugment(["color", "cutout"])``;
    an empty policy is the identity."""

    def __init__(self, policy: str | list[str] | tuple[str, ...] | None = None) -> None:
        # A comma-separated string or a list (gan.diffaugment=[color,translation] on Hydra's
        # command line, where a bare comma would start a sweep).
        items = policy.split(",") if isinstance(policy, str) else list(policy or [])
        names = [str(p).strip() for p in items if str(p).strip()]
        unknown = [p for p in names if p not in _OPS]
        if unknown:
            raise ValueError(f"gan.diffaugment: unknown policy {', '.join(unknown)}; "
                             f"use a comma-separated subset of {', '.join(POLICIES)}")
        self.names = names

    def __bool__(self) -> bool:
        return bool(self.names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = _OPS[name](x)
        return x
