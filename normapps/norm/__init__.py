"""Shared normalization core: area partitioning x operation x recovery.

The vocabulary is :mod:`.factory`'s registry: :data:`NORM_KINDS` (activation kinds plus the
weight kinds ``spectral`` and ``weight``), :func:`get_norm_layer` (a constructor per kind, timm's
pattern), :func:`build_norm`, :func:`norm_kind_of`, :data:`NORM_LAYER_TYPES`; docs/norm.md is
generated from it. Plain kinds are the exact torch modules, the rest are small modules reusing
:mod:`.recovery`.
"""

from .analysis import ScaleInvarianceMonitor, scale_invariant_layers, snd
from .bn_tools import bn_modules, fold_bn, freeze_bn, recalibrate_bn, unfreeze_bn
from .conditional import (
    ConditionalBatchNorm, ConditionalInstanceNorm, SelfModulatedBatchNorm,
    conditional_instance_norm, instance_moments,
)
from .domain import DomainBatchNorm, convert_to_domain_bn, domain_context, set_domain
from .factory import (
    ACTIVATION_NORM_KINDS, NORM_KINDS, NORM_LAYER_TYPES, NORM_REGISTRY, WEIGHT_NORM_KINDS, NormSpec,
    activation_norm_kind, build_norm, check_norm_kind, describe_norms, get_norm_layer, is_weight_norm,
    norm_kind_of, norm_kinds,
)
from .recovery import ChannelAffine, ConditionalAffine, modulate
from .test_time import use_batch_stats, use_prior_stats, use_running_stats, uses_batch_stats, uses_prior_stats
from .adaptation import (
    ADAPTABLE_NORM_KINDS, SAM, StateSnapshot, check_adaptable_kinds, configure_norm_adaptation, entropy_margin,
    entropy_weights, fisher_diagonal, fisher_penalty, norm_affine_params, norm_layer_kind,
    redundancy_mask, reliable_mask, softmax_entropy, update_mean_probs,
)
from .style import adain, adain_from_stats, calc_mean_std, wct
from .weight import apply_spectral_norm, apply_weight_norm, spectral_norm_estimates
from .whitening import BatchWhitening, IterNorm

__all__ = [
    "build_norm", "get_norm_layer", "describe_norms", "norm_kinds", "NORM_REGISTRY", "NormSpec",
    "NORM_KINDS", "ACTIVATION_NORM_KINDS", "WEIGHT_NORM_KINDS", "NORM_LAYER_TYPES",
    "activation_norm_kind", "is_weight_norm", "norm_kind_of", "check_norm_kind",
    "ChannelAffine", "ConditionalAffine", "modulate",
    "BatchWhitening", "IterNorm",
    "ConditionalBatchNorm", "ConditionalInstanceNorm", "SelfModulatedBatchNorm",
    "conditional_instance_norm", "instance_moments",
    "DomainBatchNorm", "set_domain", "domain_context", "convert_to_domain_bn",
    "calc_mean_std", "adain", "adain_from_stats", "wct",
    "apply_spectral_norm", "apply_weight_norm", "spectral_norm_estimates",
    "bn_modules", "recalibrate_bn", "fold_bn", "freeze_bn", "unfreeze_bn",
    "use_batch_stats", "use_running_stats", "uses_batch_stats", "use_prior_stats", "uses_prior_stats",
    "ADAPTABLE_NORM_KINDS", "check_adaptable_kinds", "norm_layer_kind", "norm_affine_params", "configure_norm_adaptation",
    "softmax_entropy", "entropy_margin", "reliable_mask", "redundancy_mask", "update_mean_probs",
    "entropy_weights", "fisher_diagonal", "fisher_penalty", "SAM", "StateSnapshot",
    "snd", "ScaleInvarianceMonitor", "scale_invariant_layers",
]
