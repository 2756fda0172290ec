"""train.py's checks before any work: every option a run will use, against its declared type.

Runs first in :func:`normapps.platform.runner.run_train`, before loggers, data or models are
built: ``ckpt_path`` must be a safe checkpoint of the module this run trains; ``seed``, ``test``
and ``test_ckpt`` have their types; every key given to a ``_target_`` (``model.*``, ``data.*``,
``trainer.*``, ``callbacks.*``) is checked against the type hints of the class it configures
(a string where a number is expected, NaN, an empty value, a choice outside a ``Literal``), so
``model.lr=abc`` fails here naming ``model.lr`` instead of inside torch.optim; learning rates
must be positive, batch sizes at least 1. A task can add its own checks with
``task.validate: <dotted path of fn(cfg)>``, and name in ``task.sweeps`` the keys its runner
expands from a list into one model per value (each value is then checked).
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from normapps.platform import registry
from normapps.platform.checkpoint import (
    CheckpointError, checkpoint_meta, import_object, require_network, resolve_entry, safe_load,
)
from normapps.platform.options import OptionError, as_bool, as_choice, as_float, as_int, as_text, seed_option

# Top-level options that name a checkpoint of this project, besides ckpt_path (resume).
CHECKPOINT_OPTIONS = ("source_ckpt",)
# Config keys whose values are not constructor arguments.
_HYDRA_KEYS = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}


def preflight(cfg: DictConfig) -> Any:
    """Every check, before anything is built; returns what the task's ``task.validate`` returns
    (its checked options, a :class:`normapps.platform.options.TaskOptions`; None without one),
    which the runner gets as ``ctx.options``."""
    # Resolve interpolations once (the checks read hundreds of values); the unresolved config
    # is kept to say where an interpolated value came from.
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    check_resume_checkpoint(plain)
    check_checkpoint_options(plain)
    seed_option(plain)
    as_bool("test", plain.get("test", True))
    as_choice("test_ckpt", plain.get("test_ckpt", "best"), ("best", "last"))
    sweeps = set(plain.task.get("sweeps") or []) if plain.get("task") is not None else set()
    for group in ("model", "data", "trainer"):
        node = plain.get(group)
        if isinstance(node, DictConfig):
            check_target_args(node, group, source=cfg.get(group), sweeps=sweeps)
    check_trainer(plain)
    check_callbacks(plain)
    validate = plain.task.get("validate") if plain.get("task") is not None else None
    if validate:
        return import_object(validate)(plain)
    return None


def check_checkpoint_options(cfg: DictConfig) -> None:
    """The other checkpoint options (``source_ckpt``: the model a task starts from) must load
    safely now, not after the run has built its data."""
    target = OmegaConf.select(cfg, "model._target_")
    trains = registry.entry_for_dotted(registry.dotted_name(import_object(target))) if target else None
    for key in CHECKPOINT_OPTIONS:
        if cfg.get(key) is None:
            continue
        path = as_text(key, cfg.get(key))
        if trains is not None:
            require_network(path, trains.network, key)
        else:
            resolve_entry(checkpoint_meta(safe_load(path), path), path)


def check_resume_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path`` must load safely and hold the module class this run trains."""
    value = cfg.get("ckpt_path")
    if value is None:
        return
    path = as_text("ckpt_path", value)
    ckpt = safe_load(path)
    entry = resolve_entry(checkpoint_meta(ckpt, path), path)
    target = OmegaConf.select(cfg, "model._target_")
    if target:
        trains = registry.dotted_name(import_object(target))
        if registry.entry_for_dotted(trains) is not entry:
            raise CheckpointError(
                f"ckpt_path={path} holds a {entry.name!r} module (task {entry.task}), but this run "
                f"trains {trains} (task={cfg.task.name}): resuming needs a checkpoint of the same module")


def check_trainer(cfg: DictConfig) -> None:
    """Lightning checks its own options (limits, accelerator, devices, precision) when a Trainer
    is built; build a bare one now (milliseconds, nothing runs) so they fail before the run."""
    node = cfg.get("trainer")
    if not isinstance(node, DictConfig) or node.get("_target_") is None:
        return
    from normapps.platform.context import build

    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its "GPU available" lines belong to the real Trainer
    try:
        build("trainer", node, logger=False, callbacks=[], enable_checkpointing=False,
              enable_progress_bar=False, default_root_dir=None)
    finally:
        quiet.setLevel(level)


