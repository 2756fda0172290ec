"""``adapt=adabn``: re-estimate every BN's statistics on all target data (Li et al. 2016)
with the core's ``recalibrate_bn`` (population mean / variance over the target set), then
predict with those fixed statistics. ``alpha`` blends ``alpha * target + (1 - alpha) * source``;
null means target statistics only."""
from __future__ import annotations

import copy

import torch
from torch import nn

from normapps.norm import recalibrate_bn
from normapps.tasks.domain_adaptation.common import predict_logits


def adabn(model: nn.Module, target: torch.Tensor, *, batch_size: int, alpha: float | None = None,
          device: torch.device | str = "cpu") -> nn.Module:
    """A copy of ``model`` whose BN running statistics are the target's."""
    adapted = copy.deepcopy(model).to(device).eval()
    recalibrate_bn(adapted, target.split(batch_size), alpha=alpha)
    return adapted


def predict_adabn(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                  alpha: float | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    adapted = adabn(model, target, batch_size=batch_size, alpha=alpha, device=device)
    return predict_logits(adapted, target, batch_size=batch_size, device=device)
