"""ZeroQ calibration data (Cai et al. 2020), written from the paper (its code is GPL-3): optimise
random inputs until every sample's per-channel statistics at every BN layer match the layer's
running statistics, and the input's match the prior N(0, 1); Adam lr 0.5 for 500 iterations
with the learning rate reduced on plateaus, as in the paper's setup."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normapps.norm import bn_modules


def _per_sample_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) mean and std of every sample's channels over the spatial positions (over the
    batch for (N, C) features, which have none)."""
    if x.dim() == 2:
        var, mean = torch.var_mean(x, dim=0, keepdim=True)
    else:
        var, mean = torch.var_mean(x.flatten(2), dim=2)
    return mean, torch.sqrt(var + eps)


def _distance(stat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # ||stat - target||^2 summed over channels, averaged over samples (ZeroQ's loss).
    return (stat - target).square().sum(1).mean()


class _BNStatLoss:
    """Forward pre-hooks that sum, over BN layers, the distance between every sample's
    per-channel mean / std of the BN input and the BN's running mean / std."""

    def __init__(self, model: nn.Module) -> None:
        self.bns = [bn for _, bn in bn_modules(model) if bn.running_mean is not None]
        if not self.bns:
            raise ValueError("ZeroQ synthesis needs a model with BatchNorm running statistics")
        self.terms: list[torch.Tensor] = []
        self.handles = [bn.register_forward_pre_hook(self._hook) for bn in self.bns]

    def _hook(self, bn: nn.Module, args) -> None:
        mean, std = _per_sample_stats(args[0], bn.eps)
        run_std = torch.sqrt(bn.running_var + bn.eps)
        self.terms.append(_distance(mean, bn.running_mean) + _distance(std, run_std))

    def pop(self) -> torch.Tensor:
        total = torch.stack(self.terms).sum()
        self.terms = []
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def input_prior_loss(x: torch.Tensor, *, mean: float = 0.0, std: float = 1.0, eps: float = 1e-5) -> torch.Tensor:
    """Distance of every sample's per-channel input statistics from the prior N(mean, std^2)."""
    m, s = _per_sample_stats(x, eps)
    return _distance(m, torch.full_like(m, mean)) + _distance(s, torch.full_like(s, std))


def bn_statistics_loss(model: nn.Module, x: torch.Tensor, *, prior_mean: float = 0.0,
                       prior_std: float = 1.0) -> float:
    """ZeroQ's objective for ``x``: BN statistics plus the input prior."""
    model.eval()
    loss = _BNStatLoss(model)
    try:
        with torch.no_grad():
            model(x)
        return float(loss.pop() + input_prior_loss(x, mean=prior_mean, std=prior_std))
    finally:
        loss.remove()


def synthesize_calibration_data(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    num_samples: int = 128,
    batch_size: int = 64,
    steps: int = 500,
    lr: float = 0.5,
    seed: int = 0,
    prior_mean: float = 0.0,
    prior_std: float = 1.0,
) -> torch.Tensor:
    """``num_samples`` inputs of ``input_shape`` (C, H, W) whose statistics match the model's BNs.

    Each batch starts from N(0, 1) and is optimised with Adam on ZeroQ's loss (per-sample BN
    statistics + input prior), the learning rate divided by 10 after 100 iterations without
    improvement (down to 1e-4); the model stays in eval mode with its weights untouched.
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
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=100, min_lr=1e-4)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model(x)
                loss = loss_fn.pop() + input_prior_loss(x, mean=prior_mean, std=prior_std)
                loss.backward()
                opt.step()
                plateau.step(float(loss))
            out.append(x.detach())
    finally:
        loss_fn.remove()
        for p, g in zip(params, grads):
            p.requires_grad_(g)
        model.train(was_training)
    return torch.cat(out)
