"""Sparsity training for network slimming: an L1 penalty on every BN scale (Liu et al. 2017).

The penalty s * sum|gamma| is not added to the loss; its subgradient s * sign(gamma) is added to
each BN weight's gradient before the optimizer step, as the paper's code does (right after
backward, where its gradients are already final), so the logged loss stays the
plain task loss and the optimizer (momentum, weight decay) sees the penalised gradient.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from normapps.tasks.slimming.prune import prunable_bns


@torch.no_grad()
def add_bn_l1_subgradient(model: nn.Module, s: float) -> int:
    """``grad += s * sign(gamma)`` for every BN scale that has a gradient; returns how many."""
    touched = 0
    for _, bn in prunable_bns(model):
        if bn.weight.grad is None:
            continue
        bn.weight.grad.add_(torch.sign(bn.weight), alpha=s)
        touched += 1
    return touched


class BNSparsity(pl.Callback):
    """Adds ``s * sign(gamma)`` to every BN scale's gradient once per optimizer step.

    It is added in ``on_before_optimizer_step``, where Lightning has already unscaled the
    gradients (16-mixed's GradScaler multiplies them by its scale during backward) and summed
    the micro-batches of gradient accumulation: added after backward, the penalty shrank to
    s / scale under 16-mixed.
    """

    def __init__(self, *, s: float = 1e-4) -> None:
        if s < 0:
            raise ValueError(f"slimming.s must be >= 0, got {s}")
        self.s = s

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not prunable_bns(pl_module):
            raise ValueError("sparsity training needs BatchNorm layers with a learnable scale; "
                             "use model.norm=batch")

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        add_bn_l1_subgradient(pl_module, self.s)
