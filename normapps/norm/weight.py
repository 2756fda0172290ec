"""Weight-space normalizations (spectral norm, weight norm) and their diagnostics."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

__all__ = ["apply_spectral_norm", "apply_weight_norm", "spectral_norm_estimates"]

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _targets(module: nn.Module, types: tuple[type, ...], exclude: tuple[type, ...] = ()) -> list[nn.Module]:
    # Collect first: parametrizing registers new submodules while we would be iterating.
    skipped = {id(sub) for m in module.modules() if exclude and isinstance(m, exclude) for sub in m.modules()}
    return [
        m for m in module.modules()
        if isinstance(m, types) and not parametrize.is_parametrized(m, "weight") and id(m) not in skipped
    ]


def apply_spectral_norm(
    module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12, *,
    exclude: tuple[type, ...] = (),
) -> nn.Module:
    """Spectral-normalize every conv, linear and embedding weight (Miyato et al. 2018).

    Uses the parametrization API (the hook version is legacy); torch picks the output dimension
    (dim=1 for transposed convs, 0 otherwise, also for Embedding). Weights already parametrized
    are left alone so the call is idempotent. Modules of the ``exclude`` types, and everything
    inside them, are left alone (e.g. a generator's conditional-norm gains, which SAGAN/BigGAN
    do not normalize).
    """
    for m in _targets(module, _CONV_LINEAR + (nn.Embedding,), exclude):
        spectral_norm(m, "weight", n_power_iterations=n_power_iterations, eps=eps)
    return module


def apply_weight_norm(module: nn.Module) -> nn.Module:
    """Weight-normalize (Salimans & Kingma 2016) every conv and linear weight."""
    for m in _targets(module, _CONV_LINEAR):
        weight_norm(m, "weight")
    return module


def spectral_norm_estimates(module: nn.Module) -> dict[str, float]:
    """Exact largest singular value of every conv/linear weight as forward uses it.

    Parametrized weights are read in eval mode so that reading them does not run (and commit)
    an extra power iteration; the value is what an eval forward would use.
    """
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, m in module.named_modules():
            if not isinstance(m, _CONV_LINEAR):
                continue
            modes = [(sub, sub.training) for sub in m.modules()]
            m.eval()
            try:
                w = m.weight
            finally:
                for sub, mode in modes:
                    sub.training = mode
            if isinstance(m, _TRANSPOSED):
                w = w.transpose(0, 1)  # output channels first, as spectral_norm's dim=1
            out[name] = float(torch.linalg.matrix_norm(w.flatten(1).double(), ord=2))
    return out
