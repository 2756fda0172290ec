"""train.py's flow for task=quantization: float model (trained here or ``source_ckpt``), then
``mode=ptq|qat|dfq|zeroq`` to int8, a report table and the int8 file infer.py runs.

``source_ckpt`` may be a classification or a slimming checkpoint. From a slimming (pruned)
checkpoint the run also quantizes the unpruned network the slimming run started from
(``quant.float_ckpt``, by default the one the slimming checkpoint records) and writes the
combined table float / pruned / int8 / pruned+int8 (``prune_quant_report.md``).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from normapps.models.resize import layer_shapes
from normapps.norm import recalibrate_bn
from normapps.platform.checkpoint import load_module, require_network, safe_load
from normapps.platform.context import RunContext
from normapps.platform.int8 import set_int8_engine
from normapps.platform.options import TaskOptions, as_bool, as_float, as_int, as_text
from normapps.platform.profiling import count_flops, count_parameters, deployable, state_dict_bytes
from normapps.platform.runner import load_or_fit, logged_metrics
from normapps.platform.summary import markdown_table, metrics_to_floats, publish_table
from normapps.tasks.quantization import dfq, ptq, zeroq
from normapps.tasks.quantization.artifact import arch_hparams, save_quantized
from normapps.tasks.quantization.plot import save_report_figure
from normapps.tasks.quantization.qat import QATSchedule, finish_qat
from normapps.tasks.quantization.report import accuracy, as_callable, file_bytes, time_models

log = logging.getLogger(__name__)

MODES = ("ptq", "qat", "dfq", "zeroq")


@dataclass(frozen=True)
class ZeroQOptions(TaskOptions):
    num_samples: int = 128
    batch_size: int = 64
    steps: int = 500
    lr: float = 0.5
    prior_mean: float = 0.0
    prior_std: float = 1.0


@dataclass(frozen=True)
class QuantOptions(TaskOptions):
    """Every ``quant.*`` option (and ``source_ckpt``), checked together before any work; the
    field names are the config's (``quant.calib_batches`` -> ``calib_batches``)."""
    mode: str
    backend: str = "fx"
    compile: bool = False
    per_channel: bool = True
    calib_batches: int = 8
    recalibrate_bn: bool = True
    bn_recalib_batches: int = 16
    qat_epochs: int = 3
    qat_lr: float = 0.005
    freeze_bn_epoch: int = 1
    freeze_observer_epoch: int = 2
    equalize: bool = True
    bias_correction: bool = True
    high_bias_absorption: bool = True
    cle_iterations: int = 100
    cle_tolerance: float = 1e-4
    zeroq: ZeroQOptions = field(default_factory=ZeroQOptions)
    latency_rounds: int = 3
    latency_repeats: int = 10
    latency_threads: int | None = None
    float_ckpt: str | None = None
    sensitivity: bool = True
    onnx: bool = False
    source_ckpt: str | None = None


