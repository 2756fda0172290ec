"""Normalization factory: every kind is (partition, operation, recovery, builder).

The registry is the single description of each method (``describe_norms()`` renders it for
docs, ``scripts/gen_norm_doc.py`` writes it into docs/norm.md); the builders return plain torch
modules where torch has a fused kernel, so "batch" is exactly ``nn.BatchNorm2d`` (quantization
fusion and pruning tools match exact types).

Two families share the one vocabulary (timm's ``layers/create_norm`` pattern):
- activation kinds (``batch``, ``group``, ...): ``get_norm_layer(kind)`` is a constructor
  ``(num_features, **kw) -> nn.Module``, ``build_norm(kind, C)`` builds one layer;
- weight kinds (``spectral``, ``weight``): they reparametrize the conv/linear weights of a
  network instead of adding layers, so ``get_norm_layer(kind)`` is ``(module, **kw) -> module``
  (torch's parametrizations, in place) and the network's activation layers are ``none``
  (:func:`activation_norm_kind`).
:func:`norm_kind_of` maps a built module back to its kind; :data:`NORM_LAYER_TYPES` is every
class an activation norm layer can be, for ``isinstance`` checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .conditional import ConditionalBatchNorm, ConditionalInstanceNorm, SelfModulatedBatchNorm
from .domain import DomainBatchNorm
from .weight import apply_spectral_norm, apply_weight_norm
from .whitening import BatchWhitening, IterNorm

__all__ = [
    "NormSpec", "NORM_REGISTRY", "NORM_KINDS", "ACTIVATION_NORM_KINDS", "WEIGHT_NORM_KINDS",
    "NORM_LAYER_TYPES", "build_norm", "get_norm_layer", "activation_norm_kind", "is_weight_norm",
    "norm_kind_of", "check_norm_kind", "describe_norms", "norm_kinds",
]

ACTIVATIONS, WEIGHTS = "activations", "weights"


@dataclass(frozen=True)
class NormSpec:
    partition: str  # which elements share statistics
    operation: str  # how they are normalized
    recovery: str  # how the representation is recovered
    # activations: builder(num_features, *, dim, **kwargs) -> layer;
    # weights: builder(module, **kwargs) -> module (reparametrized in place)
    builder: Callable[..., nn.Module]
    applies_to: str = ACTIVATIONS
    # what forward takes besides x ("y": class labels, "z": latents, "style", "domain")
    condition: str | None = None


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
    "cond_batch": NormSpec("per channel over (N, H, W)", "standardize", "class-conditional affine", _with_dim(ConditionalBatchNorm), condition="y"),
    "cond_instance": NormSpec("per sample and channel over (H, W)", "standardize", "style-conditional affine (mixable) or given per sample", _cond_instance, condition="style"),
    "self_mod": NormSpec("per channel over (N, H, W)", "standardize", "affine from latent z via MLP", _with_dim(SelfModulatedBatchNorm), condition="z"),
    "domain_batch": NormSpec("per domain and channel over (N_d, H, W)", "standardize", "per-domain per-channel affine", _with_dim(DomainBatchNorm), condition="domain"),
    "spectral": NormSpec("each conv/linear/embedding weight (output channels x the rest)", "divide by the largest singular value (power iteration)", "-", apply_spectral_norm, applies_to=WEIGHTS),
    "weight": NormSpec("each output channel's conv/linear weight vector", "divide by its L2 norm", "learned per-channel magnitude g", apply_weight_norm, applies_to=WEIGHTS),
}

NORM_KINDS: tuple[str, ...] = tuple(NORM_REGISTRY)
ACTIVATION_NORM_KINDS: tuple[str, ...] = tuple(k for k, s in NORM_REGISTRY.items() if s.applies_to == ACTIVATIONS)
WEIGHT_NORM_KINDS: tuple[str, ...] = tuple(k for k, s in NORM_REGISTRY.items() if s.applies_to == WEIGHTS)

# Every class an activation norm layer built here (or its torch relatives: SyncBatchNorm,
# nn.LayerNorm) can be, for isinstance checks; nn.Identity ("none") is not a norm layer.
NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    _BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, BatchWhitening, IterNorm,
    ConditionalBatchNorm, ConditionalInstanceNorm, SelfModulatedBatchNorm, DomainBatchNorm,
)


def _key(kind: str) -> str:
    key = kind.lower().replace("-", "_")
    if key not in NORM_REGISTRY:
        raise ValueError(f"unknown norm kind {kind!r}; known kinds: {', '.join(NORM_REGISTRY)}")
    return key


def norm_kinds(applies_to: str | None = None) -> list[str]:
    """Every kind in registry order; ``applies_to="activations"`` or ``"weights"`` selects a family."""
    if applies_to not in (None, ACTIVATIONS, WEIGHTS):
        raise ValueError(f"applies_to must be {ACTIVATIONS!r}, {WEIGHTS!r} or None, got {applies_to!r}")
    return [k for k, s in NORM_REGISTRY.items() if applies_to is None or s.applies_to == applies_to]


def is_weight_norm(kind: str) -> bool:
    """True for the kinds that reparametrize weights (``spectral``, ``weight``)."""
    return NORM_REGISTRY[_key(kind)].applies_to == WEIGHTS


def activation_norm_kind(kind: str) -> str:
    """The activation layers a network normalized by ``kind`` gets: ``kind`` itself, or
    ``none`` for a weight kind (its normalization lives in the weights)."""
    return "none" if is_weight_norm(kind) else _key(kind)


def check_norm_kind(kind: Any, option: str, allowed: Sequence[str] | None = None) -> str:
    """``kind`` as a registry name, else a ValueError naming ``option``; ``allowed`` narrows the
    choice to the kinds a model supports (each must be a registry kind)."""
    choices = tuple(NORM_KINDS if allowed is None else allowed)
    unknown = [k for k in choices if k not in NORM_REGISTRY]
    if unknown:  # a programming error: a model's list drifted from the core's vocabulary
        raise ValueError(f"{option}: {unknown} are not normalization kinds of normapps.norm")
    key = kind.lower().replace("-", "_") if isinstance(kind, str) else kind
    if key not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {kind!r}")
    return key


def get_norm_layer(kind: str | Callable[..., nn.Module], **defaults: Any) -> Callable[..., nn.Module]:
    """A constructor for ``kind`` (timm's ``get_norm_layer``), with ``defaults`` bound.

    Activation kinds: ``ctor(num_features, **kw) -> nn.Module`` (``build_norm(kind, ...)``;
    ``get_norm_layer("batch")(8)`` is ``nn.BatchNorm2d(8)``). Weight kinds:
    ``ctor(module, **kw) -> module``, every conv/linear weight of ``module`` reparametrized in
    place by torch's parametrizations (``n_power_iterations``, ``eps`` for spectral). A class or
    callable is returned as is (``defaults`` bound with functools.partial).
    """
    if not isinstance(kind, str):
        if not callable(kind):
            raise TypeError(f"kind must be a string or a callable, got {type(kind).__name__}")
        return partial(kind, **defaults) if defaults else kind
    key = _key(kind)
    spec = NORM_REGISTRY[key]
    if spec.applies_to == WEIGHTS:
        return partial(spec.builder, **defaults)
    return partial(build_norm, key, **defaults)


_KIND_CLASSES: dict[str, type[nn.Module]] = {
    "batch_whiten": BatchWhitening, "iter_norm": IterNorm, "cond_batch": ConditionalBatchNorm,
    "cond_instance": ConditionalInstanceNorm, "self_mod": SelfModulatedBatchNorm,
    "domain_batch": DomainBatchNorm,
}


def norm_kind_of(module: nn.Module) -> str | None:
    """The activation kind ``module`` is (``batch`` for any BatchNorm, SyncBatchNorm too;
    ``layer`` for nn.LayerNorm and a one-group GroupNorm, which ``build_norm("layer")`` makes),
    or None when it is not a norm layer of the registry."""
    if isinstance(module, _BatchNorm):
        return "batch"
    if isinstance(module, nn.GroupNorm):
        return "layer" if module.num_groups == 1 else "group"
    if isinstance(module, nn.LayerNorm):
        return "layer"
    if isinstance(module, _InstanceNorm):
        return "instance"
    for kind, cls in _KIND_CLASSES.items():
        if isinstance(module, cls):
            return kind
    return None


def _weight_parametrization(spec: NormSpec) -> str:
    probe = spec.builder(nn.Linear(4, 4))
    return type(probe.parametrizations.weight[0]).__name__


def describe_norms() -> list[dict[str, str]]:
    """Rows (kind, applies_to, partition, operation, recovery, condition, module) for the docs'
    table; ``module`` is the class built (weight kinds: torch's parametrization class)."""
    rows = []
    for kind, spec in NORM_REGISTRY.items():
        if spec.applies_to == WEIGHTS:
            module = _weight_parametrization(spec)
        else:
            module = type(spec.builder(32, dim=2, **_DESCRIBE_KW.get(kind, {}))).__name__
        rows.append(dict(kind=kind, applies_to=spec.applies_to, partition=spec.partition,
                         operation=spec.operation, recovery=spec.recovery,
                         condition=spec.condition or "-", module=module))
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
    key = _key(kind)
    if NORM_REGISTRY[key].applies_to == WEIGHTS:
        raise ValueError(
            f"{kind!r} normalizes weights, not activations: get_norm_layer({key!r})(module) "
            "reparametrizes a network's conv/linear weights, and its norm layers are 'none' "
            f"(activation_norm_kind({key!r}))")
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    return NORM_REGISTRY[key].builder(num_features, **kwargs)
