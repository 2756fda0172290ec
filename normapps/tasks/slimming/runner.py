"""``python train.py task=slimming``: trained -> sparsified -> pruned -> fine-tuned, with a table.

Each training stage gets its own Trainer (``ctx.build_trainer(stage=...)``, checkpoints under
``checkpoints/<stage>/``). The pruned network is a smaller dense model; its checkpoints record
the BN widths, so ``python infer.py task=slimming ckpt_path=...`` rebuilds it without the
original.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from normapps.norm import recalibrate_bn
from normapps.platform.checkpoint import safe_load, save_module_checkpoint
from normapps.platform.context import RunContext
from normapps.platform.options import OptionError, TaskOptions, as_bool, as_float, as_int
from normapps.platform.runner import checkpoint_paths
from normapps.platform.summary import markdown_table, publish_table
from normapps.tasks.slimming.module import SlimmingModule
from normapps.tasks.slimming.plot import save_stage_figure
from normapps.tasks.slimming.prune import apply_plan, make_plan, masked_copy, prunable_bns
from normapps.tasks.slimming.report import deployment_latency, evaluate_accuracy, model_cost
from normapps.tasks.slimming.sparsity import BNSparsity

log = logging.getLogger(__name__)

STAGES = ("trained", "sparsified", "pruned", "finetuned")


@dataclass(frozen=True)
class StageEpochs(TaskOptions):
    trained: int
    sparsified: int
    finetuned: int


@dataclass(frozen=True)
class SlimmingOptions(TaskOptions):
    """Every ``slimming.*`` option, checked together before any work (field names are the
    config's)."""
    s: float
    ratio: float
    min_channels: int
    epochs: StageEpochs
    finetune_lr: float | None
    recalibrate_bn: bool
    recalibrate_batches: int | None
    latency_rounds: int
    latency_repeats: int
    latency_threads: int | None
    latency_channels_last: bool | None
    latency_batch_sizes: list[int]


def validate_options(sl: DictConfig) -> SlimmingOptions:
    """Check every slimming.* option before any work; errors name the key."""
    def key(name: str) -> str:
        return f"slimming.{name}"

    epochs = sl.get("epochs") or {}
    opts = {
        "s": as_float(key("s"), sl.get("s"), min=0.0),
        "ratio": as_float(key("ratio"), sl.get("ratio"), min=0.0, max=0.99),
        "min_channels": as_int(key("min_channels"), sl.get("min_channels"), min=1),
        "epochs": StageEpochs(**{k: as_int(key(f"epochs.{k}"), epochs.get(k, 0), min=0)
                                 for k in ("trained", "sparsified", "finetuned")}),
        "finetune_lr": as_float(key("finetune_lr"), sl.get("finetune_lr"), min=0.0, min_open=True,
                                allow_none=True),
        "recalibrate_bn": as_bool(key("recalibrate_bn"), sl.get("recalibrate_bn")),
        "recalibrate_batches": as_int(key("recalibrate_batches"), sl.get("recalibrate_batches"), min=1,
                                      allow_none=True),
        "latency_rounds": as_int(key("latency_rounds"), sl.get("latency_rounds"), min=1),
        "latency_repeats": as_int(key("latency_repeats"), sl.get("latency_repeats"), min=1),
        "latency_threads": as_int(key("latency_threads"), sl.get("latency_threads"), min=1, allow_none=True),
        # null (the default) times NCHW and NHWC side by side and keeps the faster per batch size.
        "latency_channels_last": as_bool(key("latency_channels_last"), sl.get("latency_channels_last"),
                                         allow_none=True),
    }
    sizes = sl.get("latency_batch_sizes")
    sizes = OmegaConf.to_container(sizes) if isinstance(sizes, ListConfig) else sizes
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise OptionError(f"{key('latency_batch_sizes')}={sizes!r}: expected a list of batch sizes")
    opts["latency_batch_sizes"] = [as_int(key(f"latency_batch_sizes[{i}]"), b, min=1) for i, b in enumerate(sizes)]
    if opts["epochs"].trained + opts["epochs"].sparsified == 0:
        raise ValueError("slimming.epochs.trained and slimming.epochs.sparsified are both 0: "
                         "nothing would be trained before pruning")
    return SlimmingOptions(**opts)


def validate(cfg: DictConfig) -> SlimmingOptions:
    """train.py's preflight hook (``task.validate``)."""
    if cfg.get("ckpt_path"):
        raise ValueError("task=slimming runs several stages and cannot resume from ckpt_path; "
                         "start a new run")
    return validate_options(cfg.slimming)


def _fit_stage(ctx: RunContext, module: SlimmingModule, datamodule, stage: str, epochs: int,
               *, callbacks=(), keep: str = "best") -> dict[str, str | None]:
    """Train one stage; leave ``module`` holding the ``keep`` ("best" or "last") weights."""
    module.stage = stage
    module.train()  # Lightning keeps the modes it finds; pruning and evaluation leave eval mode
    trainer = ctx.build_trainer(stage=stage, max_epochs=epochs, extra_callbacks=list(callbacks))
    trainer.fit(module, datamodule=datamodule)
    paths = checkpoint_paths(trainer)
    if keep == "best" and paths["best_checkpoint"]:
        module.load_state_dict(safe_load(paths["best_checkpoint"])["state_dict"])
    return paths


def save_module(module: pl.LightningModule, path: Path) -> Path:
    """A checkpoint of ``module`` alone, in the format Lightning writes (loads weights_only)."""
    return save_module_checkpoint(module, path)


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    # Checked once in train.py's preflight; a runner called without it checks now.
    opts = ctx.task_options(validate, SlimmingOptions)
    datamodule = ctx.build_datamodule()
    module = ctx.build_module()
    if not isinstance(module, SlimmingModule):
        raise ValueError(f"task=slimming needs model._target_ normapps.tasks.slimming.SlimmingModule, "
                         f"got {type(module).__name__}")
    if not prunable_bns(module.net):
        raise ValueError(f"model.arch={module.hparams.arch} with model.norm={module.hparams.norm} "
                         "has no BatchNorm scales to slim; use model.norm=batch")
    module.image_size = int(datamodule.image_size)
    datamodule.setup("fit")
    input_shape = (module.hparams.in_channels, module.image_size, module.image_size)
    example = torch.randn(1, *input_shape)

    snapshots: dict[str, torch.nn.Module] = {}
    accuracy: dict[str, float] = {}
    checkpoints: dict[str, Any] = {}

    def record(stage: str) -> None:
        accuracy[stage] = evaluate_accuracy(module.net, datamodule.test_dataloader(),
                                            device=module.device)
        snapshots[stage] = copy.deepcopy(module.net).cpu().eval()
        log.info("slimming %s: test accuracy %.4f", stage, accuracy[stage])

    # 1. plain training (the unpruned reference)
    if opts.epochs.trained > 0:
        checkpoints["trained"] = _fit_stage(ctx, module, datamodule, "trained", opts.epochs.trained)
        record("trained")
    # 2. sparsity training; keep the last weights, the sparsest (best-by-val would favour early ones)
    if opts.epochs.sparsified > 0:
        checkpoints["sparsified"] = _fit_stage(
            ctx, module, datamodule, "sparsified", opts.epochs.sparsified,
            callbacks=[BNSparsity(s=opts.s)], keep="last")
        record("sparsified")
    # The unpruned reference the pruned checkpoints point to (weights as trained, before pruning).
    ref = checkpoints.get("trained", {}).get("best_checkpoint") or checkpoints.get("sparsified", {}).get("last_checkpoint")
    module.unpruned_checkpoint = ref
    # 3. pruning: one global |gamma| threshold, physical removal
    net = module.net.cpu().eval()
    plan = make_plan(net, example, ratio=opts.ratio, min_channels=opts.min_channels)
    masked = masked_copy(net, plan.keep).eval()
    apply_plan(net, example, plan.keep)
    with torch.no_grad():
        probe = next(iter(datamodule.val_dataloader()))[0][:32]
        mask_diff = float((net(probe) - masked(probe)).abs().max())
    del masked
    log.info("pruned %.1f%% of BN channels (threshold %.3g); |pruned - masked| max %.2e",
             100 * plan.pruned_fraction(), plan.threshold, mask_diff)
    acc_before_recal = None
    if opts.recalibrate_bn:
        acc_before_recal = evaluate_accuracy(net, datamodule.test_dataloader())
        recalibrate_bn(net, datamodule.train_dataloader(), max_batches=opts.recalibrate_batches)
    module.stage = "pruned"
    record("pruned")
    pruned_ckpt = save_module(module, ctx.output_dir / "checkpoints" / "pruned" / "pruned.ckpt")
    checkpoints["pruned"] = {"best_checkpoint": str(pruned_ckpt), "last_checkpoint": str(pruned_ckpt)}
    # 4. fine-tuning the smaller dense network
    if opts.epochs.finetuned > 0:
        if opts.finetune_lr is not None:
            module.hparams.lr = opts.finetune_lr
        checkpoints["finetuned"] = _fit_stage(ctx, module, datamodule, "finetuned", opts.epochs.finetuned)
        record("finetuned")

    _warn_if_contended()
    rows = stage_rows(snapshots, accuracy, input_shape, opts)
    csv_path, md_path = publish_table(ctx.output_dir, ctx.loggers, "slimming", rows, key="slimming/stages")
    log.info("slimming table (%s):\n%s", md_path, markdown_table(rows))
    figure = save_stage_figure(rows, ctx.output_dir, loggers=ctx.loggers)

    final = checkpoints.get("finetuned", checkpoints["pruned"])
    metrics: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            if key != "stage":
                metrics[f"{row['stage']}/{key}"] = value
    last_stage = rows[-1]["stage"]
    metrics["test/acc"] = accuracy[last_stage]
    metrics["pruning/pruned_fraction"] = plan.pruned_fraction()
    metrics["pruning/mask_max_abs_diff"] = mask_diff
    if acc_before_recal is not None:
        metrics["pruned/test_acc_before_recalibration"] = acc_before_recal
    return {
        "metrics": metrics,
        "best_checkpoint": final["best_checkpoint"],
        "last_checkpoint": final["last_checkpoint"],
        "stages": rows,
        "stage_checkpoints": checkpoints,
        "pruning": {**plan.summary(), "min_channels": opts.min_channels,
                    "recalibrate_bn": opts.recalibrate_bn},
        "table": {"csv": str(csv_path), "markdown": str(md_path)},
        "figure": str(figure),
        "machine": machine_description(),
    }


def stage_rows(snapshots: dict[str, torch.nn.Module], accuracy: dict[str, float],
               input_shape: tuple[int, ...], opts: dict[str, Any]) -> list[dict[str, Any]]:
    example = torch.randn(1, *input_shape)
    # The deployable model (BN folded) in the layout that measured fastest (or the forced one).
    # speedup_bs<b>: median over rounds of the first stage's time over this stage's.
    ref = next(iter(snapshots))
    timing = deployment_latency(snapshots, input_shape, batch_sizes=opts["latency_batch_sizes"],
                                rounds=opts["latency_rounds"], repeats=opts["latency_repeats"],
                                threads=opts["latency_threads"],
                                channels_last=opts["latency_channels_last"], reference=ref)
    gpu = {}
    if torch.cuda.is_available():
        gpu = deployment_latency(snapshots, input_shape, batch_sizes=opts["latency_batch_sizes"],
                                 device="cuda", rounds=opts["latency_rounds"],
                                 repeats=opts["latency_repeats"],
                                 channels_last=opts["latency_channels_last"], prefix="gpu_latency_ms")
        gpu = {n: {k: v for k, v in row.items() if k.startswith("gpu_")} for n, row in gpu.items()}
    channels = {stage: sum(bn.num_features for _, bn in prunable_bns(net)) for stage, net in snapshots.items()}
    rows = []
    for stage, net in snapshots.items():
        row: dict[str, Any] = {"stage": stage, "test_acc": accuracy[stage],
                               "channels_kept": channels[stage] / channels[ref], **model_cost(net, example),
                               "latency_model": "bn-folded", **timing[stage], **gpu.get(stage, {})}
        rows.append(row)
    return rows


def _warn_if_contended() -> None:
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        # Spinning OpenMP threads that lose their core stall each other: multi-threaded
        # timings on an oversubscribed CPU inflate many-fold (measured 12 ms -> 300 ms at bs 1).
        log.warning("load average %.1f exceeds %d cores: latencies will be inflated; for fair "
                    "figures run with OMP_WAIT_POLICY=PASSIVE or slimming.latency_threads=1",
                    load, os.cpu_count())


def machine_description() -> dict[str, Any]:
    import os
    import platform

    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
