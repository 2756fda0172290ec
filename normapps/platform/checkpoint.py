"""Checkpoint reading that never runs code: every load goes through ``weights_only=True``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

# Key under which NormappsModule records which class (and task) wrote a checkpoint.
META_KEY = "normapps"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe, or not from this project."""


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a pickle that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError and friends
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-tensor checkpoint readable with "
            f"weights_only=True ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err


def import_object(dotted: str) -> Any:
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"expected a dotted path 'package.module.name', got {dotted!r}")
    return getattr(importlib.import_module(module_name), attr)


def checkpoint_meta(ckpt: dict[str, Any], path: str | Path = "") -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "module_class" not in meta:
        raise CheckpointError(f"{path or 'checkpoint'} was not written by a normapps task")
    return meta


def load_module(path: str | Path, *, expected_task: str | None = None, map_location="cpu"):
    """Rebuild the LightningModule that wrote ``path`` (safely) and return it in eval mode."""
    ckpt = safe_load(path, map_location=map_location)
    meta = checkpoint_meta(ckpt, path)
    if expected_task is not None and meta.get("task") not in (None, expected_task):
        raise CheckpointError(
            f"{path} is a checkpoint of task {meta.get('task')!r}, not {expected_task!r}"
        )
    cls = import_object(meta["module_class"])
    module = cls.from_checkpoint_dict(ckpt)
    return module.eval()
