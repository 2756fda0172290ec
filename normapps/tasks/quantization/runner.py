"""train.py's flow for task=quantization: float model (trained here or ``source_ckpt``), then
``mode=ptq|qat|dfq|zeroq`` to int8, a report table and the int8 file infer.py runs."""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from normapps.norm import recalibrate_bn
from normapps.platform.checkpoint import CheckpointError, load_module, safe_load
from normapps.platform.context import RunContext
from normapps.platform.options import as_bool, as_float, as_int, as_text
from normapps.platform.profiling import state_dict_bytes
from normapps.platform.runner import checkpoint_paths, logged_metrics
from normapps.platform.summary import metrics_to_floats, write_table
from normapps.tasks.quantization import dfq, ptq, zeroq
from normapps.tasks.quantization.artifact import arch_hparams, save_quantized
from normapps.tasks.quantization.qat import QATSchedule
from normapps.tasks.quantization.report import file_bytes, report_row

log = logging.getLogger(__name__)

MODES = ("ptq", "qat", "dfq", "zeroq")


def validate(cfg: DictConfig) -> None:
    """Every mode/quant.* option, before any work (train.py's preflight calls it as
    ``task.validate``; errors name the key)."""
    mode, q = cfg.get("mode"), cfg.quant
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if q.backend not in ptq.BACKENDS:
        raise ValueError(f"quant.backend must be one of {', '.join(ptq.BACKENDS)}, got {q.backend!r}")
    as_bool("quant.per_channel", q.get("per_channel", True))
    if q.backend == "pt2e" and mode != "ptq":
        raise ValueError(f"quant.backend=pt2e is for mode=ptq; mode={mode} uses the fx backend")
    if q.backend == "pt2e" and not q.per_channel:
        raise ValueError("quant.backend=pt2e quantizes weights per channel only; use quant.backend=fx "
                         "with quant.per_channel=false")
    # Each key is checked where the config has it (the task config declares them all).
    checks = {
        **{k: dict(kind="bool") for k in ("compile", "recalibrate_bn", "equalize", "bias_correction")},
        **{k: dict(kind="int", min=1) for k in ("calib_batches", "bn_recalib_batches", "cle_iterations",
                                                "latency_repeats")},
        **{k: dict(kind="int", min=0) for k in ("qat_epochs", "freeze_bn_epoch", "freeze_observer_epoch")},
        "qat_lr": dict(kind="lr"),
        **{f"zeroq.{k}": dict(kind="int", min=1) for k in ("num_samples", "batch_size", "steps")},
        "zeroq.lr": dict(kind="lr"),
    }
    for key, check in checks.items():
        value = OmegaConf.select(q, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        name = f"quant.{key}"
        if check["kind"] == "bool":
            as_bool(name, value)
        elif check["kind"] == "int":
            as_int(name, value, min=check["min"])
        else:
            as_float(name, value, min=0.0, min_open=True)
    if cfg.get("source_ckpt") is not None:
        safe_load(as_text("source_ckpt", cfg.source_ckpt))
    if cfg.model.get("norm", "batch") != "batch":
        raise ValueError("task=quantization folds BatchNorm into convs: model.norm must be batch")


_ABSENT = object()


def float_module(cfg: DictConfig, ctx: RunContext, datamodule) -> tuple[Any, dict[str, Any]]:
    """The trained float classifier: loaded from ``source_ckpt`` or trained now."""
    if cfg.get("source_ckpt"):
        module = load_module(cfg.source_ckpt, expected_task="classification")
        if not hasattr(module, "net"):
            raise CheckpointError(f"{cfg.source_ckpt} holds no classifier network")
        return module, {"source_checkpoint": str(cfg.source_ckpt)}
    module = ctx.build_module()
    trainer = ctx.build_trainer(stage="train")
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    paths = checkpoint_paths(trainer)
    if paths["best_checkpoint"]:
        module = load_module(paths["best_checkpoint"], expected_task="classification")
    metrics = metrics_to_floats({f"float/{k}": v for k, v in logged_metrics(trainer).items()})
    return module.eval(), {**paths, "train_metrics": metrics}


def run_quantization(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    validate(cfg)
    q, mode = cfg.quant, cfg.mode
    torch.backends.quantized.engine = "x86"
    datamodule = ctx.build_datamodule()
    datamodule.setup("fit")
    module, extra = float_module(cfg, ctx, datamodule)
    float_net = copy.deepcopy(module.net).eval()
    hp = dict(module.hparams)
    image_size = int(cfg.data.image_size)
    input_shape = (int(hp.get("in_channels", cfg.data.channels)), image_size, image_size)
    example = torch.zeros(2, *input_shape)
    train_loader = datamodule.train_dataloader()
    test_batches = list(datamodule.test_dataloader())
    per_channel = bool(q.per_channel)
    recipe: dict[str, Any] = {"mode": mode, "backend": q.backend, "per_channel": per_channel,
                              "qat": False, "folded": False, "compile": bool(q.compile)}
    info: dict[str, Any] = {}

    if mode == "ptq":
        src = copy.deepcopy(float_net)
        if q.recalibrate_bn:
            # Population BN statistics of the training data instead of the training EMA.
            recalibrate_bn(src, train_loader, max_batches=q.bn_recalib_batches)
        if q.backend == "pt2e":
            prepared, converted = ptq.quantize_pt2e(src, train_loader, example=example,
                                                    per_channel=per_channel, max_batches=q.calib_batches)
            int8 = ptq.compile_int8(converted) if q.compile else converted
            state = prepared.state_dict()
        else:
            int8 = ptq.quantize_fx(src, train_loader, example=example, per_channel=per_channel,
                                   max_batches=q.calib_batches)
            state = int8.state_dict()
    elif mode == "qat":
        recipe["qat"] = True
        prepared = ptq.prepare_fx_model(float_net, example, per_channel=per_channel, qat=True)
        module.net = prepared
        module.hparams.lr = float(q.qat_lr)
        schedule = QATSchedule(freeze_bn_epoch=int(q.freeze_bn_epoch),
                               freeze_observer_epoch=int(q.freeze_observer_epoch))
        trainer = ctx.build_trainer(stage="qat", max_epochs=int(q.qat_epochs), extra_callbacks=[schedule])
        trainer.fit(module, datamodule=datamodule)
        info["qat_metrics"] = metrics_to_floats({f"qat/{k}": v for k, v in logged_metrics(trainer).items()})
        if q.recalibrate_bn:
            # Re-estimate the fused modules' BN statistics with the final fake-quantized weights.
            recalibrate_bn(prepared, train_loader, max_batches=q.bn_recalib_batches)
        int8 = ptq.convert_fx_model(prepared.eval())
        state = int8.state_dict()
    else:
        # Data-free: only the BN statistics of the float model are used, never training data.
        synth = zeroq.synthesize_calibration_data(
            float_net, input_shape=input_shape, num_samples=int(q.zeroq.num_samples),
            batch_size=int(q.zeroq.batch_size), steps=int(q.zeroq.steps), lr=float(q.zeroq.lr),
            seed=int(cfg.seed))
        info["zeroq_bn_loss"] = zeroq.bn_statistics_loss(float_net, synth[: q.zeroq.batch_size])
        calib = list(torch.split(synth, int(q.zeroq.batch_size)))
        src = float_net
        if mode == "dfq":
            recipe["folded"] = True
            src, info["dfq"] = dfq.data_free_prepare(
                float_net, per_channel=per_channel, equalize=bool(q.equalize),
                correct_bias=bool(q.bias_correction), iterations=int(q.cle_iterations))
        int8 = ptq.quantize_fx(src, calib, example=example, per_channel=per_channel)
        state = int8.state_dict()

    out_path = ctx.output_dir / "quantized.pt"
    save_quantized(out_path, state_dict=state, arch=arch_hparams(hp), recipe=recipe, image_size=image_size)
    repeats = int(q.latency_repeats)
    rows = [
        report_row("fp32", float_net, test_batches, size_bytes=state_dict_bytes(float_net),
                   input_shape=input_shape, repeats=repeats),
        report_row(f"int8 ({mode}, {q.backend}{'' if per_channel else ', per-tensor'})", int8,
                   test_batches, size_bytes=file_bytes(out_path), input_shape=input_shape,
                   repeats=repeats),
    ]
    for r in rows:
        log.info("%s", r)
    write_table(ctx.output_dir, "quantization_report", rows)
    fp32, i8 = rows
    metrics = {
        "test/acc_fp32": fp32["accuracy"], "test/acc_int8": i8["accuracy"],
        "test/acc_drop": fp32["accuracy"] - i8["accuracy"],
        "size/fp32_bytes": fp32["size_bytes"], "size/int8_bytes": i8["size_bytes"],
        "size/ratio": fp32["size_bytes"] / i8["size_bytes"],
        **{f"latency/fp32_{k[8:]}": v for k, v in fp32.items() if k.startswith("latency_")},
        **{f"latency/int8_{k[8:]}": v for k, v in i8.items() if k.startswith("latency_")},
    }
    for bs in (1, 64):
        key = f"ms_bs{bs}"
        metrics[f"latency/speedup_bs{bs}"] = fp32[f"latency_{key}"] / i8[f"latency_{key}"]
    for logger in ctx.loggers:
        logger.log_metrics(metrics)
    return {"metrics": metrics, "mode": mode, "quantized_model": str(out_path), "report": rows,
            "recipe": recipe, **info, **extra}
