"""``python train.py task=domain_adaptation``: train the source classifier, then evaluate every
adaptation method on every target and write the results table.

Flow: validate the methods, their options and the targets (and load usps/mnist targets) before
any training; fit the classification task's module on the source data (or load
``source_ckpt``); test it on the clean source test split; then, for each target, run each method
on a fresh copy of the source network and record its target error. ``da_results.csv`` /
``da_results.md`` (rows: targets plus their mean; columns: methods) go to the run directory and
to W&B as a table; ``summary.json`` has ``target_error`` (the mean per method) and
``metrics["target/<method>/error"]``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from normapps.data.shifts import SYNTHETIC_SHIFTS, apply_shift
from normapps.norm import bn_modules
from normapps.platform.checkpoint import load_module
from normapps.platform.context import RunContext
from normapps.platform.runner import checkpoint_paths, logged_metrics
from normapps.platform.summary import markdown_table, write_table
from normapps.tasks.domain_adaptation.common import error_rate, predict_logits
from normapps.tasks.domain_adaptation.methods import (
    adapt_and_predict, method_options, resolve_methods, validate_options,
)
from normapps.tasks.domain_adaptation.targets import (
    build_targets, dataset_tensors, load_dataset_shifts, parse_target_spec,
)

log = logging.getLogger(__name__)

TABLE_NAME = "da_results"


def source_data_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg.data`` without the ``target`` block (the classification datamodule's config)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("target", None)
    return OmegaConf.create(data)


def resolve_extra_sources(spec) -> list[str]:
    names = list(spec or [])
    bad = [n for n in names if n not in SYNTHETIC_SHIFTS]
    if bad:
        raise ValueError(f"adapt.extra_sources takes synthetic shifts ({', '.join(SYNTHETIC_SHIFTS)}), got {bad}")
    return names


def pick_device(cfg: DictConfig) -> torch.device:
    accel = str(cfg.trainer.get("accelerator", "cpu"))
    return torch.device("cuda" if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")


def train_source(cfg: DictConfig, ctx: RunContext, datamodule) -> tuple[Any, dict, dict]:
    """The source classifier: fit + test (best checkpoint), or load ``source_ckpt``."""
    if cfg.get("source_ckpt"):
        module = load_module(cfg.source_ckpt, expected_task="classification")
        datamodule.setup("test")
        return module, {}, {"best_checkpoint": str(cfg.source_ckpt), "last_checkpoint": None}
    module = ctx.build_module()
    trainer = ctx.build_trainer()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = logged_metrics(trainer)
    paths = checkpoint_paths(trainer)
    # trainer.test with ckpt_path="best" also loads the best weights into ``module``.
    for res in trainer.test(module, datamodule=datamodule,
                            ckpt_path="best" if paths["best_checkpoint"] else None):
        metrics.update(res)
    return module, metrics, paths


def log_results(ctx: RunContext, rows: list[dict], means: dict[str, float]) -> None:
    for lg in ctx.loggers:
        lg.log_metrics({f"target/{m}/error": v for m, v in means.items()})
        if type(lg).__name__ == "WandbLogger":
            import wandb

            columns = list(rows[0])
            lg.experiment.log({TABLE_NAME: wandb.Table(
                columns=columns, data=[[r.get(c, "") for c in columns] for r in rows])})
        if hasattr(lg, "save"):
            lg.save()


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    # --- validate everything cheap first --------------------------------------------------
    adapt_cfg = OmegaConf.to_container(cfg.adapt, resolve=True)
    methods = resolve_methods(adapt_cfg.get("method", "all"))
    validate_options(methods, adapt_cfg)
    extra_sources = resolve_extra_sources(adapt_cfg.get("extra_sources"))
    norm = cfg.model.get("norm", "batch")
    if "dsbn" in methods and not cfg.get("source_ckpt") and norm != "batch":
        raise ValueError(f"adapt=dsbn needs model.norm=batch (DSBN splits BatchNorm layers), got {norm!r}")
    spec = parse_target_spec(OmegaConf.to_container(cfg.data.target, resolve=True))
    batch_size = int(cfg.data.target.get("batch_size", 128))
    if batch_size < 1:
        raise ValueError(f"data.target.batch_size must be >= 1, got {batch_size}")
    data_cfg = source_data_cfg(cfg)
    loaded = load_dataset_shifts(spec, root=data_cfg.root, download=data_cfg.download,
                                 image_size=data_cfg.image_size, channels=data_cfg.channels)
    device = pick_device(cfg)

    # --- source model ---------------------------------------------------------------------
    datamodule = ctx.build_datamodule(data_cfg)
    module, metrics, paths = train_source(cfg, ctx, datamodule)
    net = module.net.eval().to(device)
    if not bn_modules(net) and {"test_bn", "adabn"} & set(methods):
        log.warning("the source model has no BatchNorm layer: test_bn and adabn equal none")
    x_test, y_test = dataset_tensors(datamodule.test_set)
    clean_error = error_rate(predict_logits(net, x_test, batch_size=batch_size, device=device), y_test)
    metrics["source/test/error"] = clean_error
    log.info("source model: clean test error %.4f", clean_error)

    sources = None
    if "dsbn" in methods:
        x_train, y_train = dataset_tensors(datamodule.train_set)
        sources = [(x_train, y_train)] + [
            (apply_shift(x_train, s, seed=spec.seed + 1, rotate_degrees=spec.rotate_degrees,
                         scale_factor=spec.scale_factor), y_train) for s in extra_sources]

    # --- every method on every target ------------------------------------------------------
    targets = build_targets(spec, x_test, y_test, loaded=loaded)
    rows, seconds = [], {m: 0.0 for m in methods}
    for target in targets:
        row = target.row()
        for name in methods:
            start = time.perf_counter()
            logits = adapt_and_predict(name, net, target.images, batch_size=batch_size,
                                       options=method_options(name, adapt_cfg), sources=sources,
                                       seed=int(cfg.seed), device=device)
            seconds[name] += time.perf_counter() - start
            row[name] = error_rate(logits, target.labels)
        log.info("%s: %s", target.name, ", ".join(f"{m} {row[m]:.4f}" for m in methods))
        rows.append(row)
    means = {m: sum(r[m] for r in rows) / len(rows) for m in methods}
    table = rows + [{"target": "mean", **means}]
    csv_path, md_path = write_table(ctx.output_dir, TABLE_NAME, table)
    log.info("target error (rows: targets, columns: methods)\n%s", markdown_table(table))
    log_results(ctx, table, means)
    metrics.update({f"target/{m}/error": v for m, v in means.items()})
    return {
        "metrics": metrics,
        **paths,
        "target_error": means,
        "source_clean_error": clean_error,
        "targets": [t.name for t in targets],
        "adapt_seconds": seconds,
        "results_table": {"csv": str(csv_path), "markdown": str(md_path)},
    }
