"""train.py's flow for GANs: the trainer's step budget and validation cadence are derived from
generator iterations (``max_g_steps``, ``eval_every_g_steps``), since Lightning's global_step
counts every optimizer step (n_dis + 1 per generator iteration)."""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, open_dict

from normapps.platform.context import RunContext
from normapps.platform.runner import checkpoint_paths, logged_metrics

log = logging.getLogger(__name__)


def trainer_overrides(*, max_g_steps: int, n_dis: int, eval_every_g_steps: int) -> dict[str, Any]:
    if eval_every_g_steps < 1:
        raise ValueError(f"eval_every_g_steps must be >= 1, got {eval_every_g_steps}")
    return {
        # One training batch = one D step; a G step follows every n_dis of them.
        "max_steps": max_g_steps * (n_dis + 1),
        "max_epochs": -1,
        "val_check_interval": min(eval_every_g_steps, max_g_steps) * n_dis,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
    }


def run_gan(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    datamodule = ctx.build_datamodule()
    datamodule.setup("fit")  # folder datasets learn their class count here
    if cfg.model.get("inception_weights"):
        with open_dict(cfg):
            cfg.task.monitor = "val/fid"
    module = ctx.build_module(num_classes=datamodule.num_classes)
    hp = module.hparams
    overrides = trainer_overrides(max_g_steps=hp.max_g_steps, n_dis=hp.n_dis,
                                  eval_every_g_steps=cfg.eval_every_g_steps)
    if cfg.trainer.get("strategy") == "ddp":
        # The D step runs G without grad (and the G step leaves D frozen): DDP must allow
        # parameters that get no gradient in a backward pass.
        overrides["strategy"] = "ddp_find_unused_parameters_true"
    trainer = ctx.build_trainer(**overrides)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    paths = checkpoint_paths(trainer)
    # Final scores of the generator as trained (EMA by default), whatever the last cadence was.
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = logged_metrics(trainer)
    for res in results:
        metrics.update(res)
    metrics["train/g_steps_done"] = int(module.g_steps)
    return {"metrics": metrics, **paths, "g_steps": int(module.g_steps),
            "global_step": int(trainer.global_step)}
