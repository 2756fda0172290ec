"""Perceptual losses of feed-forward style transfer (Johnson et al. 2016; Dumoulin et al. 2017;
Ghiasi et al. 2017): content at one VGG layer, style by Gram matrices (or by channel mean/std,
the AdaIN loss) at several, total variation on the output."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from normapps.norm import calc_mean_std

# The layers the project's VGG encoder returns with ``all_layers=True``.
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
STYLE_LOSSES = ("gram", "mean_std")


def layer_index(name: str) -> int:
    if name not in LAYERS:
        raise ValueError(f"VGG layer {name!r}: expected one of {LAYERS}")
    return LAYERS.index(name)


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) channel correlations divided by C*H*W, in float32."""
    n, c, h, w = feat.shape
    f = feat.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def style_targets(style_feats: Sequence[torch.Tensor], kind: str) -> list[torch.Tensor]:
    """Per layer, what the style loss compares against, stackable over styles of any size:
    Gram matrices (N, C, C), or channel mean and std (N, 2, C) (the AdaIN loss, statistics
    from the core's calc_mean_std)."""
    if kind == "gram":
        return [gram_matrix(f) for f in style_feats]
    if kind == "mean_std":
        out = []
        for f in style_feats:
            mean, std = calc_mean_std(f)
            out.append(torch.stack([mean.flatten(1), std.flatten(1)], dim=1))
        return out
    raise ValueError(f"style_loss={kind!r}: expected one of {STYLE_LOSSES}")


def style_loss(output_feats: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], kind: str) -> torch.Tensor:
    """Sum over layers of the mean squared difference between the output's statistics and the
    targets (a target batch of 1 broadcasts over the outputs)."""
    loss = output_feats[0].new_zeros((), dtype=torch.float32)
    for out, target in zip(output_feats, targets):
        stats = style_targets([out], kind)[0]
        loss = loss + F.mse_loss(stats, target.to(stats.dtype).expand_as(stats))
    return loss


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic TV)."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dx + dy
