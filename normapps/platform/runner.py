"""train.py's engine: seed, build, fit, test, summarize; tasks plug in through ``task.runner``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from normapps.platform.checkpoint import import_object, safe_load
from normapps.platform.context import RunContext
from normapps.platform.logging import finish_loggers
from normapps.platform.summary import metrics_to_floats, write_summary

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "normapps.platform.runner.fit_and_test"


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured task and write ``summary.json`` into the run directory."""
    if cfg.get("ckpt_path"):
        # Refuse unsafe or missing checkpoints before building anything expensive.
        safe_load(cfg.ckpt_path)
    pl.seed_everything(cfg.seed, workers=True)
    ctx = RunContext.create(cfg)
    (ctx.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    runner = import_object(cfg.task.get("runner") or DEFAULT_RUNNER)
    try:
        result = runner(cfg, ctx)
    finally:
        finish_loggers(ctx.loggers)
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
    return summary


def checkpoint_paths(trainer: pl.Trainer) -> dict[str, str | None]:
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") or None
    last = getattr(cb, "last_model_path", "") or None
    if last is None and getattr(cb, "dirpath", None):
        # ddp_spawn hands only best_model_path back to the main process; last.ckpt is on disk.
        candidate = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        last = str(candidate) if candidate.is_file() else None
    return {"best_checkpoint": best, "last_checkpoint": last}


def logged_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """Slash-named metrics the trainer holds now (train/..., val/..., test/...)."""
    return {k: v for k, v in trainer.callback_metrics.items() if "/" in k}


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
