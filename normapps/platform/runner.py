"""train.py's engine: seed, build, fit, test, summarize; tasks plug in through ``task.runner``."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from normapps.platform.callbacks import LastCheckpoint, TrainingInterrupted, model_checkpoint
from normapps.platform.checkpoint import import_object
from normapps.platform.config_keys import migrate_deprecated_keys
from normapps.platform.context import RunContext
from normapps.platform.logging import finish_loggers
from normapps.platform.preflight import preflight
from normapps.platform.summary import metrics_to_floats, write_summary

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "normapps.platform.runner.fit_and_test"


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured task and write ``summary.json`` into the run directory.

    Deprecated key names are moved to their new names first (with a warning), so the checks,
    the runner and the run's ``config.yaml`` see only the new names.

    The summary is written before the loggers are finished, and a logger failing there only
    warns. A run stopped by SIGTERM/SIGINT (after writing last.ckpt) exits with 128 + the
    signal number and says how to resume; it writes no summary, since it has no final result.
    """
    migrate_deprecated_keys(cfg)
    options = preflight(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    ctx = RunContext.create(cfg, options=options)
    (ctx.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    # config.yaml is the run's record: from here on nothing may change the config (a runner
    # derives what it needs, e.g. the GAN's trainer budget, into its own arguments).
    OmegaConf.set_readonly(cfg, True)
    runner = import_object(cfg.task.get("runner") or DEFAULT_RUNNER)
    try:
        result = runner(cfg, ctx)
    except TrainingInterrupted as stop:
        finish_loggers(ctx.loggers, success=False)
        _report_interruption(ctx, stop.signum, stop.checkpoint, stop.step)
        raise SystemExit(128 + stop.signum) from None
    except SIGTERMException:  # a SIGTERM outside fit (test, final validation): nothing to save
        finish_loggers(ctx.loggers, success=False)
        log.warning("stopped by SIGTERM outside training; no summary.json written")
        raise SystemExit(128 + int(signal.SIGTERM)) from None
    except BaseException:
        finish_loggers(ctx.loggers, success=False)
        raise
    summary = {
        "task": cfg.task.name,
        "metrics": metrics_to_floats(result.pop("metrics", {})),
        "best_checkpoint": result.pop("best_checkpoint", None),
        "last_checkpoint": result.pop("last_checkpoint", None),
        **result,
    }
    if rank_zero_only.rank == 0:
        path = write_summary(ctx.output_dir, summary)
        log.info("summary written to %s", path)
        # The last line of every run: where its outputs are, whatever the task wrote there.
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in ctx.output_dir.iterdir()
                         if not p.name.startswith("."))
        log.info("outputs of this run in %s: %s", ctx.output_dir, ", ".join(entries))
    finish_loggers(ctx.loggers)
    return summary


def _report_interruption(ctx: RunContext, signum: int, checkpoint: str, step: int) -> None:
    if rank_zero_only.rank != 0:
        return
    overrides = [o for o in _task_overrides() if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    command = " ".join(["python train.py", *overrides, f"hydra.run.dir={ctx.output_dir}",
                        f"ckpt_path={checkpoint}"])
    message = (f"{signal.Signals(signum).name}: training stopped at step {step} after writing "
               f"{checkpoint}. Resume exactly from there with:\n  {command}")
    log.warning(message)
    print(message, file=sys.stderr, flush=True)


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not under Hydra (a test calling run_train)
        return []


def checkpoint_paths(trainer: pl.Trainer) -> dict[str, str | None]:
    cb = model_checkpoint(trainer)
    best = getattr(cb, "best_model_path", "") or None
    last = getattr(cb, "last_model_path", "") or None
    if last is None and getattr(cb, "dirpath", None):
        # ddp_spawn hands only best_model_path back to the main process; last.ckpt is on disk.
        candidate = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        last = str(candidate) if candidate.is_file() else None
    if last is None:  # no ModelCheckpoint (callbacks.model_checkpoint=null): the timed one's
        timed = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        last = (timed.last_model_path or None) if timed is not None else None
    return {"best_checkpoint": best, "last_checkpoint": last}


def logged_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """Slash-named metrics the trainer holds now (train/..., val/..., test/...)."""
    return {k: v for k, v in trainer.callback_metrics.items() if "/" in k}


AFTER_FIT = ("test", "best", "none")


def load_or_fit(cfg: DictConfig, ctx: RunContext, datamodule, *, network: str,
                model_cfg: DictConfig | None = None, stage: str | None = None,
                after_fit: str = "test") -> tuple[Any, dict[str, Any], dict[str, str | None]]:
    """The model a multi-stage task starts from: ``source_ckpt`` (any checkpoint holding
    ``network``, whichever task wrote it) or a fit now, as ``(module, metrics, paths)``.

    After a fit, ``after_fit="test"`` tests the best checkpoint (its weights are then in the
    module), ``"best"`` reloads the best checkpoint without testing, ``"none"`` keeps the last
    weights. A loaded source has no metrics and ``best_checkpoint`` is the source file.
    """
    from normapps.platform.checkpoint import load_module

    if after_fit not in AFTER_FIT:
        raise ValueError(f"after_fit must be one of {AFTER_FIT}, got {after_fit!r}")
    if cfg.get("source_ckpt"):
        module = load_module(cfg.source_ckpt, expected_network=network)
        return module, {}, {"best_checkpoint": str(cfg.source_ckpt), "last_checkpoint": None}
    module = ctx.build_module(model_cfg)
    trainer = ctx.build_trainer(stage=stage)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = logged_metrics(trainer)
    paths = checkpoint_paths(trainer)
    if after_fit == "test":
        # trainer.test with ckpt_path="best" also loads the best weights into ``module``.
        for res in trainer.test(module, datamodule=datamodule,
                                ckpt_path="best" if paths["best_checkpoint"] else None):
            metrics.update(res)
    elif after_fit == "best" and paths["best_checkpoint"]:
        module = load_module(paths["best_checkpoint"], expected_network=network)
    return module, metrics, paths


def fit_and_test(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """The standard flow: fit (resuming from ``ckpt_path``), then test the best checkpoint."""
    datamodule = ctx.build_datamodule()
    module = ctx.build_module()
    trainer = ctx.build_trainer()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = logged_metrics(trainer)
    paths = checkpoint_paths(trainer)
    if cfg.get("test", True):
        use_best = cfg.get("test_ckpt", "best") == "best" and paths["best_checkpoint"]
        results = trainer.test(module, datamodule=datamodule, ckpt_path="best" if use_best else None)
        for res in results:
            metrics.update(res)
    return {"metrics": metrics, **paths}
