"""Sparsity training for network slimming: an L1 penalty on every BN scale (Liu et al. 2017).

The penalty s * sum|gamma| is not added to the loss; its subgradient s * sign(gamma) is added to
each BN weight's gradient after backward, as the paper's code does, so the logged loss stays the
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
    """Adds ``s * sign(gamma)`` to every BN scale's gradient after each backward pass."""

    def __init__(self, *, s: float = 1e-4) -> None:
        if s < 0:
            raise ValueError(f"slimming.s must be >= 0, got {s}")
        self.s = s

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not prunable_bns(pl_module):
            raise ValueError("sparsity training needs BatchNorm layers with a learnable scale; "
                             "use model.norm=batch")

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning divides the loss by accumulate_grad_batches and calls this once per
        # micro-batch; divide the same way so one optimizer step adds exactly s * sign(gamma).
        accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
        add_bn_l1_subgradient(pl_module, self.s / accumulate)
