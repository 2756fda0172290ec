"""``python train.py task=domain_adaptation``: train the source classifier(s), then run every
adaptation method over the target stream(s) and write one results table and plot.

Flow: validate the methods, their options, the targets, the stream and the released files (and
load usps/mnist targets) before any training; fit the classification module on the source data
for each ``model.norm`` (a kind or a list: one source model per kind), or load ``source_ckpt``;
test it on the clean source test split; build the targets and the streams
(``data.target.stream``); for each model and method, adapt a fresh copy of the source network
along each stream and score every target by its own samples.

Outputs in the run directory: ``da_results.csv`` / ``.md`` (rows: method x normalization with
each method's protocol; columns: the targets in stream order and their mean; stream and batch
size in the Markdown header and as CSV columns), ``da_results.png`` (error per target per
method; the x axis is the stream order), all three also on W&B; for the one-stream protocols
(``continual``, ``mixed``) also ``da_stream.png``: error along the stream, per window of
batches, per method (the targets' spans shaded for ``continual``); ``summary.json`` with
``target_error`` (mean per method), ``metrics["target/<method>/error"]``,
``metrics["target/<method>/<norm>/error"]``, ``stream`` and ``batch_size``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from normapps.data.shifts import SYNTHETIC_SHIFTS, apply_shift
from normapps.norm import bn_modules
from normapps.platform.context import RunContext
from normapps.platform.hardware import trainer_device
from normapps.platform.measure import Duration
from normapps.platform.options import TaskOptions
from normapps.platform.plots import new_figure, save_figure
from normapps.platform.runner import load_or_fit
from normapps.platform.summary import markdown_table, publish_table
from normapps.tasks.domain_adaptation.common import error_rate, predict_logits
from normapps.tasks.domain_adaptation.methods import (
    LABELS, PROTOCOLS, adapt_and_predict, method_config, method_options, norm_kind_applicable,
    not_applicable, resolve_methods, validate_options,
)
from normapps.tasks.domain_adaptation.targets import (
    build_targets, dataset_tensors, load_dataset_shifts, parse_target_spec, target_streams,
)

log = logging.getLogger(__name__)

TABLE_NAME = "da_results"
STREAM_PLOT_NAME = "da_stream"
# A one-stream protocol's curve: at most this many points (windows of whole batches), each
# window at least this many samples (a smaller one is mostly sampling noise).
STREAM_PLOT_POINTS = 100
STREAM_PLOT_MIN_WINDOW = 32


def source_data_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg.data`` without the ``target`` block (the classification datamodule's config)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("target", None)
    return OmegaConf.create(data)


def resolve_extra_sources(spec) -> list[str]:
    names = list(spec or [])
    bad = [n for n in names if n not in SYNTHETIC_SHIFTS]
    if bad:
        raise ValueError(f"adapt.dsbn.extra_sources takes synthetic shifts ({', '.join(SYNTHETIC_SHIFTS)}), got {bad}")
    return names


def resolve_norms(cfg: DictConfig) -> list[str]:
    """``model.norm``: one kind or a list of kinds (one source model each)."""
    norm = cfg.model.get("norm", "batch")
    norms = [norm] if isinstance(norm, str) else list(norm)
    if not norms or len(set(norms)) != len(norms):
        raise ValueError(f"model.norm must be a norm kind or a list of distinct kinds, got {norms}")
    if cfg.get("source_ckpt") and len(norms) > 1:
        raise ValueError("source_ckpt is one source model: set model.norm to a single kind (or drop source_ckpt)")
    return norms


def pick_device(cfg: DictConfig) -> torch.device:
    return trainer_device(cfg.trainer.get("accelerator", "cpu"))


def train_source(cfg: DictConfig, ctx: RunContext, datamodule, *, norm: str,
                 stage: str | None) -> tuple[Any, dict, dict]:
    """The source classifier: fit + test (best checkpoint), or load ``source_ckpt`` (any
    checkpoint holding a classifier)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["norm"] = norm
    module, metrics, paths = load_or_fit(cfg, ctx, datamodule, network="classifier",
                                         model_cfg=OmegaConf.create(model_cfg), stage=stage)
    if cfg.get("source_ckpt"):
        datamodule.setup("test")
    return module, metrics, paths


