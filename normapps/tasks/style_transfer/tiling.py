"""Run a convolutional map over overlapping tiles and paste the exact interiors together.

With a margin at least the map's receptive-field reach, the interior of every tile equals the
same region of the whole-image result (padding effects stay inside the margin), so the pasted
output has no seams and needs no blending. Tiles start on multiples of ``down`` so strided
pooling grids stay aligned.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, tile: int,
                margin: int, up: int = 1, down: int = 1) -> torch.Tensor:
    """``fn`` maps an (N, C, h, w) region to (N, C', ceil(h*up/down), ceil(w*up/down))."""
    if tile <= 0 or tile % down or margin % down:
        raise ValueError(f"tile ({tile}) and margin ({margin}) must be positive multiples of {down}")
    n, _, h, w = x.shape
    out = None
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        ya, yb = max(0, y0 - margin), min(h, y1 + margin)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            xa, xb = max(0, x0 - margin), min(w, x1 + margin)
            r = fn(x[..., ya:yb, xa:xb])
            if out is None:
                out = r.new_empty(n, r.shape[1], math.ceil(h * up / down), math.ceil(w * up / down))
            oy0, ox0 = (y0 - ya) * up // down, (x0 - xa) * up // down
            oy1, ox1 = math.ceil((y1 - ya) * up / down), math.ceil((x1 - xa) * up / down)
            ty, tx = y0 * up // down, x0 * up // down
            out[..., ty:ty + oy1 - oy0, tx:tx + ox1 - ox0] = r[..., oy0:oy1, ox0:ox1]
    return out
