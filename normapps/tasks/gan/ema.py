"""Exponential moving average of the generator's weights, with torch's ``AveragedModel``.

``AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)`` averages the
parameters (including a parametrization's ``original``) with ``torch._foreach_lerp_``, exactly
what the hand-written EMA this replaces did. That EMA started from a copy of the initial G and
averaged from the first step on, so :func:`make_ema` counts the initial copy as one average
(``n_averaged = 1``); ``ema_start`` restarts it (``n_averaged = 0``: AveragedModel copies).
So parameters follow today's behaviour exactly; the buffers differ, on purpose:

* spectral-norm power-iteration vectors ``_u``/``_v`` are neither averaged (an average of unit
  singular-vector estimates is not one) nor copied from the live G (they estimate the live
  weights, not the averaged ones): :func:`refresh_spectral_vectors` runs power iterations on the
  averaged weights after every update;
* BN running statistics are not copied from the live G: :func:`recalibrate_ema_bn` re-estimates
  them for the averaged weights before every evaluation and before ``infer.py`` samples.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from normapps.norm import bn_modules, recalibrate_bn


def is_sn_vector(name: str) -> bool:
    """True for the power-iteration buffers of torch's spectral_norm (parametrization or hook)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("_u", "_v", "weight_u", "weight_v")


def make_ema(model: nn.Module, *, decay: float) -> AveragedModel:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"model.ema_decay must be in [0, 1], got {decay}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.n_averaged.fill_(1)  # the initial copy is the first average (see the module doc)
    return ema.eval()


def _spectral_norms(model: nn.Module):
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if hasattr(p, "_u") and hasattr(p, "n_power_iterations"):
                    yield m, p


@torch.no_grad()
def refresh_spectral_vectors(model: nn.Module, *, n_power_iterations: int = 1) -> nn.Module:
    """Run ``n_power_iterations`` power iterations of every spectral norm in ``model`` on its
    current weights. Uses torch's own rule: reading ``.weight`` with the parametrization in train
    mode runs its power method and updates ``_u``/``_v`` in place."""
    for module, sn in _spectral_norms(model):
        mode, iters = sn.training, sn.n_power_iterations
        sn.train(True)
        sn.n_power_iterations = n_power_iterations
        try:
            module.weight  # noqa: B018 - the read is the power iteration
        finally:
            sn.train(mode)
            sn.n_power_iterations = iters
    return model


@torch.no_grad()
def ema_update(ema: AveragedModel, model: nn.Module, *, restart: bool = False) -> None:
    """One EMA step; ``restart`` copies the live weights instead (before ``model.ema_start``)."""
    if restart:
        ema.n_averaged.zero_()
    ema.update_parameters(model)
    refresh_spectral_vectors(ema, n_power_iterations=1)


def upgrade_state_dict(state: dict[str, torch.Tensor], prefix: str = "G_ema.") -> dict[str, torch.Tensor]:
    """Checkpoints written before the EMA became an ``AveragedModel`` hold ``G_ema.<name>``;
    map them to ``G_ema.module.<name>`` (+ ``n_averaged``) so they keep loading."""
    if any(k.startswith(prefix + "module.") for k in state) or not any(k.startswith(prefix) for k in state):
        return state
    out = {}
    for k, v in state.items():
        out[prefix + "module." + k[len(prefix):] if k.startswith(prefix) else k] = v
    out[prefix + "n_averaged"] = torch.tensor(1, dtype=torch.long)
    return out


def recalibrate_ema_bn(ema: nn.Module, batches: Iterable, *,
                       forward_fn: Callable[[nn.Module, object], object]) -> nn.Module:
    """Re-estimate the BN statistics of the averaged generator (no-op without BN)."""
    if bn_modules(ema):
        recalibrate_bn(ema, batches, forward_fn=forward_fn)
    return ema
