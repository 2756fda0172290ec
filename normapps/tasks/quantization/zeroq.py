"""ZeroQ-style calibration data (Cai et al. 2020), written from the paper: optimise random
inputs until every BN layer's batch statistics match its running statistics."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normapps.norm import bn_modules


class _BNStatLoss:
    """Forward pre-hooks that sum, over BN layers, the squared L2 distance between the batch's
    per-channel mean / std and the running ones (normalised by channel count)."""

    def __init__(self, model: nn.Module) -> None:
        self.bns = [bn for _, bn in bn_modules(model) if bn.running_mean is not None]
        if not self.bns:
            raise ValueError("ZeroQ synthesis needs a model with BatchNorm running statistics")
        self.terms: list[torch.Tensor] = []
        self.handles = [bn.register_forward_pre_hook(self._hook) for bn in self.bns]

    def _hook(self, bn: nn.Module, args) -> None:
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        std = torch.sqrt(var + bn.eps)
        run_std = torch.sqrt(bn.running_var + bn.eps)
        self.terms.append(((mean - bn.running_mean).square().sum() +
                           (std - run_std).square().sum()) / x.shape[1])

    def pop(self) -> torch.Tensor:
        total = torch.stack(self.terms).sum()
        self.terms = []
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def bn_statistics_loss(model: nn.Module, x: torch.Tensor) -> float:
    """How far ``x``'s batch statistics are from the model's BN running statistics."""
    model.eval()
    loss = _BNStatLoss(model)
    try:
        with torch.no_grad():
            model(x)
        return float(loss.pop())
    finally:
        loss.remove()


def synthesize_calibration_data(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    num_samples: int = 128,
    batch_size: int = 64,
    steps: int = 100,
    lr: float = 0.2,
    seed: int = 0,
) -> torch.Tensor:
    """``num_samples`` inputs of ``input_shape`` (C, H, W) whose BN statistics match the model's.

    Each batch starts from N(0, 1) and is optimised with Adam on the BN statistic loss; the
    model stays in eval mode with its weights untouched.
    """
    if num_samples < 1 or batch_size < 1 or steps < 0:
        raise ValueError("zeroq num_samples and batch_size must be >= 1 and steps >= 0")
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters()]
    grads = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    loss_fn = _BNStatLoss(model)
    gen = torch.Generator().manual_seed(seed)
    out = []
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            x = torch.randn(n, *input_shape, generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model(x)
                loss = loss_fn.pop()
                loss.backward()
                opt.step()
            out.append(x.detach())
    finally:
        loss_fn.remove()
        for p, g in zip(params, grads):
            p.requires_grad_(g)
        model.train(was_training)
    return torch.cat(out)
