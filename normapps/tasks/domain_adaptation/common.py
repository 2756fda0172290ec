"""Helpers every method shares: batched prediction and the target error."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits of ``model`` (in its current mode) for ``images``, ``batch_size`` at a time."""
    model.to(device)
    return torch.cat([model(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)])


def error_rate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) != labels.to(logits.device)).float().mean())
