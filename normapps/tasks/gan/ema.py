"""Exponential moving average of the generator's weights.

Parameters (including a parametrization's ``original``) are averaged. Spectral-norm power
iteration vectors ``_u``/``_v`` are not: an average of unit singular-vector estimates is not a
singular-vector estimate, so the EMA copy takes the live generator's current vectors instead.
BN running statistics are not averaged either; :func:`recalibrate_ema_bn` re-estimates them
for the averaged weights before every evaluation.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn

from normapps.norm import bn_modules, recalibrate_bn


def is_sn_vector(name: str) -> bool:
    """True for the power-iteration buffers of torch's spectral_norm (parametrization or hook)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("_u", "_v", "weight_u", "weight_v")


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, *, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers copied (see module doc)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"model.ema_decay must be in [0, 1], got {decay}")
    ema_params = dict(ema.named_parameters())
    live_params = list(model.named_parameters())
    if len(live_params) != len(ema_params):
        raise ValueError("the EMA model does not match the generator's parameters")
    torch._foreach_lerp_([ema_params[n] for n, _ in live_params],
                         [p.detach() for _, p in live_params], 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buf in model.named_buffers():
        # u/v: copied, never averaged; BN stats: copied here, re-estimated before evaluation.
        ema_buffers[name].copy_(buf)


def recalibrate_ema_bn(ema: nn.Module, batches: Iterable, *,
                       forward_fn: Callable[[nn.Module, object], object]) -> nn.Module:
    """Re-estimate the BN statistics of the averaged generator (no-op without BN)."""
    if bn_modules(ema):
        recalibrate_bn(ema, batches, forward_fn=forward_fn)
    return ema