def check_callbacks(cfg: DictConfig) -> None:
    for name, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or node.get("_target_") is None:
            continue
        check_target_args(node, f"callbacks.{name}")
        try:
            instantiate(node)  # callbacks are cheap: their own checks (ranges) run now
        except Exception as err:  # noqa: BLE001 - re-raised naming the key
            cause = err.__cause__ or err
            raise OptionError(f"callbacks.{name}: {cause}") from None


# ---------------------------------------------------------------------------------- types
@functools.lru_cache(maxsize=None)
def _target_signature(target: str):
    obj = import_object(target)
    fn = obj.__init__ if isinstance(obj, type) else obj
    try:
        return inspect.signature(fn), typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError):  # builtins, unresolvable hints: nothing to check
        return None, {}


def check_target_args(node: DictConfig, prefix: str, *, source: DictConfig | None = None,
                      sweeps: set[str] = frozenset()) -> None:
    """Check every key of a ``_target_`` config against the target's parameter types, then the
    target's own ``check_args`` (ranges, choices) when it has one. ``source``: the same node
    before interpolations were resolved, to name where a bad value came from. ``sweeps``: keys
    (``model.norm``) the task's runner expands from a list into one model per value; each value
    of such a list is checked."""
    signature, hints = _target_signature(node._target_)
    if signature is None:
        return
    args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
            if k not in _HYDRA_KEYS and k in signature.parameters}
    variants = [args]
    for key, value in args.items():
        if key not in hints:
            continue
        name = f"{prefix}.{key}"
        origin = _interpolation(source, key) if isinstance(source, DictConfig) else ""
        swept = name in sweeps and isinstance(value, list)
        if swept and not value:
            raise OptionError(f"{name}=[]{origin}: expected {describe(hints[key])} or a list of them")
        for one in (value if swept else [value]):
            if not matches(one, hints[key]):
                raise OptionError(f"{name}={value!r}{origin}: expected {describe(hints[key])}"
                                  + (" or a list of them" if name in sweeps else ""))
            _check_range(name, key, one, origin)
        if swept:
            variants = [{**v, key: one} for v in variants for one in value]
    check_args = getattr(import_object(node._target_), "check_args", None)
    if callable(check_args):
        for variant in variants:
            check_args(variant, prefix=prefix)


def _interpolation(node: DictConfig, key: str) -> str:
    child = node._get_node(key) if key in node else None
    if child is not None and child._is_interpolation():
        return f" (from {child._value()})"
    return ""


def _check_range(name: str, key: str, value: Any, source: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if key == "lr" or key.startswith("lr_") or key.endswith("_lr"):
        as_float(f"{name}{source}", value, min=0.0, min_open=True)
    elif key.endswith("batch_size"):
        as_int(f"{name}{source}", value, min=1)
    elif key == "num_workers":
        as_int(f"{name}{source}", value, min=0)
    elif key == "seed" or key.endswith("_seed"):
        as_int(f"{name}{source}", value, min=0, max=2**32 - 1)
    elif "_every_n_" in key and isinstance(value, int):
        as_int(f"{name}{source}", value, min=1)


def _union_args(ann: Any) -> tuple | None:
    origin = typing.get_origin(ann)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(ann)
    return None


def matches(value: Any, ann: Any) -> bool:
    """Whether a config value can be what ``ann`` declares (unknown classes: accepted)."""
    if ann is Any or ann is inspect.Parameter.empty:
        return True
    if ann is type(None) or ann is None:
        return value is None
    members = _union_args(ann)
    if members is not None:
        return any(matches(value, m) for m in members)
    origin = typing.get_origin(ann)
    if origin is Literal:
        return any(value == lit and type(value) is type(lit) for lit in typing.get_args(ann))
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ann is str:
        return isinstance(value, str) and value.strip() != ""
    if ann is Path:
        return isinstance(value, (str, Path)) and str(value).strip() != ""
    base = origin or ann
    if base in (list, tuple, Sequence, set) or (isinstance(base, type) and issubclass(base, (list, tuple))):
        return isinstance(value, (list, tuple))
    if base in (dict, Mapping) or (isinstance(base, type) and issubclass(base, dict)):
        return isinstance(value, dict)
    return True


def describe(ann: Any) -> str:
    members = _union_args(ann)
    if members is not None:
        return " or ".join(dict.fromkeys(describe(m) for m in members))
    if typing.get_origin(ann) is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(ann))
    names = {bool: "true or false", int: "an integer", float: "a finite number",
             str: "a non-empty string", type(None): "null", Path: "a path"}
    if ann in names:
        return names[ann]
    base = typing.get_origin(ann) or ann
    if base in (list, tuple, Sequence):
        return "a list"
    if base in (dict, Mapping):
        return "a mapping"
    return getattr(ann, "__name__", str(ann))