def check_applicable(methods: list[str], norms: list[str], adapt_cfg: dict, *, has_ckpt: bool) -> None:
    """Refuse, before training, a run in which a method can adapt none of the models."""
    if has_ckpt:
        return
    for name in methods:
        opts = method_options(name, adapt_cfg)
        if not any(norm_kind_applicable(name, n, opts) for n in norms):
            hint = ("adapt.dsbn needs model.norm=batch" if name == "dsbn" else
                    f"set adapt.{name}.norms to include {norms[0]!r}")
            raise ValueError(f"adapt={name} cannot adapt a model.norm={norms[0] if len(norms) == 1 else norms} "
                             f"classifier ({hint})")


def stream_errors(logits: torch.Tensor, stream) -> dict[int, float]:
    """Error of each domain's samples within a stream."""
    wrong = (logits.argmax(1) != stream.labels).float()
    return {int(d): float(wrong[stream.domains == d].mean()) for d in stream.domains.unique()}


def windowed_errors(wrong: torch.Tensor, *, batch_size: int, max_points: int = STREAM_PLOT_POINTS,
                    min_window: int = STREAM_PLOT_MIN_WINDOW) -> tuple[list[float], list[float], int]:
    """Error of consecutive windows of whole batches along a stream: (centre of each window in
    batches, its error, batches per window). Windows are the smallest whole number of batches
    that holds ``min_window`` samples and gives at most ``max_points`` windows."""
    n_batches = -(-len(wrong) // batch_size)
    per_window = max(1, -(-n_batches // max_points), -(-min_window // batch_size))
    span = per_window * batch_size
    starts = list(range(0, len(wrong), span))
    if len(starts) > 1 and len(wrong) - starts[-1] < span / 2:
        starts.pop()  # a short tail joins the window before it
    centres, errors = [], []
    for start, end in zip(starts, starts[1:] + [len(wrong)]):
        centres.append((start + end) / 2 / batch_size)
        errors.append(float(wrong[start:end].float().mean()))
    return centres, errors, per_window


def plot_stream(ctx: RunContext, curves: dict[tuple[str, str], torch.Tensor], stream, target_names: list[str],
                *, kind: str, batch_size: int, norms: list[str]):
    """Error along a one-stream protocol (continual, mixed): one line per method, one panel
    per normalization; a continual stream's targets are shaded and named where they start."""
    panel_height = 4.2 if kind == "continual" else 3.4  # continual: room for the target names on top
    fig = new_figure(width=max(9.0, 0.6 * len(target_names) + 3), height=panel_height * len(norms))
    axes = fig.subplots(len(norms), 1, squeeze=False)[:, 0]
    n_batches = -(-len(stream.labels) // batch_size)
    per_window = 1
    for ax, norm in zip(axes, norms):
        if kind == "continual":
            domains = stream.domains.tolist()
            starts = [0] + [i for i in range(1, len(domains)) if domains[i] != domains[i - 1]]
            centres = []
            for k, start in enumerate(starts):
                end = starts[k + 1] if k + 1 < len(starts) else len(domains)
                if k % 2:
                    ax.axvspan(start / batch_size, end / batch_size, color="0.92", zorder=0)
                centres.append((start + end) / 2 / batch_size)
            top = ax.secondary_xaxis("top")
            top.set_xticks(centres, [target_names[domains[s]] for s in starts], rotation=60, ha="left",
                           fontsize=7)
        for (n, method), wrong in curves.items():
            if n != norm:
                continue
            xs, ys, per_window = windowed_errors(wrong, batch_size=batch_size)
            ax.plot(xs, [100 * y for y in ys], linewidth=1.2,
                    label=f"{method} ({100 * float(wrong.float().mean()):.1f})")
        ax.set_xlim(0, n_batches)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"stream step (batch of {batch_size}; one point per {per_window} batch"
                      f"{'es' if per_window > 1 else ''})")
        ax.set_ylabel("error in window (%)")
        ax.set_title(f"model.norm={norm}, stream={kind}: error along the stream", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="method (mean %)", title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    return save_figure(fig, ctx.output_dir, STREAM_PLOT_NAME, loggers=ctx.loggers,
                       key=f"{STREAM_PLOT_NAME}_plot")


def plot_results(ctx: RunContext, rows: list[dict], target_names: list[str], *, stream: str,
                 batch_size: int, norms: list[str]):
    fig = new_figure(width=max(8.0, 0.55 * len(target_names) + 3), height=3.6 * len(norms))
    axes = fig.subplots(len(norms), 1, squeeze=False)[:, 0]
    x = list(range(len(target_names)))
    for ax, norm in zip(axes, norms):
        for row in rows:
            if row["norm"] != norm or row["mean"] is None:
                continue
            ax.plot(x, [100 * row[t] for t in target_names], marker="o", markersize=3,
                    label=f"{row['method']} ({row['mean'] * 100:.1f})")
        ax.set_xticks(x, target_names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("target error (%)")
        # continual: the targets follow one another; mixed: shuffled together (da_stream.png
        # has the error along the stream for both)
        ax.set_xlabel({"continual": "target, in stream order",
                       "mixed": "target (shuffled into one stream)"}.get(stream, "target"))
        ax.set_title(f"model.norm={norm}, stream={stream}, batch size {batch_size}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, title="method (mean %)", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, ctx.output_dir, TABLE_NAME, loggers=ctx.loggers, key=f"{TABLE_NAME}_plot")


@dataclass(frozen=True)
class AdaptOptions(TaskOptions):
    """The run's adaptation options, checked together before anything is built: the methods (in
    table order), each method's predict options, DSBN's extra source shifts, the norms (one
    source model each) and the target spec (corruptions, severities, stream, released files)."""
    methods: list[str]
    method_options: dict[str, dict[str, Any]]
    extra_sources: list[str]
    norms: list[str]
    target: Any  # targets.TargetSpec


def validate(cfg: DictConfig) -> AdaptOptions:
    """train.py's preflight hook (``task.validate``); returns the checked :class:`AdaptOptions`."""
    adapt_cfg = OmegaConf.to_container(cfg.adapt, resolve=True)
    methods = resolve_methods(adapt_cfg.get("method", "all"))
    validate_options(methods, adapt_cfg)
    extra_sources = resolve_extra_sources(method_config(adapt_cfg, warn=False)["dsbn"]["extra_sources"])
    norms = resolve_norms(cfg)
    check_applicable(methods, norms, adapt_cfg, has_ckpt=bool(cfg.get("source_ckpt")))
    spec = parse_target_spec(OmegaConf.to_container(cfg.data.target, resolve=True))
    return AdaptOptions(methods=methods, method_options={m: method_options(m, adapt_cfg) for m in methods},
                        extra_sources=list(extra_sources), norms=norms, target=spec)


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    # --- checked once in train.py's preflight (a runner called without it checks now) ------
    opts = ctx.task_options(validate, AdaptOptions)
    methods, extra_sources, spec = opts.methods, opts.extra_sources, opts.target
    norms = list(opts.norms)  # a source_ckpt fills in the norm it was built with below
    batch_size = spec.batch_size
    data_cfg = source_data_cfg(cfg)
    loaded = load_dataset_shifts(spec, root=data_cfg.root, download=data_cfg.download,
                                 image_size=data_cfg.image_size, channels=data_cfg.channels)
    device = pick_device(cfg)
    options = opts.method_options

    # --- source model(s) ------------------------------------------------------------------
    datamodule = ctx.build_datamodule(data_cfg)
    models, metrics, paths_by_norm, clean = {}, {}, {}, {}
    for i, norm in enumerate(list(norms)):
        module, m, paths = train_source(cfg, ctx, datamodule, norm=norm,
                                        stage=norm if len(norms) > 1 else None)
        if cfg.get("source_ckpt"):  # the checkpoint says which norm it was built with
            norm = norms[i] = str(module.hparams.get("norm", norm))
        metrics.update(m if len(norms) == 1 else {f"{norm}/{k}": v for k, v in m.items()})
        net = module.net.eval().to(device)
        models[norm], paths_by_norm[norm] = net, paths
        x_test, y_test = dataset_tensors(datamodule.test_set)
        clean[norm] = error_rate(predict_logits(net, x_test, batch_size=256, device=device), y_test)
        log.info("source model (model.norm=%s): clean test error %.4f", norm, clean[norm])
    metrics["source/test/error"] = clean[norms[0]]
    for name in methods:  # a source_ckpt model is only known now: refuse before adapting
        reasons = [not_applicable(name, models[n], options[name]) for n in norms]
        if all(reasons):
            raise ValueError(f"adapt={name} cannot adapt the source model: {reasons[0]}")

    sources = None
    if {"dsbn", "eata"} & set(methods):
        x_train, y_train = dataset_tensors(datamodule.train_set)
        sources = [(x_train, y_train)] + [
            (apply_shift(x_train, s, seed=spec.seed + 1, rotate_degrees=spec.rotate_degrees,
                         scale_factor=spec.scale_factor), y_train) for s in extra_sources]

    # --- targets and streams ----------------------------------------------------------------
    x_test, y_test = dataset_tensors(datamodule.test_set)
    targets = build_targets(spec, x_test, y_test, loaded=loaded, image_size=int(data_cfg.image_size),
                            channels=int(data_cfg.channels), num_classes=int(cfg.data.num_classes))
    streams = target_streams(spec, targets)
    names = [t.name for t in targets]
    log.info("%d targets, stream=%s (%d stream(s)), batch size %d", len(targets), spec.stream,
             len(streams), batch_size)

    # --- every method on every model along every stream ------------------------------------
    rows, seconds = [], {m: 0.0 for m in methods}
    curves: dict[tuple[str, str], torch.Tensor] = {}  # (norm, method) -> wrong per sample, stream order
    for norm in norms:
        net = models[norm]
        for name in methods:
            row: dict[str, Any] = {"method": name, "norm": norm, "protocol": PROTOCOLS[name],
                                   "stream": spec.stream, "batch_size": batch_size}
            reason = not_applicable(name, net, options[name])
            if reason is None and name in ("test_bn", "adabn", "prior_bn") and not bn_modules(net):
                log.info("model.norm=%s has no BatchNorm layer: %s equals none", norm, name)
            if reason is not None:
                log.warning("%s on model.norm=%s: n/a (%s)", name, norm, reason)
                row.update({t: None for t in names} | {"mean": None})
                rows.append(row)
                continue
            spent = Duration.started(device=device)
            errors: dict[str, float] = {}
            for stream in streams:
                logits = adapt_and_predict(name, net, stream.images, batch_size=batch_size,
                                           options=options[name], sources=sources,
                                           seed=int(cfg.seed), device=device)
                errors.update({names[d]: e for d, e in stream_errors(logits, stream).items()})
                if len(streams) == 1:
                    curves[(norm, name)] = (logits.argmax(1) != stream.labels).cpu()
            seconds[name] += spent.stop()
            row.update({t: errors[t] for t in names})
            row["mean"] = sum(errors.values()) / len(errors)
            log.info("%s / %s: mean target error %.4f", name, norm, row["mean"])
            rows.append(row)

    # --- table, plot, metrics -----------------------------------------------------------------
    header = (f"Target error, stream={spec.stream}, batch size {batch_size}, "
              f"{'released data ' + spec.released_dir if spec.released_dir else 'generated targets'}; "
              f"protocol: online = predicted while adapting in stream order, offline = adapted on "
              f"the whole target first, source = no adaptation\n\n")
    csv_path, md_path = publish_table(ctx.output_dir, ctx.loggers, TABLE_NAME, rows)
    md_rows = [{k: ("n/a" if v is None else v) for k, v in r.items() if k not in ("stream", "batch_size")}
               for r in rows]
    md_path.write_text(header + markdown_table(md_rows))
    log.info("%s%s", header, markdown_table(md_rows))
    plot_path = plot_results(ctx, rows, names, stream=spec.stream, batch_size=batch_size, norms=norms)
    stream_plot = None
    if spec.stream in ("continual", "mixed") and curves:
        stream_plot = plot_stream(ctx, curves, streams[0], names, kind=spec.stream,
                                  batch_size=batch_size, norms=norms)
    log.info("results: %s, %s and %s", csv_path, md_path, plot_path)

    by_norm = {n: {r["method"]: r["mean"] for r in rows if r["norm"] == n and r["mean"] is not None}
               for n in norms}
    means = {}
    for name in methods:
        vals = [by_norm[n][name] for n in norms if name in by_norm[n]]
        if vals:
            means[name] = sum(vals) / len(vals)
    new_metrics = {f"target/{m}/error": v for m, v in means.items()}
    new_metrics.update({f"target/{m}/{n}/error": v for n, d in by_norm.items() for m, v in d.items()})
    for lg in ctx.loggers:
        lg.log_metrics(new_metrics)
        if hasattr(lg, "save"):
            lg.save()
    metrics.update(new_metrics)
    first = paths_by_norm[norms[0]]
    return {
        "metrics": metrics,
        **first,
        "target_error": means,
        "target_error_by_norm": by_norm,
        "stream": spec.stream,
        "batch_size": batch_size,
        "methods": {m: {"label": LABELS[m], "protocol": PROTOCOLS[m]} for m in methods},
        "source_clean_error": clean[norms[0]],
        "source_clean_error_by_norm": clean,
        "checkpoints_by_norm": paths_by_norm,
        "targets": names,
        "results_rows": rows,
        "adapt_seconds": seconds,
        "results_table": {"csv": str(csv_path), "markdown": str(md_path), "plot": str(plot_path),
                          "stream_plot": None if stream_plot is None else str(stream_plot)},
    }
