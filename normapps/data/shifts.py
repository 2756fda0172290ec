"""Dataset shifts for digit classifiers: synthetic shifts of any image batch, and real ones.

Synthetic (deterministic per seed, on (N, C, H, W) in [0, 1], white strokes on black as in the
bundled digits, MNIST and USPS):
- ``inverted``: 1 - x;
- ``colour``: a random colour background per image blended as in MNIST-M (|background - x|,
  so strokes take the complementary colour);
- ``rotate``: rotation by +-``rotate_degrees`` (random sign per image);
- ``scale``: the image shrunk by ``scale_factor`` about its centre.

Area that rotation or scaling uncovers takes the median colour of the image's border ring.

Real, through torchvision when the files are under ``root`` (or ``download=true`` with
internet): ``usps`` (MNIST->USPS) and ``mnist`` (SVHN->MNIST) load the target's test split at
the source's size and channel count via :func:`normapps.data.classification.load_arrays`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from normapps.data.classification import load_arrays

SYNTHETIC_SHIFTS = ("inverted", "colour", "rotate", "scale")
DATASET_SHIFTS = ("usps", "mnist")
SHIFTS = SYNTHETIC_SHIFTS + DATASET_SHIFTS


def resolve_shifts(spec: str | list | tuple | None) -> list[str]:
    """``all`` (the synthetic ones: they need no download), a name, or a list -> names."""
    if spec is None:
        return []
    names = list(SYNTHETIC_SHIFTS) if spec == "all" else [spec] if isinstance(spec, str) else list(spec)
    bad = [n for n in names if n not in SHIFTS]
    if bad:
        raise ValueError(f"unknown shift(s) {bad}; choose from all, {', '.join(SHIFTS)}")
    return names


def invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def colour_background(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if x.shape[1] != 3:
        raise ValueError(f"the colour shift needs 3-channel images, got {x.shape[1]} channels")
    bg = torch.rand((x.shape[0], 3, 1, 1), generator=g)
    return (bg - x).abs()


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # Uncovered area takes the median colour of each image's outer ring of pixels (black for
    # digits): replicating the border would smear strokes that touch the edge.
    theta = theta.to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cover = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    ring = torch.ones_like(x[0, 0], dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    fill = x[:, :, ring].median(dim=2).values[:, :, None, None]
    return out + (1 - cover) * fill


def rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    sign = torch.randint(0, 2, (x.shape[0],), generator=g).float() * 2 - 1
    a = sign * math.radians(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    if not 0 < factor:
        raise ValueError(f"scale_factor must be > 0, got {factor}")
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]]).expand(x.shape[0], 2, 3)
    return _affine(x, theta)


@torch.no_grad()
def apply_shift(images: torch.Tensor, name: str, *, seed: int = 0, rotate_degrees: float = 45.0,
                scale_factor: float = 0.6) -> torch.Tensor:
    """One synthetic shift of a batch; deterministic per ``seed``."""
    if name not in SYNTHETIC_SHIFTS:
        raise ValueError(f"{name!r} is not a synthetic shift ({', '.join(SYNTHETIC_SHIFTS)}); "
                         f"dataset shifts come from load_shift_dataset")
    g = torch.Generator().manual_seed(seed * 100 + SYNTHETIC_SHIFTS.index(name))
    x = images.detach().float().cpu().clamp(0, 1)
    if name == "inverted":
        return invert(x)
    if name == "colour":
        return colour_background(x, g)
    if name == "rotate":
        return rotate(x, rotate_degrees, g).clamp(0, 1)
    return scale(x, scale_factor).clamp(0, 1)


def load_shift_dataset(name: str, *, root: str = "data", download: bool = False,
                       image_size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split of a real target dataset (usps or mnist) at the source's format."""
    if name not in DATASET_SHIFTS:
        raise ValueError(f"{name!r} is not a dataset shift; choose from {', '.join(DATASET_SHIFTS)}")
    return load_arrays(name, train=False, root=root, download=download, image_size=image_size,
                       channels=channels)