def validate(cfg: DictConfig) -> QuantOptions:
    """Every quant.* option, before any work (train.py's preflight calls it as
    ``task.validate``; errors name the key); returns them as one :class:`QuantOptions`."""
    q = cfg.quant
    mode = q.get("mode")
    if mode not in MODES:
        raise ValueError(f"quant.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if q.backend not in ptq.BACKENDS:
        raise ValueError(f"quant.backend must be one of {', '.join(ptq.BACKENDS)}, got {q.backend!r}")
    as_bool("quant.per_channel", q.get("per_channel", True))
    if q.backend == "pt2e" and mode not in ("ptq", "qat"):
        raise ValueError(f"quant.backend=pt2e is for quant.mode=ptq or quant.mode=qat; quant.mode={mode} "
                         "uses the fx backend")
    if q.backend == "pt2e" and not q.per_channel:
        raise ValueError("quant.backend=pt2e quantizes weights per channel only; use quant.backend=fx "
                         "with quant.per_channel=false")
    # Each key is checked where the config has it (the task config declares them all); an absent
    # key keeps QuantOptions' default (the same as conf/task/train/quantization.yaml's).
    checks = {
        **{k: dict(kind="bool") for k in ("compile", "recalibrate_bn", "equalize", "bias_correction",
                                          "high_bias_absorption", "sensitivity", "onnx")},
        **{k: dict(kind="int", min=1) for k in ("calib_batches", "bn_recalib_batches", "cle_iterations",
                                                "latency_rounds", "latency_repeats")},
        **{k: dict(kind="int", min=0) for k in ("qat_epochs", "freeze_bn_epoch", "freeze_observer_epoch")},
        "latency_threads": dict(kind="int", min=1, allow_none=True),
        "qat_lr": dict(kind="positive"),
        "cle_tolerance": dict(kind="positive"),
        **{f"zeroq.{k}": dict(kind="int", min=1) for k in ("num_samples", "batch_size", "steps")},
        "zeroq.lr": dict(kind="positive"),
        "zeroq.prior_mean": dict(kind="number"),
        "zeroq.prior_std": dict(kind="positive"),
        "float_ckpt": dict(kind="path"),
    }
    values: dict[str, Any] = {}
    for key, check in checks.items():
        value = OmegaConf.select(q, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        name = f"quant.{key}"
        if check["kind"] == "bool":
            values[key] = as_bool(name, value)
        elif check["kind"] == "int":
            values[key] = as_int(name, value, min=check["min"], allow_none=check.get("allow_none", False))
        elif check["kind"] == "number":
            values[key] = as_float(name, value)
        elif check["kind"] == "path":
            values[key] = as_text(name, value, allow_none=True)
        else:
            values[key] = as_float(name, value, min=0.0, min_open=True)
    source = as_text("source_ckpt", cfg.get("source_ckpt"), allow_none=True)
    if source is not None:
        safe_load(source)
    if values.get("float_ckpt") is not None:
        if source is None:
            raise ValueError("quant.float_ckpt (the unpruned reference) needs source_ckpt=<slimming checkpoint>")
        _check_classifier_file(values["float_ckpt"], "quant.float_ckpt")
    if values.get("onnx"):
        from normapps.tasks.quantization.onnx_export import require_onnx

        require_onnx()
    if cfg.model.get("norm", "batch") != "batch":
        raise ValueError("task=quantization folds BatchNorm into convs: model.norm must be batch")
    zq = {k.split(".", 1)[1]: values.pop(k) for k in list(values) if k.startswith("zeroq.")}
    return QuantOptions(mode=mode, backend=str(q.backend), per_channel=bool(q.get("per_channel", True)),
                        zeroq=ZeroQOptions(**zq), source_ckpt=source, **values)


_ABSENT = object()


def _check_classifier_file(path: str, option: str) -> None:
    """``path`` loads safely and holds a classifier network (any task that trains one)."""
    require_network(path, "classifier", option)


def _load_classifier(path: str, option: str):
    require_network(path, "classifier", option)
    return load_module(path, expected_network="classifier").eval()


def float_module(cfg: DictConfig, ctx: RunContext, datamodule) -> tuple[Any, dict[str, Any]]:
    """The trained float classifier: loaded from ``source_ckpt`` (any checkpoint holding a
    classifier, a pruned slimming one included) or trained now and reloaded from its best
    checkpoint (the platform's load_or_fit)."""
    if cfg.get("source_ckpt"):
        require_network(str(cfg.source_ckpt), "classifier", "source_ckpt")
    module, metrics, paths = load_or_fit(cfg, ctx, datamodule, network="classifier", stage="train",
                                         after_fit="best")
    if cfg.get("source_ckpt"):
        return module.eval(), {"source_checkpoint": str(cfg.source_ckpt), "source_task": module.task_name}
    metrics = metrics_to_floats({f"float/{k}": v for k, v in metrics.items()})
    return module.eval(), {**paths, "train_metrics": metrics}


def unpruned_reference(q: QuantOptions, module) -> tuple[nn.Module | None, str | None]:
    """The network a slimming checkpoint was pruned from (``quant.float_ckpt`` or the path the
    slimming checkpoint records); (None, None) for an unpruned source."""
    if getattr(module, "task_name", None) != "slimming" or getattr(module, "stage", "") in ("trained", "sparsified"):
        return None, None
    path = q.float_ckpt or getattr(module, "unpruned_checkpoint", None)
    if not path or not Path(path).is_file():
        log.warning("source_ckpt is a pruned network but its unpruned reference %s is not there; set "
                    "quant.float_ckpt=<the slimming run's trained checkpoint> for the combined table", path)
        return None, None
    return copy.deepcopy(_load_classifier(path, "quant.float_ckpt").net).eval(), str(path)


def quantize(net: nn.Module, *, mode: str, q: QuantOptions, seed: int, ctx: RunContext, module,
             datamodule, example: torch.Tensor, input_shape: tuple[int, ...], stage: str = "qat"
             ) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(int8 model, state to save, recipe, info) for one float network, with the checked options."""
    per_channel = bool(q.per_channel)
    train_loader = datamodule.train_dataloader()
    recipe: dict[str, Any] = {"mode": mode, "backend": q.backend, "per_channel": per_channel,
                              "qat": False, "folded": False, "compile": bool(q.compile)}
    info: dict[str, Any] = {}
    if mode == "ptq":
        src = copy.deepcopy(net)
        if q.recalibrate_bn:
            # Population BN statistics of the training data instead of the training EMA.
            recalibrate_bn(src, train_loader, max_batches=q.bn_recalib_batches)
        if q.backend == "pt2e":
            prepared, converted = ptq.quantize_pt2e(src, train_loader, example=example,
                                                    per_channel=per_channel, max_batches=q.calib_batches)
            return (ptq.compile_int8(converted) if q.compile else converted), prepared.state_dict(), recipe, info
        int8 = ptq.quantize_fx(src, train_loader, example=example, per_channel=per_channel,
                               max_batches=q.calib_batches)
        return int8, int8.state_dict(), recipe, info
    if mode == "qat":
        recipe["qat"] = True
        if q.backend == "pt2e":
            prepared = ptq.prepare_qat_pt2e_model(net, example)
        else:
            prepared = ptq.prepare_fx_model(net, example, per_channel=per_channel, qat=True)
        qat_module = copy.deepcopy(module)
        qat_module.net = prepared
        qat_module.hparams.lr = float(q.qat_lr)
        schedule = QATSchedule(freeze_bn_epoch=int(q.freeze_bn_epoch),
                               freeze_observer_epoch=int(q.freeze_observer_epoch))
        trainer = ctx.build_trainer(stage=stage, max_epochs=int(q.qat_epochs), extra_callbacks=[schedule])
        trainer.fit(qat_module, datamodule=datamodule)
        prepared = qat_module.net
        info["qat_metrics"] = metrics_to_floats({f"qat/{k}": v for k, v in logged_metrics(trainer).items()})
        finish_qat(prepared, recalibrate_bn=bool(q.recalibrate_bn))
        if q.backend == "pt2e":
            converted = ptq.convert_qat_pt2e_model(prepared)
            return (ptq.compile_int8(converted) if q.compile else converted), prepared.state_dict(), recipe, info
        int8 = ptq.convert_fx_model(prepared.eval())
        return int8, int8.state_dict(), recipe, info
    # Data-free: only the BN statistics of the float model are used, never training data.
    zq = q.zeroq
    synth = zeroq.synthesize_calibration_data(
        net, input_shape=input_shape, num_samples=int(zq.num_samples), batch_size=int(zq.batch_size),
        steps=int(zq.steps), lr=float(zq.lr), seed=int(seed),
        prior_mean=float(zq.prior_mean), prior_std=float(zq.prior_std))
    info["zeroq_bn_loss"] = zeroq.bn_statistics_loss(net, synth[: int(zq.batch_size)])
    calib = list(torch.split(synth, int(zq.batch_size)))
    src = net
    if mode == "dfq":
        recipe["folded"] = True
        src, info["dfq"] = dfq.data_free_prepare(
            net, per_channel=per_channel, equalize=bool(q.equalize), correct_bias=bool(q.bias_correction),
            absorb_bias=bool(q.high_bias_absorption), iterations=int(q.cle_iterations),
            tolerance=float(q.cle_tolerance))
        recipe["relu6_to_relu"] = bool(info["dfq"]["relu6_replaced"])
    int8 = ptq.quantize_fx(src, calib, example=example, per_channel=per_channel)
    # The same recipe calibrated on real training batches, for comparison with synthetic data.
    real = ptq.quantize_fx(src, train_loader, example=example, per_channel=per_channel,
                           max_batches=q.calib_batches)
    info["real_calibration_model"] = real
    return int8, int8.state_dict(), recipe, info


def _int8_name(mode: str, q: QuantOptions) -> str:
    return f"int8 ({mode}, {q.backend}{'' if q.per_channel else ', per-tensor'})"


def run_quantization(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    # Checked once in train.py's preflight; a runner called without it checks now.
    q = ctx.task_options(validate, QuantOptions)
    mode = q.mode
    set_int8_engine()
    datamodule = ctx.build_datamodule()
    datamodule.setup("fit")
    module, extra = float_module(cfg, ctx, datamodule)
    float_net = copy.deepcopy(module.net).eval()
    hp = dict(module.hparams)
    image_size = int(cfg.data.image_size)
    input_shape = (int(hp.get("in_channels", cfg.data.channels)), image_size, image_size)
    example = torch.zeros(2, *input_shape)
    test_batches = list(datamodule.test_dataloader())
    one = torch.zeros(1, *input_shape)
    reference, reference_path = unpruned_reference(q, module)
    pruned = reference is not None

    int8, state, recipe, info = quantize(float_net, mode=mode, q=q, seed=cfg.seed, ctx=ctx, module=module,
                                         datamodule=datamodule, example=example, input_shape=input_shape)
    real_calib = info.pop("real_calibration_model", None)
    out_path = ctx.output_dir / "quantized.pt"
    save_quantized(out_path, state_dict=state, arch=arch_hparams(hp), recipe=recipe, image_size=image_size,
                   layer_shapes=layer_shapes(float_net))

    # Every model of the report, timed side by side: float ones BN-folded, each in the
    # faster memory format; int8 graphs as they are (only the input layout varies).
    fp32_name = "fp32 (pruned)" if pruned else "fp32"
    models: dict[str, Any] = {fp32_name: float_net, _int8_name(mode, q): int8}
    sizes = {fp32_name: state_dict_bytes(float_net), _int8_name(mode, q): file_bytes(out_path)}
    cost = {fp32_name: (float_net, float_net)}
    cost[_int8_name(mode, q)] = (float_net, None)
    if real_calib is not None:
        name = f"int8 ({mode}, real-data calibration)"
        models[name], sizes[name], cost[name] = real_calib, state_dict_bytes(real_calib.state_dict()), (float_net, None)
    ref_mode = "ptq" if mode == "qat" else mode
    if pruned:
        ref_int8, ref_state, _, _ = quantize(reference, mode=ref_mode, q=q, seed=cfg.seed, ctx=ctx, module=module,
                                             datamodule=datamodule, example=example, input_shape=input_shape)
        models["fp32 (unpruned)"], models[f"int8 ({ref_mode}, unpruned)"] = reference, ref_int8
        sizes["fp32 (unpruned)"] = state_dict_bytes(reference)
        sizes[f"int8 ({ref_mode}, unpruned)"] = state_dict_bytes(ref_state)
        cost["fp32 (unpruned)"] = (reference, reference)
        cost[f"int8 ({ref_mode}, unpruned)"] = (reference, None)
    compiled = q.backend == "pt2e"
    timing = time_models(
        {n: (m if isinstance(m, nn.Module) and not compiled else as_callable(m)) for n, m in models.items()},
        input_shape, fold={n: cost[n][1] is not None for n in models},
        channels_last={n: (None if cost[n][1] is not None or not compiled else False) for n in models},
        batch_sizes=(1, 64), rounds=int(q.get("latency_rounds", 3)), repeats=int(q.latency_repeats),
        threads=q.get("latency_threads"), reference=fp32_name)
    rows = []
    for name, m in models.items():
        net_for_cost = cost[name][0]
        rows.append({"model": name, "accuracy": accuracy(m, test_batches), "size_bytes": int(sizes[name]),
                     "params": count_parameters(net_for_cost), "flops": count_flops(net_for_cost, one),
                     **timing[name]})
    for r in rows:
        log.info("%s", r)
    main_rows = [r for r in rows if "unpruned" not in r["model"]]
    publish_table(ctx.output_dir, ctx.loggers, "quantization_report", main_rows)
    figure = save_report_figure(main_rows, ctx.output_dir, "quantization_report", loggers=ctx.loggers,
                                title=f"mode={mode}, backend={q.backend}")
    fp32, i8 = main_rows[0], main_rows[1]
    metrics = {
        "test/acc_fp32": fp32["accuracy"], "test/acc_int8": i8["accuracy"],
        "test/acc_drop": fp32["accuracy"] - i8["accuracy"],
        "size/fp32_bytes": fp32["size_bytes"], "size/int8_bytes": i8["size_bytes"],
        "size/ratio": fp32["size_bytes"] / i8["size_bytes"],
        **{f"latency/fp32_{k[8:]}": v for k, v in fp32.items() if k.startswith("latency_ms")},
        **{f"latency/int8_{k[8:]}": v for k, v in i8.items() if k.startswith("latency_ms")},
    }
    for bs in (1, 64):  # median of per-round ratios (platform.measure), not a ratio of medians
        metrics[f"latency/speedup_bs{bs}"] = i8[f"speedup_bs{bs}"]
    if real_calib is not None:
        metrics["test/acc_int8_real_calibration"] = main_rows[2]["accuracy"]
    result: dict[str, Any] = {"mode": mode, "quantized_model": str(out_path), "report": main_rows,
                              "recipe": recipe, "latency_model": "float: bn-folded, best memory format",
                              "figure": str(figure),
                              **info, **extra}
    if pruned:
        result["prune_quant"] = _combined_table(ctx, rows, fp32["model"], i8["model"], ref_mode)
        result["float_checkpoint"] = reference_path
        metrics.update({f"prune_quant/{k}": v for k, v in result["prune_quant"]["summary"].items()})
    if q.sensitivity:
        result["sensitivity"] = _sensitivity(ctx, float_net, datamodule, test_batches, example, q)
    if q.onnx:
        result["onnx"] = _onnx(ctx, models, cost, test_batches)
    for logger in ctx.loggers:
        logger.log_metrics(metrics)
    log.info("quantization done: int8 model %s, report %s; run infer.py task=quantization ckpt_path=%s "
             "input=<images>", out_path, ctx.output_dir / "quantization_report.md", out_path)
    return {"metrics": metrics, **result}


def _combined_table(ctx: RunContext, rows: list[dict], pruned_name: str, pruned_int8_name: str,
                    ref_mode: str) -> dict[str, Any]:
    """float / pruned / int8 / pruned+int8, speedups and accuracy drops against float."""
    by_name = {r["model"]: r for r in rows}
    order = [("float", "fp32 (unpruned)"), ("pruned", pruned_name),
             ("int8", f"int8 ({ref_mode}, unpruned)"), ("pruned+int8", pruned_int8_name)]
    base = by_name["fp32 (unpruned)"]
    table = []
    for label, name in order:
        r = dict(by_name[name])
        r = {"model": label, "recipe": name, **{k: v for k, v in r.items() if k != "model"}}
        for bs in (1, 64):  # ratio of the medians of one round-robin (the rows' own speedup_bs
            # columns are against the pruned float model, the run's reference)
            r[f"speedup_bs{bs}"] = base[f"latency_ms_bs{bs}"] / r[f"latency_ms_bs{bs}"]
        r["acc_drop_points"] = 100 * (base["accuracy"] - r["accuracy"])
        table.append(r)
    csv_path, md_path = publish_table(ctx.output_dir, ctx.loggers, "prune_quant_report", table)
    log.info("float / pruned / int8 / pruned+int8 (%s):\n%s", md_path, markdown_table(table))
    figure = save_report_figure(table, ctx.output_dir, "prune_quant_report", loggers=ctx.loggers,
                                title="float / pruned / int8 / pruned+int8")
    last = table[-1]
    return {"rows": table, "table": {"csv": str(csv_path), "markdown": str(md_path)}, "figure": str(figure),
            "summary": {"speedup_bs64": last["speedup_bs64"], "speedup_bs1": last["speedup_bs1"],
                        "acc_drop_points": last["acc_drop_points"]}}


def _sensitivity(ctx: RunContext, float_net: nn.Module, datamodule, test_batches, example, q) -> dict[str, Any]:
    from normapps.tasks.quantization.sensitivity import layer_sensitivity

    calib = [b[0] for _, b in zip(range(int(q.calib_batches)), datamodule.train_dataloader())]
    rows = layer_sensitivity(deployable(float_net), test_batches, calib=calib, example=example,
                             per_channel=bool(q.per_channel))
    csv_path, md_path = publish_table(ctx.output_dir, ctx.loggers, "int8_sensitivity", rows)
    worst = rows[0] if rows else {}
    log.info("int8 sensitivity (%s): quantized alone, %s loses most (%.2f points)", md_path,
             worst.get("layer"), 100 * worst.get("acc_drop", 0.0))
    return {"worst_layer": worst.get("layer"), "worst_acc_drop": worst.get("acc_drop"), "rows": rows,
            "table": {"csv": str(csv_path), "markdown": str(md_path)}}


def _onnx(ctx: RunContext, models: dict[str, Any], cost: dict, test_batches) -> dict[str, Any]:
    from normapps.tasks.quantization.onnx_export import export_and_check

    out_dir = ctx.output_dir / "onnx"
    out_dir.mkdir(exist_ok=True)
    x = torch.cat([b[0] for b in test_batches])[:64]
    results = {}
    for name, m in models.items():
        net = deployable(m) if cost[name][1] is not None else m
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        results[name] = export_and_check(net, x, out_dir / f"{slug}.onnx")
        log.info("ONNX %s: %s", name, {k: v for k, v in results[name].items() if k != "ops"})
    return results
