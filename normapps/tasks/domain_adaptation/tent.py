"""``adapt=tent``: test-time entropy minimization (Wang et al., ICLR 2021).

The mean softmax entropy of each target batch is minimized over the affine parameters of the
norm layers in ``adapt.tent.norms`` (official: ``[batch]``; add ``group`` / ``layer`` for GN /
LN models); BN normalizes with the batch's statistics (running statistics untouched); Adam,
lr 1e-3. As in the official code each batch's prediction is the output of the forward pass
that drives its (last) update, so episodic TENT with one step predicts exactly like test-time BN.

Batch size 1: GN/LN are per sample anyway; a BN with spatial maps normalizes with the single
sample's statistics; a BN that sees one value per channel keeps its source running statistics
for that call (no crash).
"""
from __future__ import annotations

import torch
from torch import nn

from normapps.norm import softmax_entropy
from normapps.tasks.domain_adaptation.online import OnlineAdapter, predict_online


class Tent(OnlineAdapter):
    name = "tent"

    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        loss = softmax_entropy(logits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits


def predict_tent(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                 device: torch.device | str = "cpu", **options) -> torch.Tensor:
    return predict_online(Tent(model.to(device), **options), target, batch_size=batch_size, device=device)
