"""Scoring stylizations without any VGG of ours.

Two numbers per (content, style, output) triple:
- ``style_shift``: how far the output moved from the content toward the style in the embedding
  of an independent network, Magenta's style predictor (MobileNet-v2, our port of its
  pretrained weights): the projection of E(output) - E(content) on E(style) - E(content),
  divided by the length of the latter. 0: the output's style is the content's; 1: the style's.
- ``structure``: how much of the content's edge structure the output keeps: the Pearson
  correlation of the Sobel gradient magnitudes of the two greyscale images (slightly blurred,
  so texture strokes of the style count less than object edges). 1: the same edges.
A good stylization scores high on both; reconstructing the content gives (0, 1), pasting the
style (about 1, about 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from normapps.tasks.style_transfer.cin_stylize import square_style

EVAL_BLUR_SIGMA = 1.5


@dataclass
class StyleScore:
    style_shift: float
    structure: float


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def edge_magnitude(x: torch.Tensor, sigma: float = EVAL_BLUR_SIGMA) -> torch.Tensor:
    """Sobel gradient magnitude of the blurred greyscale of (N, 3, H, W) images in [0, 1]."""
    g = _blur(_grey(x.float()), sigma)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device).view(1, 1, 3, 3)
    gp = F.pad(g, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(gp, kx), F.conv2d(gp, kx.transpose(2, 3))
    return (gx ** 2 + gy ** 2).sqrt()


def structure_score(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of edge magnitudes (output resized to the content's size)."""
    if output.shape[-2:] != content.shape[-2:]:
        output = F.interpolate(output, size=content.shape[-2:], mode="bilinear", antialias=True,
                               align_corners=False)
    a, b = edge_magnitude(output).flatten(1), edge_magnitude(content).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


class StyleEmbedder:
    """Magenta's pretrained style predictor (our port) as the independent style embedding."""

    def __init__(self, predictor: torch.nn.Module | None = None) -> None:
        if predictor is None:
            from normapps.tasks.style_transfer.onnx_ports import load_magenta

            predictor = load_magenta().predictor
        self.predictor = predictor.eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(square_style(images.float())).flatten(1)

    def style_shift(self, output: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        eo, ec, es = self(output), self(content), self(style)
        d = es - ec
        return ((eo - ec) * d).sum(1) / (d * d).sum(1).clamp_min(1e-12)

    def score(self, output: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> list[StyleScore]:
        shift = self.style_shift(output, content, style)
        struct = structure_score(output, content)
        return [StyleScore(float(a), float(b)) for a, b in zip(shift, struct)]
