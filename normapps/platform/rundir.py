"""One run per run directory: a second ``train.py`` into a directory that holds a run is refused.

Hydra writes ``.hydra/`` into the run directory before the task starts, and train.py writes
``config.yaml`` and ``summary.json``; a second run into the same ``hydra.run.dir`` silently
replaced the first run's record while its checkpoints became ``last-v1.ckpt``. The Hydra
callback :class:`RunDirGuard` (``hydra.callbacks.run_dir_guard`` in conf/train.yaml) checks
before Hydra writes anything. The one exception is resuming: ``ckpt_path`` pointing inside that
directory continues the run there (Lightning then keeps writing ``last.ckpt``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

RUN_MARKERS = ("config.yaml", "summary.json", ".hydra/config.yaml")


class RunDirError(ValueError):
    """The run directory already holds a run."""


class RunDirRefused(SystemExit):
    """Exits train.py with the refusal (status 1, message on stderr). Hydra turns exceptions
    raised in its callbacks into warnings and carries on, so the guard has to exit instead."""


def run_record(run_dir: Path) -> list[str]:
    """What in ``run_dir`` shows a run was there (empty list: nothing)."""
    found = [m for m in RUN_MARKERS if (run_dir / m).is_file()]
    if any((run_dir / "checkpoints").rglob("*.ckpt")):
        found.append("checkpoints/")
    return found


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_run_dir(run_dir: str | Path, ckpt_path: Any = None) -> None:
    run_dir = Path(run_dir)
    found = run_record(run_dir)
    if not found:
        return
    if ckpt_path and _inside(Path(str(ckpt_path)), run_dir):
        return  # resuming this run, in its own directory
    lasts = sorted((run_dir / "checkpoints").rglob("last.ckpt"))
    resume = (f"continue that run with ckpt_path={lasts[0]}" if lasts
              else "continue that run with ckpt_path=<a checkpoint in it>")
    raise RunDirError(
        f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); a second run there would "
        f"replace its config and summary. Pick a new hydra.run.dir, or {resume}")


def _is_child_rank() -> bool:
    """Lightning's DDP launcher re-runs train.py per extra rank with the same run directory."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


class RunDirGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_child_rank():
            return
        run_dir = OmegaConf.select(config, "hydra.run.dir")
        try:
            check_run_dir(run_dir, OmegaConf.select(config, "ckpt_path"))
        except RunDirError as err:
            raise RunDirRefused(f"Error: {err}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if (sweep_dir / "multirun.yaml").is_file():
            raise RunDirRefused(
                "Error: "
                f"hydra.sweep.dir={sweep_dir} already holds a multirun (multirun.yaml); pick a new "
                "hydra.sweep.dir (resume one of its jobs with hydra.run.dir=<job dir> ckpt_path=...)")
