"""infer.py's engine: validate the common options, pick the device, hand over to the task."""
from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from normapps.platform.checkpoint import import_object
from normapps.platform.config_keys import migrate_deprecated_keys
from normapps.platform.options import OptionError, as_bool, as_float, as_int, as_text, seed_option
from normapps.platform.summary import write_summary

INFERENCE_FILE = "inference.json"
# Each task's inference options (infer.py composes conf/infer.yaml + conf/task/infer/<task>.yaml).
INFER_TASK_DIR = Path(__file__).resolve().parents[2] / "conf" / "task" / "infer"

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not name.strip():
        raise OptionError(f"device={name!r}: expected auto, cpu, cuda or cuda:<index>")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise OptionError(f"device={name!r}: expected auto, cpu, cuda or cuda:<index> ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device={name} was asked for, but no CUDA device is available")
    return device


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_output_dir(value: Any) -> Path:
    """Create ``output_dir`` and prove it is writable, before any weights load."""
    text = as_text("output_dir", value)
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise OptionError(f"output_dir={text}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise OptionError(f"output_dir={text}: cannot write there ({err.strerror or err})") from None
    return path


def run_infer(cfg: DictConfig) -> dict[str, Any]:
    """Check the common options (output_dir, device, seed), then call the task's runner as
    ``runner(cfg, device, output_dir) -> dict``; the returned dict is written to
    ``<output_dir>/inference.json``, and no other file in ``output_dir`` is touched."""
    migrate_deprecated_keys(cfg)
    check_declared_types(cfg, declared_options(cfg.task.name))
    output_dir = prepare_output_dir(cfg.get("output_dir"))
    device = resolve_device(cfg.get("device"))
    seed = seed_option(cfg)
    seed_all(seed)
    runner = import_object(cfg.task.runner)
    result = runner(cfg, device=device, output_dir=output_dir) or {}
    result = {"task": cfg.task.name, **result}
    write_summary(output_dir, result, name=INFERENCE_FILE)
    return result


def declared_options(task: str) -> dict[str, Any]:
    """The options ``conf/task/infer/<task>.yaml`` declares, with their defaults."""
    path = INFER_TASK_DIR / f"{task}.yaml"
    if not path.is_file():
        return {}
    declared = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in declared.items() if k not in ("task", "defaults")}


def check_declared_types(cfg: DictConfig, declared: dict[str, Any], prefix: str = "") -> None:
    """An option declared with a number, boolean or text default takes only that type (NaN and
    infinities are no numbers, an empty value no text); options declared null or ``???`` take
    several types and are checked by their task. Ranges are the task's to check."""
    for key, default in declared.items():
        name = f"{prefix}{key}"
        if isinstance(default, dict):
            check_declared_types(cfg, default, f"{name}.")
            continue
        if default is None or default == "???":
            continue
        value = OmegaConf.select(cfg, name)
        if isinstance(default, bool):
            as_bool(name, value)
        elif isinstance(default, int):
            as_int(name, value)
        elif isinstance(default, float):
            as_float(name, value)
        elif isinstance(default, str):
            as_text(name, value)


def require_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """Refuse a non-finite model output (a NaN image saves as black, a NaN score as a class)."""
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ValueError(f"{what}: the model produced {bad} NaN/inf value(s) of {tensor.numel()}; "
                         "nothing was written (a corrupted or diverged model, or an overflow in "
                         "reduced precision)")
    return tensor
