"""Collect a Hydra multirun into one table: rows and columns are config keys, cells are metrics.

    python scripts/collect_runs.py <sweep dir> --rows model.norm --cols data.batch_size \
        --metric test/acc --scale 100 [--metric test/snd --scale 1] [--out table.md] [--plot] [--wandb]

``--scale`` once multiplies every metric; once per ``--metric`` it scales each in order. A key
no run has or a metric no run logged is refused. Runs that
share a cell (seeds) are averaged; the header says how many. ``--plot`` also draws one panel per
metric, the metric against ``--cols`` with one line per ``--rows`` value (the mean; every run as
a point where a cell holds several; numeric columns largest first, as in the table, on a log
axis when they span 8x or more), and writes it beside the table: ``<out>.png`` with
``--out``, else ``<sweep dir>/collect_runs.png``. ``--wandb`` logs the table and the figure to an
offline W&B run under ``<sweep dir>/wandb`` (``wandb sync`` uploads it later).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf


DEFAULT_PLOT_NAME = "collect_runs"


def load_runs(sweep: Path) -> list[tuple[dict, dict]]:
    if not sweep.is_dir():
        raise SystemExit(f"collect_runs: sweep directory {sweep} does not exist")
    runs = []
    for summary_path in sorted(sweep.glob("*/summary.json")):
        cfg = OmegaConf.load(summary_path.parent / "config.yaml")
        runs.append((cfg, json.loads(summary_path.read_text())))
    if not runs:
        raise SystemExit(f"no */summary.json under {sweep}")
    return runs


def _col_order(value):
    """Numbers first, largest first (batch sizes read 64 -> 2 as in the study), then text."""
    return (0, -value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def collect_cells(runs, rows: str, cols: str, metric: str, scale: float = 1.0) -> dict:
    """``{(row value, col value): [metric * scale for each run in that cell]}`` (None: not logged)."""
    cells: dict = {}
    for cfg, summary in runs:
        key = (OmegaConf.select(cfg, rows), OmegaConf.select(cfg, cols))
        value = summary.get("metrics", {}).get(metric)
        if isinstance(value, str):  # summary.json writes a non-finite float as text
            value = float(value) if value.lstrip("-").lower() in ("nan", "inf") else None
        cells.setdefault(key, []).append(None if value is None else float(value) * scale)
    return cells


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None]
    return statistics.fmean(finite) if finite else None


def pivot(runs, rows: str, cols: str, metric: str, scale: float = 1.0) -> str:
    cells = collect_cells(runs, rows, cols, metric, scale)
    row_keys = sorted({k[0] for k in cells}, key=str)
    col_keys = sorted({k[1] for k in cells}, key=_col_order)
    lines = [f"| {rows} \\ {cols} | " + " | ".join(str(c) for c in col_keys) + " |",
             "|---|" + "---|" * len(col_keys)]
    for r in row_keys:
        vals = [_mean(cells.get((r, c), [])) for c in col_keys]
        lines.append(f"| {r} | " + " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    counts = {len(v) for v in cells.values()}
    note = "" if counts == {1} else f" (mean of {'/'.join(str(n) for n in sorted(counts))} runs per cell)"
    return f"{metric}{' (x%g)' % scale if scale != 1 else ''}{note}\n\n" + "\n".join(lines) + "\n"


def long_rows(runs, rows: str, cols: str, metrics: list[str], scales: list[float]) -> list[dict]:
    """One row per cell (the W&B table): both keys, the number of runs, each metric's mean."""
    per_metric = [collect_cells(runs, rows, cols, m, s) for m, s in zip(metrics, scales)]
    keys = sorted(per_metric[0], key=lambda k: (str(k[0]), _col_order(k[1])))
    return [{rows: r, cols: c, "runs": len(per_metric[0][(r, c)]),
             **{m: _mean(cells.get((r, c), [])) for m, cells in zip(metrics, per_metric)}}
            for r, c in keys]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_runs(runs, rows: str, cols: str, metrics: list[str], scales: list[float]):
    """One panel per metric: the metric against ``cols``, one line per ``rows`` value."""
    from normapps.platform.plots import new_figure

    fig = new_figure(width=5.2 * len(metrics), height=4.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    # One colour, marker and dash per row value in every panel, so lines that coincide (SND 0
    # for every batch-independent norm) stay visible.
    row_keys = sorted({OmegaConf.select(cfg, rows) for cfg, _ in runs}, key=str)
    style = {r: {"color": f"C{i % 10}", "marker": "osD^vP*X"[i % 8], "linestyle": ("-", "--", "-.", ":")[i % 4]}
             for i, r in enumerate(row_keys)}
    for ax, metric, scale in zip(axes, metrics, scales):
        cells = collect_cells(runs, rows, cols, metric, scale)
        col_keys = sorted({k[1] for k in cells}, key=_col_order)
        numeric = all(_is_number(c) for c in col_keys)
        # Numbers on a log axis when they span a factor of 8 or more (batch sizes 2..64);
        # anything else is categorical, in table order.
        log_x = numeric and min(col_keys) > 0 and max(col_keys) / min(col_keys) >= 8
        pos = ({c: float(c) for c in col_keys} if numeric else
               {c: float(i) for i, c in enumerate(col_keys)})
        plotted = 0
        for r in sorted({k[0] for k in cells}, key=str):
            xs = [c for c in sorted(col_keys, key=lambda c: pos[c]) if _mean(cells.get((r, c), [])) is not None]
            if not xs:  # e.g. SND of a network without a norm layer
                continue
            ax.plot([pos[c] for c in xs], [_mean(cells[(r, c)]) for c in xs], markersize=5,
                    markerfacecolor="none", label=str(r), **style[r])
            for c in xs:
                points = [v for v in cells[(r, c)] if v is not None]
                if len(points) > 1:
                    ax.scatter([pos[c]] * len(points), points, s=10, alpha=0.45, color=style[r]["color"])
            plotted += 1
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks([pos[c] for c in col_keys], [str(c) for c in col_keys])
        ax.minorticks_off()
        if numeric:
            ax.invert_xaxis()  # the table's order: largest first
        ax.set_xlabel(cols)
        ax.set_ylabel(metric + (f" (x{scale:g})" if scale != 1 else ""))
        ax.set_title(f"{metric} by {cols}", fontsize=10)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8, title=rows, title_fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no run logged {metric}", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def check_keys(runs, *, rows: str, cols: str, metrics: list[str]) -> None:
    """Refuse a config key no run has, or a metric no run logged (a typo would give an empty table)."""
    for option, key in (("--rows", rows), ("--cols", cols)):
        if all(OmegaConf.select(cfg, key) is None for cfg, _ in runs):
            raise SystemExit(f"collect_runs: {option} {key}: no run's config.yaml has this key")
    logged = sorted({m for _, summary in runs for m in summary.get("metrics", {})})
    for metric in metrics:
        if metric not in logged:
            raise SystemExit(f"collect_runs: --metric {metric}: no run logged it; logged: {', '.join(logged)}")


def scales_for(metrics: list[str], scales: list[float] | None) -> list[float]:
    scales = scales or [1.0]
    if len(scales) == 1:
        return scales * len(metrics)
    if len(scales) != len(metrics):
        raise SystemExit(f"collect_runs: --scale is given {len(scales)} times for {len(metrics)} --metric; "
                         "give it once (every metric) or once per --metric")
    return scales


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--cols", required=True)
    ap.add_argument("--metric", action="append", required=True)
    ap.add_argument("--scale", type=float, action="append",
                    help="multiply values (100 for percent); once for all metrics or once per --metric")
    ap.add_argument("--out", type=Path, help="write the tables (Markdown) here")
    ap.add_argument("--plot", action="store_true",
                    help="also write a figure beside the table (<out>.png, else <sweep>/collect_runs.png)")
    ap.add_argument("--wandb", action="store_true", help="log the tables and figure to an offline W&B run")
    args = ap.parse_args(argv)
    scales = scales_for(args.metric, args.scale)
    runs = load_runs(args.sweep)
    check_keys(runs, rows=args.rows, cols=args.cols, metrics=args.metric)
    text = "\n".join(pivot(runs, args.rows, args.cols, m, s) for m, s in zip(args.metric, scales))
    print(text)
    result: dict = {"runs": len(runs)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        result["table"] = str(args.out)
    if args.wandb:
        from normapps.platform.logging import script_wandb_loggers

        loggers = script_wandb_loggers(args.sweep, name=f"collect_runs {args.sweep.name}",
                                       group="studies", job_type="collect_runs")
    else:
        loggers = []
    if args.plot:
        from normapps.platform.plots import save_figure

        out_dir, name = (args.out.parent, args.out.stem) if args.out else (args.sweep, DEFAULT_PLOT_NAME)
        fig = plot_runs(runs, args.rows, args.cols, args.metric, scales)
        result["plot"] = str(save_figure(fig, out_dir, name, loggers=loggers, key=f"{name}_plot"))
        print(f"figure: {result['plot']}", file=sys.stderr)
    if loggers:
        from normapps.platform.logging import finish_loggers

        from normapps.platform.summary import log_table

        log_table(loggers, "collect_runs", long_rows(runs, args.rows, args.cols, args.metric, scales))
        finish_loggers(loggers)
    return result


if __name__ == "__main__":
    main()
