"""AdaIN training losses (Huang & Belongie 2017): content at relu4_1, style on mean/std."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from normapps.norm import calc_mean_std


def content_loss(output_feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output_feat.float(), target.float())


def style_loss(output_feats: Sequence[torch.Tensor], style_feats: Sequence[torch.Tensor], *,
               eps: float = 1e-5, unbiased: bool = True) -> torch.Tensor:
    """Sum over layers of MSE(mean) + MSE(std), statistics from the core's calc_mean_std."""
    loss = output_feats[0].new_zeros((), dtype=torch.float32)
    for out, sty in zip(output_feats, style_feats):
        om, os_ = calc_mean_std(out, eps=eps, unbiased=unbiased)
        sm, ss = calc_mean_std(sty, eps=eps, unbiased=unbiased)
        loss = loss + F.mse_loss(om, sm) + F.mse_loss(os_, ss)
    return loss
