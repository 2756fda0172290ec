"""Test-time batch statistics for BN (test-time BN, TENT; Schneider et al. 2020, Wang et al. 2021).

:func:`use_batch_stats` makes every ``_BatchNorm`` normalize with the statistics of the batch
it is given, also in eval mode, without touching its running statistics. A BN whose input has
a single value per channel (batch size 1 with 1x1 maps, or BatchNorm1d on one sample) cannot
estimate a variance: that call falls back to the stored running statistics instead of raising.
"""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["use_batch_stats", "use_running_stats", "uses_batch_stats"]

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
