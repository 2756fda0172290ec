"""Analyses of normalization from Huang's tutorial: stochastic normalization disturbance and
scale invariance of weights feeding a normalization layer."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from .conditional import ConditionalBatchNorm, ConditionalInstanceNorm, SelfModulatedBatchNorm
from .domain import DomainBatchNorm
from .whitening import _GroupWhitening

__all__ = ["snd", "ScaleInvarianceMonitor", "scale_invariant_layers"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # batch and instance norms
    nn.GroupNorm,
    nn.LayerNorm,
    _GroupWhitening,
    ConditionalBatchNorm,
    ConditionalInstanceNorm,
    SelfModulatedBatchNorm,
    DomainBatchNorm,
)


def snd(
    layer: nn.Module,
    features: torch.Tensor,
    *,
    batch_size: int,
    num_batches: int = 8,
    num_examples: int = 16,
    generator: torch.Generator | None = None,
) -> float:
    """Empirical stochastic normalization disturbance (Huang et al., tutorial seed 000).

    ``Delta_G(x) = 1/s sum_i || G(X_i; x) - 1/s sum_j G(X_j; x) ||`` with ``X_i`` a mini-batch
    of ``batch_size - 1`` other samples plus x, averaged over ``num_examples`` examples x drawn
    from ``features`` (N, C, ...). The layer runs in train mode on a deep copy, so the caller's
    running statistics are untouched.
    """
    n = features.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    layer = copy.deepcopy(layer).train()
    examples = torch.randperm(n, generator=generator)[: min(num_examples, n)]
    e = examples.numel()
    # (E, s, batch_size - 1) indices of other samples: rank i among the n - 1 others of
    # example x maps to i, or i + 1 once past x's own index.
    picks = torch.rand(e, num_batches, n - 1, generator=generator).argsort(dim=2)[..., : batch_size - 1]
    picks = picks + (picks >= examples[:, None, None]).long()
    idx = torch.cat([picks, examples[:, None, None].expand(e, num_batches, 1)], dim=2)
    batches = features[idx.flatten(0, 1)]  # (E*s, batch_size, C, ...), x last in each batch
    with torch.no_grad():
        out = _per_batch(layer, batches)[:, -1]  # x's output in every batch
    g = out.reshape(e, num_batches, -1).double()
    return float((g - g.mean(1, keepdim=True)).norm(dim=2).mean())


def _per_batch(layer: nn.Module, batches: torch.Tensor) -> torch.Tensor:
    """Run ``layer`` on each batch separately (statistics must not mix across batches).

    vmap does all batches in one call (hundreds of tiny forwards are slow on busy CPUs); BN
    running-stat updates can't run under vmap, so they are switched off on this throwaway
    copy. Layers vmap can't handle fall back to one forward per batch.
    """
    try:
        torch.func.replace_all_batch_norm_modules_(layer)
        return torch.func.vmap(layer, randomness="different")(batches)
    except Exception:
        return torch.stack([layer(b) for b in batches])


def scale_invariant_layers(model: nn.Module) -> list[str]:
    """Conv/linear layers immediately followed by a norm layer (in registration order).

    Their output is normalized, so the loss is invariant to the weight's scale. Internals of
    norm layers (e.g. the MLP of a self-modulated BN) are skipped.
    """
    names: list[str] = []
    units: list[tuple[str, nn.Module]] = []
    norm_prefixes: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in norm_prefixes):
            continue
        if isinstance(m, NORM_TYPES):
            norm_prefixes.append(name)
            units.append((name, m))
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or not any(True for _ in m.children()):
            units.append((name, m))
    for (a, ma), (_, mb) in zip(units, units[1:]):
        if isinstance(ma, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(mb, NORM_TYPES):
            names.append(a)
    return names


class ScaleInvarianceMonitor(pl.Callback):
    """Logs ``scale_inv/<layer>/weight_norm`` and ``scale_inv/<layer>/eff_lr = lr / ||w||^2``.

    For scale-invariant weights the effective step size is lr / ||w||^2 (tutorial seed 000):
    weight decay and growth of ||w|| silently change it. ``layers`` lists module names; by
    default conv/linear layers directly followed by a norm layer are found automatically.
    """

    def __init__(self, *, layers: Sequence[str] | None = None, log_every_n_steps: int = 50) -> None:
        super().__init__()
        self.layers = list(layers) if layers is not None else None
        self.log_every_n_steps = max(1, log_every_n_steps)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.layers is None:
            self.layers = scale_invariant_layers(pl_module)

    @staticmethod
    def _param(m: nn.Module) -> nn.Parameter:
        # Parametrized weights are optimized through `original*`: spectral norm's `original`,
        # weight norm's direction `original1` (its magnitude g is not scale-invariant).
        p = getattr(m, "parametrizations", None)
        if p is not None and "weight" in p:
            w = p.weight
            return w.original if hasattr(w, "original") else w.original1
        return m.weight

    def _lr(self, trainer: pl.Trainer, param: nn.Parameter) -> float | None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                if any(q is param for q in group["params"]):
                    return float(group["lr"])
        return None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx % self.log_every_n_steps:
            return
        metrics: dict[str, float] = {}
        with torch.no_grad():
            for name in self.layers or []:
                # Read the optimized tensor: touching a spectral-normed `.weight` in train mode
                # would run (and commit) an extra power iteration.
                param = self._param(pl_module.get_submodule(name))
                norm = float(param.detach().float().norm())
                metrics[f"scale_inv/{name}/weight_norm"] = norm
                lr = self._lr(trainer, param)
                if lr is not None and norm > 0:
                    metrics[f"scale_inv/{name}/eff_lr"] = lr / norm**2
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
