"""``adapt=none``: the source model as it is, BN with its source running statistics."""
from __future__ import annotations

import copy

import torch
from torch import nn

from normapps.tasks.domain_adaptation.common import predict_logits


def predict_source(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    return predict_logits(copy.deepcopy(model).eval(), target, batch_size=batch_size, device=device)
