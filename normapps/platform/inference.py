"""infer.py's engine: validate the common options, pick the device, hand over to the task."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from normapps.platform.checkpoint import import_object
from normapps.platform.summary import write_summary

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for, but no CUDA device is available")
    return torch.device(name)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_infer(cfg: DictConfig) -> dict[str, Any]:
    """Call the task's ``infer`` runner as ``runner(cfg, device, output_dir) -> dict``; the
    returned dict is written to ``<output_dir>/inference.json``."""
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device"))
    seed_all(int(cfg.get("seed", 0)))
    runner = import_object(cfg.task.runner)
    result = runner(cfg, device=device, output_dir=output_dir) or {}
    result = {"task": cfg.task.name, **result}
    path = write_summary(output_dir, result)
    path.rename(output_dir / "inference.json")
    return result
