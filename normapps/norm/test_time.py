"""Test-time statistics for BN: the batch's own (test-time BN, TENT), or mixed with the source's
(prior BN); Schneider et al. 2020, Wang et al. 2021.

:func:`use_batch_stats` makes every ``_BatchNorm`` normalize with the statistics of the batch
it is given, also in eval mode, without touching its running statistics. A BN whose input has
a single value per channel (batch size 1 with 1x1 maps, or BatchNorm1d on one sample) cannot
estimate a variance: that call falls back to the stored running statistics instead of raising.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["use_batch_stats", "use_running_stats", "uses_batch_stats", "use_prior_stats",
           "uses_prior_stats"]

_FLAG = "_normapps_batch_stats"


def _batch_stats_pre_hook(module: _BatchNorm, args: tuple[Any, ...]) -> None:
    if not getattr(module, _FLAG, None):
        return
    x = args[0]
    # Values per channel this call sees; with one value the batch variance is undefined.
    module.training = x.numel() // max(x.shape[1], 1) > 1 if x.dim() > 1 else False


def use_batch_stats(model: nn.Module) -> nn.Module:
    """Every BN of ``model`` normalizes with batch statistics; running stats stay as they are.

    Momentum is set to 0 (a train-mode call then leaves the running stats unchanged) and a
    forward pre-hook forces batch-statistics mode on each call, so ``model.eval()`` or
    ``model.train()`` afterwards do not undo it. Undo with :func:`use_running_stats`.
    """
    for m in model.modules():
        if not isinstance(m, _BatchNorm) or getattr(m, _FLAG, None):
            continue
        if m.running_mean is None:  # batch-stats-only BN already
            continue
        setattr(m, _FLAG, (m.momentum,))
        m.momentum = 0.0
        if _batch_stats_pre_hook not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_batch_stats_pre_hook)
    return model


def use_running_stats(model: nn.Module) -> nn.Module:
    """Undo :func:`use_batch_stats`: momentum, hooks and train/eval flags back as before."""
    for m in model.modules():
        saved = getattr(m, _FLAG, None)
        if not isinstance(m, _BatchNorm) or not saved:
            continue
        m.momentum = saved[0]
        setattr(m, _FLAG, None)
        for key, hook in list(m._forward_pre_hooks.items()):
            if hook is _batch_stats_pre_hook:
                del m._forward_pre_hooks[key]
    model.train(model.training)
    return model


def uses_batch_stats(module: nn.Module) -> bool:
    return bool(getattr(module, _FLAG, None))


# ----------------------------------------------------------------------------- prior BN

_PRIOR = "_normapps_prior_n"


def _prior_forward_hook(module: _BatchNorm, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
    prior_n = getattr(module, _PRIOR, None)
    if prior_n is None:
        return None
    x = args[0]
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // max(x.shape[1], 1)
    n = x.shape[0]
    # Schneider et al. 2020: the source statistics count as N pseudo-samples next to the n
    # samples of the batch. The variance is the exact variance of that two-part mixture (as
    # in their code); the batch part is BN's own biased batch variance, so N = 0 normalizes
    # exactly like test-time BN. A batch with one value per channel has no variance: the
    # source statistics alone, as use_batch_stats falls back.
    w = 1.0 if count <= 1 else (prior_n / (prior_n + n) if math.isfinite(prior_n) else 1.0)
    mean_s, var_s = module.running_mean, module.running_var
    if w >= 1.0:
        mean, var = mean_s, var_s
    else:
        var_b, mean_b = torch.var_mean(x, dim=dims, correction=0)
        mean = w * mean_s + (1 - w) * mean_b
        var = w * var_s + (1 - w) * var_b + w * (1 - w) * (mean_b - mean_s).square()
    if w >= 1.0 or not torch.is_grad_enabled():
        return F.batch_norm(x, mean.detach(), var.detach(), module.weight, module.bias, False, 0.0, module.eps)
    # With gradients the mixed statistics depend on x: native batch_norm refuses
    # differentiable "running" statistics, so normalize explicitly.
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
    if module.weight is not None:
        out = out * module.weight.view(shape) + module.bias.view(shape)
    return out


def _prior_pre_hook(module: _BatchNorm, args: tuple[Any, ...]) -> None:
    # The module's own forward (whose output the hook replaces) must never update the running
    # statistics, also after a later model.train().
    if getattr(module, _PRIOR, None) is not None:
        module.training = False


def use_prior_stats(model: nn.Module, prior_n: float) -> nn.Module:
    """Every BN normalizes with its source statistics mixed with the batch's (prior BN).

    ``prior_n`` is N, the weight of the source statistics in pseudo-samples: a batch of n
    samples gets ``N / (N + n)`` source and ``n / (N + n)`` batch statistics. N = 0 is
    test-time BN, N -> inf the source model. Running statistics are never changed.
    """
    prior_n = float(prior_n)
    if not prior_n >= 0:
        raise ValueError(f"prior_n must be >= 0 (pseudo-samples of source statistics), got {prior_n}")
    for m in model.modules():
        if not isinstance(m, _BatchNorm) or m.running_mean is None:
            continue
        setattr(m, _PRIOR, prior_n)
        if _prior_pre_hook not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_prior_pre_hook)
        if _prior_forward_hook not in m._forward_hooks.values():
            m.register_forward_hook(_prior_forward_hook)
    model.eval()
    return model


def uses_prior_stats(module: nn.Module) -> bool:
    return getattr(module, _PRIOR, None) is not None
