"""train.py's flow for GANs: the trainer's step budget and validation cadence are derived from
generator iterations (``gan.max_g_steps``, ``gan.eval_every_g_steps``), since Lightning's global_step
counts every optimizer step (n_dis + 1 per generator iteration).

A user's explicit ``trainer.max_steps`` / ``trainer.max_epochs`` on the command line is honoured
by deriving the generator budget from it; trainer options that cannot be expressed in
generator iterations (the validation cadence) or that contradict ``gan.max_g_steps`` are refused
before any work, naming the key to use instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from normapps.platform.config_keys import explicit_overrides
from normapps.platform.context import RunContext
from normapps.platform.options import TaskOptions, int_option, text_option
from normapps.platform.runner import checkpoint_paths, logged_metrics

log = logging.getLogger(__name__)

# Trainer keys the runner sets itself from the generator-iteration options.
_CADENCE_KEYS = ("trainer.val_check_interval", "trainer.check_val_every_n_epoch")


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


def g_step_budget(*, max_g_steps: int, n_dis: int, explicit: Mapping[str, Any],
                  batches_per_epoch: Callable[[], int] | None) -> dict[str, Any]:
    """The generator iterations to run and where that number comes from.

    ``trainer.max_steps=N`` -> N // (n_dis + 1) G steps; ``trainer.max_epochs=E`` -> the G steps
    that E epochs of D batches give; otherwise ``max_g_steps``. A trainer budget together with
    a different explicit ``max_g_steps`` is refused, and so is an explicit validation cadence.
    ``batches_per_epoch=None`` (before the data is read): an epoch budget is not checked yet.
    """
    for key in _CADENCE_KEYS:
        if key in explicit:
            raise ValueError(f"{key}={explicit[key]}: task=gan evaluates every gan.eval_every_g_steps "
                             "generator iterations; set gan.eval_every_g_steps instead")
    per_g = n_dis + 1
    if "trainer.max_steps" in explicit:
        steps = int(explicit["trainer.max_steps"])
        derived, source = steps // per_g, f"trainer.max_steps={steps}"
        if steps < per_g:
            raise ValueError(f"{source} is less than one generator iteration (n_dis + 1 = {per_g} "
                             "optimizer steps); set gan.max_g_steps (generator iterations) instead")
    elif "trainer.max_epochs" in explicit and int(explicit["trainer.max_epochs"]) >= 0:
        epochs = int(explicit["trainer.max_epochs"])
        if batches_per_epoch is None:
            return {"max_g_steps": None, "from": f"trainer.max_epochs={epochs}"}
        derived, source = epochs * batches_per_epoch() // n_dis, f"trainer.max_epochs={epochs}"
        if derived < 1:
            raise ValueError(f"{source} is less than one generator iteration; set gan.max_g_steps "
                             "(generator iterations) instead")
    else:
        return {"max_g_steps": int(max_g_steps), "from": "max_g_steps"}
    given = explicit.get("gan.max_g_steps")
    if given is not None and int(given) != derived:
        raise ValueError(f"{source} means {derived} generator iterations at n_dis={n_dis}, but "
                         f"gan.max_g_steps={given} was also given: set only gan.max_g_steps")
    return {"max_g_steps": derived, "from": source}


@dataclass(frozen=True)
class GanOptions(TaskOptions):
    """The run-level GAN options (``gan.*`` besides the module's own), checked together."""
    max_g_steps: int
    n_dis: int
    eval_every_g_steps: int
    # Overrides the user typed (new names), for the trainer budget and cadence rules.
    explicit: Mapping[str, Any]


def validate(cfg: DictConfig) -> GanOptions:
    """train.py's preflight hook (``task.validate``): the run-level GAN options (the model's and
    data's keys, gan.* included, are checked by GANModule.check_args / GANDataModule.check_args),
    and trainer budgets or cadences that cannot be honoured, before any work."""
    n_dis = int_option(cfg, "gan.n_dis", min=1)
    max_g_steps = int_option(cfg, "gan.max_g_steps", min=1)
    eval_every = int_option(cfg, "gan.eval_every_g_steps", min=1)
    metrics = OmegaConf.select(cfg, "gan.metrics") or {}
    if "num_samples" in metrics:
        int_option(cfg, "gan.metrics.num_samples", min=2)
    if "local_steps" in metrics:
        int_option(cfg, "gan.metrics.local_steps", min=1)
    for key in ("gan.metrics.inception_weights", "gan.metrics.local_cache", "gan.fid_stats_cache"):
        if OmegaConf.select(cfg, key, default=None) is not None:
            text_option(cfg, key)
    explicit = explicit_overrides()
    g_step_budget(max_g_steps=max_g_steps, n_dis=n_dis, explicit=explicit, batches_per_epoch=None)
    return GanOptions(max_g_steps=max_g_steps, n_dis=n_dis, eval_every_g_steps=eval_every,
                      explicit=dict(explicit))


def run_gan(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    # Checked once in train.py's preflight (cadence and contradictions refused before the data is
    # read); a runner called without it checks now.
    opts = ctx.task_options(validate, GanOptions)
    explicit = opts.explicit
    # The module's own n_dis / max_g_steps (model.* follow gan.* unless set themselves).
    n_dis = int(cfg.model.n_dis)
    datamodule = ctx.build_datamodule()
    datamodule.setup("fit")  # folder datasets learn their class count here
    budget = g_step_budget(max_g_steps=int(cfg.model.max_g_steps), n_dis=n_dis, explicit=explicit,
                           batches_per_epoch=lambda: len(datamodule.train_dataloader()))
    if budget["from"] != "max_g_steps":
        log.info("%s: %d generator iterations (n_dis=%d)", budget["from"], budget["max_g_steps"], n_dis)
    module = ctx.build_module(num_classes=datamodule.num_classes, max_g_steps=budget["max_g_steps"])
    hp = module.hparams
    overrides = trainer_overrides(max_g_steps=hp.max_g_steps, n_dis=hp.n_dis,
                                  eval_every_g_steps=opts.eval_every_g_steps)
    if "trainer.max_epochs" in explicit:
        overrides["max_epochs"] = int(explicit["trainer.max_epochs"])
    if "trainer.num_sanity_val_steps" in explicit:
        overrides.pop("num_sanity_val_steps")
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
    outputs = {"run_dir": str(ctx.output_dir), "checkpoints": str(ctx.output_dir / "checkpoints"),
               "sample_grids": str(ctx.output_dir / "images")}
    log.info("GAN run done: %d generator steps; outputs in %s (checkpoints/, images/ sample grids, "
             "summary.json); sample with: python infer.py task=gan ckpt_path=%s output_dir=<dir>",
             int(module.g_steps), ctx.output_dir, paths.get("last_checkpoint"))
    return {"metrics": metrics, **paths, "g_steps": int(module.g_steps),
            "global_step": int(trainer.global_step), "g_step_budget": budget,
            # fid_local values compare only between runs whose feature networks share this hash.
            "fid_feature_net": module.feature_net_info, "fid_reference": module.fid_reference,
            "outputs": outputs}
