"""Checkpoint reading that never runs code, and writing that never leaves a partial file.

Every load goes through ``weights_only=True``; the class a checkpoint is rebuilt with comes from
the fixed table in :mod:`normapps.platform.registry`, never from a name the file supplies; the
weights must be finite. Every save writes a temporary file next to its target and renames it.
"""
from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch

from normapps.platform import registry

# Key under which NormappsModule records which module (and task) wrote a checkpoint.
META_KEY = "normapps"
# Temporary files of an unfinished save: ``.<target name>.partial-<pid>``, next to the target.
PARTIAL_MARKER = ".partial-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe, or not from this project."""


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint or weights file with ``weights_only=True``.

    Refused with a :class:`CheckpointError` naming the file: a missing path, a directory, an
    empty or truncated file, a pickle that would run code, and weights that are not finite.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a save that never finished, or a "
                              "file truncated in copying")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch wraps the unpickler's own error in boilerplate; the wrapped one says what it is.
        inner = err.__context__ if err.__context__ is not None else err
        if "global" in str(inner).lower():  # a class or function the file wants to call
            raise CheckpointError(
                f"refusing to load {path}: it is not a plain-tensor checkpoint readable with "
                f"weights_only=True ({_first_line(inner)})") from err
        raise CheckpointError(f"{path} is truncated or corrupted: not a readable PyTorch file "
                              f"({_first_line(inner)})") from err
    except Exception as err:  # zip reader errors, EOFError, ... on damaged files
        raise CheckpointError(f"{path} is truncated or corrupted: not a readable PyTorch file "
                              f"({_first_line(err)})") from err
    check_finite_weights(obj, path)
    return obj


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{i}")


def weight_tensors(obj: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights in a loaded file: a Lightning checkpoint's ``state_dict`` (not its loop state,
    which legitimately holds infinities), else every tensor of a plain state dict."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return _tensors(obj["state_dict"], "state_dict")
    return _tensors(obj, "")


def check_finite_weights(obj: Any, path: str | Path) -> None:
    """Refuse NaN/inf weights (bit rot, a bad copy, a diverged run), naming the tensor."""
    for name, tensor in weight_tensors(obj):
        values = tensor.dequantize() if tensor.is_quantized else tensor
        if not (values.is_floating_point() or values.is_complex()):
            continue
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise CheckpointError(
                f"{path}: tensor {name!r} holds {bad} NaN/inf value(s) of {values.numel()}: the file "
                "is corrupted (or was saved from a diverged run); refusing to use it")


def import_object(dotted: str) -> Any:
    """Import a dotted name written in this project's configs (``task.runner``), never one read
    from a checkpoint: those resolve through :mod:`normapps.platform.registry`."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"expected a dotted path 'package.module.name', got {dotted!r}")
    return getattr(importlib.import_module(module_name), attr)


def checkpoint_meta(ckpt: Any, path: str | Path = "") -> dict[str, Any]:
    """The project's metadata of a loaded checkpoint; refused unless it names a known task."""
    where = str(path) or "checkpoint"
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} was not written by a normapps task (no '{META_KEY}' entry)")
    task = meta.get("task")
    if not task:
        raise CheckpointError(f"{where} names no task: not a checkpoint written by a normapps task")
    if task not in registry.TASKS:
        raise CheckpointError(f"{where} names an unknown task {task!r} (checkpoints of this project "
                              f"come from: {', '.join(registry.TASKS)})")
    return meta


def resolve_entry(meta: dict[str, Any], path: str | Path = "") -> registry.ModuleEntry:
    """The registry entry a checkpoint's metadata names; the file's strings are only compared
    with the registry's, never imported."""
    where = str(path) or "checkpoint"
    task = meta["task"]
    if meta.get("module") is not None:
        entry = registry.MODULES.get(str(meta["module"]))
        if entry is None:
            raise CheckpointError(f"{where} names an unknown module {meta['module']!r} (known: "
                                  f"{', '.join(registry.MODULES)})")
    elif meta.get("module_class") is not None:  # checkpoints written before the registry
        entry = registry.entry_for_dotted(str(meta["module_class"]))
        if entry is None:
            raise CheckpointError(
                f"{where} names module class {meta['module_class']!r}, which is not one of this "
                "project's module classes (normapps.platform.registry); refusing to import it")
    else:
        entry = registry.MODULES[registry.TASK_DEFAULTS[task]]
    if entry.task != task:
        raise CheckpointError(f"{where} claims task {task!r}, but task {task!r} does not write "
                              f"{entry.name!r} modules (task {entry.task!r} does)")
    return entry


def require_network(path: str | Path, network: str, option: str) -> registry.ModuleEntry:
    """The registry entry of the checkpoint at ``path`` (loaded safely, not rebuilt), refused
    with a message naming ``option`` unless it holds a ``network`` (whichever task wrote it)."""
    entry = resolve_entry(checkpoint_meta(safe_load(path), path), path)
    if entry.network != network:
        raise CheckpointError(f"{option}={path} holds a {entry.network!r} network (task {entry.task}), "
                              f"but this run needs a {network!r}")
    return entry


def load_module(path: str | Path, *, expected_task: str | None = None,
                expected_network: str | None = None, map_location="cpu"):
    """Rebuild the LightningModule that wrote ``path`` (safely) and return it in eval mode.

    ``expected_network`` (e.g. ``"classifier"``) accepts any checkpoint holding that network,
    whichever task wrote it (a slimming checkpoint is a classifier too); ``expected_task`` insists
    on the task. ``module.checkpoint_info`` then holds what the checkpoint recorded (task,
    module, network, and ``data``: the image size and channels it was trained on, when known).
    """
    ckpt = safe_load(path, map_location=map_location)
    meta = checkpoint_meta(ckpt, path)
    entry = resolve_entry(meta, path)
    if expected_task is not None and entry.task != expected_task:
        raise CheckpointError(f"{path} is a checkpoint of task {entry.task!r}, not {expected_task!r}")
    if expected_network is not None and entry.network != expected_network:
        raise CheckpointError(f"{path} holds a {entry.network!r} network (written by task "
                              f"{entry.task!r}), not a {expected_network!r}")
    try:
        module = entry.load().from_checkpoint_dict(ckpt)
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its {entry.name!r} module "
                              f"({_first_line(err)})") from err
    module.checkpoint_info = {k: v for k, v in meta.items() if k != "rng"}
    return module.eval()


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_MARKER}{os.getpid()}")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` into a temporary file next to ``path``, then rename it over ``path``: a
    reader never sees half a file, and a failed save leaves the previous file and no temporary."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete temporaries that a killed save left in ``folder`` (any process but this one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    mine = f"{PARTIAL_MARKER}{os.getpid()}"
    stale = [p for p in folder.glob(f".*{PARTIAL_MARKER}*") if not p.name.endswith(mine)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_module_checkpoint(module, path: str | Path) -> Path:
    """A checkpoint of ``module`` alone, in the format Lightning writes (loads weights_only)."""
    import pytorch_lightning as pl

    path = Path(path)
    ckpt: dict[str, Any] = {"state_dict": module.state_dict(),
                            "hyper_parameters": dict(module.hparams),
                            "pytorch-lightning_version": pl.__version__}
    module.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(ckpt, path)
