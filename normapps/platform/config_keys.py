"""Config keys renamed in a release, and the overrides a user typed.

Task-specific keys live under the task's own name (``gan.*``, ``quant.*``). The previous names
are still accepted for one release: each task's training config declares them as ``null``
placeholders (so ``python train.py task=gan max_g_steps=10`` still composes), and
:func:`migrate_deprecated_keys` moves a value given under an old name to its new name, with a
warning, once, when train.py or infer.py starts; the old names are then removed from the config,
so the code (and the run's ``config.yaml``) sees only the new names.
"""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from normapps.platform.options import OptionError

log = logging.getLogger(__name__)

# old key -> new key (one release of grace; then drop the entry and the placeholder).
DEPRECATED_KEYS: dict[str, str] = {
    "max_g_steps": "gan.max_g_steps",
    "n_dis": "gan.n_dis",
    "eval_every_g_steps": "gan.eval_every_g_steps",
    "metrics.inception_weights": "gan.metrics.inception_weights",
    "metrics.num_samples": "gan.metrics.num_samples",
    "metrics.local_cache": "gan.metrics.local_cache",
    "metrics.local_steps": "gan.metrics.local_steps",
    "mode": "quant.mode",
    # Domain adaptation's flat adapt.* names (the release before adapt.<method>.*).
    "adapt.alpha": "adapt.adabn.alpha",
    "adapt.lr": "adapt.tent.lr",
    "adapt.steps": "adapt.tent.steps",
    "adapt.mode": "adapt.tent.mode",
    "adapt.reset_every": "adapt.tent.reset_every",
    "adapt.threshold": "adapt.dsbn.threshold",
    "adapt.stage1_epochs": "adapt.dsbn.stage1_epochs",
    "adapt.stage2_epochs": "adapt.dsbn.stage2_epochs",
    "adapt.dsbn_lr": "adapt.dsbn.lr",
    "adapt.target_weight": "adapt.dsbn.target_weight",
    "adapt.dsbn_batch_size": "adapt.dsbn.batch_size",
    "adapt.extra_sources": "adapt.dsbn.extra_sources",
}


def deprecation_message(old: str, new: str) -> str:
    return f"{old} is deprecated, use {new} (the old name is accepted for one more release)"


def typed_overrides() -> dict[str, str]:
    """``key -> value`` (as typed) of the command line's overrides (``hydra.overrides.task``);
    empty when the config was not composed by Hydra's command line."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    out: dict[str, str] = {}
    for item in HydraConfig.get().overrides.task:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep:
            out[key] = value
    return out


def explicit_overrides() -> dict[str, str]:
    """:func:`typed_overrides` with deprecated names under their new names, so code that asks
    "did the user set this key?" asks only for the new name."""
    out: dict[str, str] = {}
    for key, value in typed_overrides().items():
        out[DEPRECATED_KEYS.get(key, key)] = value
    return out


def _split(key: str) -> tuple[str, str]:
    parent, _, leaf = key.rpartition(".")
    return parent, leaf


def migrate_deprecated_keys(cfg: DictConfig) -> list[str]:
    """Move every deprecated key set in ``cfg`` to its new name (warning once per key) and remove
    the old names; returns the old names that were set. Both names typed on the command line
    with different values are refused, naming both."""
    typed = typed_overrides()
    moved: list[str] = []
    emptied: set[str] = set()
    for old, new in DEPRECATED_KEYS.items():
        parent_key, leaf = _split(old)
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue
        value: Any = OmegaConf.select(cfg, old)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        with open_dict(parent):
            del parent[leaf]
        if parent_key:
            emptied.add(parent_key)
        if value is None:
            continue
        if old in typed and new in typed and typed[old] != typed[new]:
            raise OptionError(f"{old}={typed[old]} and {new}={typed[new]} were both given: "
                              f"{old} is the deprecated name of {new}; give only {new}")
        log.warning(deprecation_message(old, new))
        with open_dict(cfg):
            OmegaConf.update(cfg, new, value, merge=False, force_add=True)
        moved.append(old)
    for parent_key in sorted(emptied, key=len, reverse=True):
        node = OmegaConf.select(cfg, parent_key)
        if isinstance(node, DictConfig) and len(node) == 0:
            grand, leaf = _split(parent_key)
            holder = OmegaConf.select(cfg, grand) if grand else cfg
            with open_dict(holder):
                del holder[leaf]
    return moved
