"""Normalization factory: every kind is (partition, operation, recovery, builder).

The registry is the single description of each method (``describe_norms()`` renders it for
docs); the builders return plain torch modules where torch has a fused kernel, so "batch" is
exactly ``nn.BatchNorm2d`` (quantization fusion and pruning tools match exact types).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .conditional import ConditionalBatchNorm, ConditionalInstanceNorm, SelfModulatedBatchNorm
from .domain import DomainBatchNorm
from .whitening import BatchWhitening, IterNorm

__all__ = ["NormSpec", "NORM_REGISTRY", "build_norm", "describe_norms", "norm_kinds"]


@dataclass(frozen=True)
class NormSpec:
    partition: str  # which elements share statistics
    operation: str  # how they are normalized
    recovery: str  # how the representation is recovered
    builder: Callable[..., nn.Module]  # builder(num_features, *, dim, **kwargs)


def _by_dim(table: dict[int, type[nn.Module]], kind: str, dim: int) -> type[nn.Module]:
    if dim not in table:
        raise ValueError(f"{kind!r} supports dim in {sorted(table)}, got {dim}")
    return table[dim]


_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_IN = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _batch(num_features: int, *, dim: int = 2, **kw: Any) -> nn.Module:
    return _by_dim(_BN, "batch", dim)(num_features, **kw)


def _instance(
    num_features: int, *, dim: int = 2, affine: bool = True, track_running_stats: bool = False, **kw: Any
) -> nn.Module:
    # affine=True by default (unlike torch): every other kind here recovers a per-channel affine.
    return _by_dim(_IN, "instance", dim)(
        num_features, affine=affine, track_running_stats=track_running_stats, **kw
    )


def _default_groups(num_features: int, wanted: int = 32) -> int:
    """Largest divisor of C not above ``wanted`` (32 -> 16 for 48 channels, C when C < 32)."""
    g = min(wanted, num_features)
    while num_features % g:
        g -= 1
    return g


def _group(
    num_features: int, *, dim: int = 2, num_groups: int | None = None, eps: float = 1e-5,
    affine: bool = True, momentum: Any = None,
) -> nn.Module:
    # momentum is accepted and ignored: GroupNorm has no running stats, and generic configs
    # pass the same keywords to every kind.
    if num_groups is None:
        num_groups = _default_groups(num_features)
    elif num_groups < 1 or num_features % num_groups:
        raise ValueError(
            f"num_groups={num_groups} must divide num_features={num_features} "
            f"(divisors: {[g for g in range(1, num_features + 1) if num_features % g == 0]})"
        )
    return nn.GroupNorm(num_groups, num_features, eps=eps, affine=affine)


def _layer(num_features: int, *, dim: int = 2, eps: float = 1e-5, affine: bool = True, momentum: Any = None) -> nn.Module:
    # One group = statistics over (C, *spatial) per sample with a per-channel affine, which is
    # what "layer norm" means for channels-first maps (nn.LayerNorm would want the spatial size).
    return nn.GroupNorm(1, num_features, eps=eps, affine=affine)


def _none(num_features: int, *, dim: int = 2, **kw: Any) -> nn.Module:
    return nn.Identity()


def _whiten(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(num_features: int, *, dim: int = 2, **kw: Any) -> nn.Module:
        return cls(num_features, **kw)  # works on any (N, C, *): dim is irrelevant
    return build


def _with_dim(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(num_features: int, *, dim: int = 2, **kw: Any) -> nn.Module:
        return cls(num_features, dim=dim, **kw)
    return build


def _cond_instance(num_features: int, *, dim: int = 2, momentum: Any = None, **kw: Any) -> nn.Module:
    # momentum accepted and ignored (no running stats), like "group"/"layer".
    return ConditionalInstanceNorm(num_features, **kw)


NORM_REGISTRY: dict[str, NormSpec] = {
    "batch": NormSpec("per channel over (N, H, W)", "standardize", "per-channel affine", _batch),
    "instance": NormSpec("per sample and channel over (H, W)", "standardize", "per-channel affine", _instance),
    "group": NormSpec("per sample and channel group over (C/G, H, W)", "standardize", "per-channel affine", _group),
    "layer": NormSpec("per sample over (C, H, W)", "standardize", "per-channel affine", _layer),
    "none": NormSpec("-", "identity", "-", _none),
    "batch_whiten": NormSpec("per channel group over (N, H, W)", "ZCA whitening (eigh)", "per-channel affine", _whiten(BatchWhitening)),
    "iter_norm": NormSpec("per channel group over (N, H, W)", "whitening by Newton iterations", "per-channel affine", _whiten(IterNorm)),
    "cond_batch": NormSpec("per channel over (N, H, W)", "standardize", "class-conditional affine", _with_dim(ConditionalBatchNorm)),
    "cond_instance": NormSpec("per sample and channel over (H, W)", "standardize", "style-conditional affine (mixable) or given per sample", _cond_instance),
    "self_mod": NormSpec("per channel over (N, H, W)", "standardize", "affine from latent z via MLP", _with_dim(SelfModulatedBatchNorm)),
    "domain_batch": NormSpec("per domain and channel over (N_d, H, W)", "standardize", "per-domain per-channel affine", _with_dim(DomainBatchNorm)),
}


def norm_kinds() -> list[str]:
    return list(NORM_REGISTRY)


def describe_norms() -> list[dict[str, str]]:
    """Rows (kind, partition, operation, recovery, module) for a README table."""
    rows = []
    for kind, spec in NORM_REGISTRY.items():
        module = type(spec.builder(32, dim=2, **_DESCRIBE_KW.get(kind, {}))).__name__
        rows.append(dict(kind=kind, partition=spec.partition, operation=spec.operation,
                         recovery=spec.recovery, module=module))
    return rows


_DESCRIBE_KW: dict[str, dict[str, Any]] = {
    "cond_batch": {"num_classes": 2}, "cond_instance": {"num_styles": 2},
    "self_mod": {"z_dim": 4}, "domain_batch": {"num_domains": 2},
}


def build_norm(kind: str | Callable[..., nn.Module], num_features: int, **kwargs: Any) -> nn.Module:
    """Build a channels-first normalization layer.

    ``kind`` is a registry name (see :func:`norm_kinds`) or a class/callable called as
    ``kind(num_features, **kwargs)`` (``dim`` is dropped for callables, as torch modules don't
    take it). ``dim=2`` (default) is NCHW, ``dim=1`` is (N, C) (or (N, C, L)) features.
    Common keywords: eps, momentum, affine. "instance" defaults to affine=True and
    track_running_stats=False; "group" defaults to the largest divisor of C up to 32 groups.
    """
    if not isinstance(kind, str):
        if not callable(kind):
            raise TypeError(f"kind must be a string or a callable, got {type(kind).__name__}")
        kwargs.pop("dim", None)
        return kind(num_features, **kwargs)
    key = kind.lower().replace("-", "_")
    if key not in NORM_REGISTRY:
        raise ValueError(f"unknown norm kind {kind!r}; known kinds: {', '.join(NORM_REGISTRY)}")
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    return NORM_REGISTRY[key].builder(num_features, **kwargs)
