"""``adapt=test_bn``: BN normalizes each target batch with that batch's own statistics
(Schneider et al. 2020; TENT's "BN" baseline). Nothing is learned or stored.

With batch size 1 a BN layer that sees a single value per channel keeps its source running
statistics for that call (see :func:`normapps.norm.use_batch_stats`); layers with spatial maps
use the one sample's statistics.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from normapps.norm import use_batch_stats
from normapps.tasks.domain_adaptation.common import predict_logits


def predict_test_bn(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    adapted = use_batch_stats(copy.deepcopy(model).eval())
    return predict_logits(adapted, target, batch_size=batch_size, device=device)
