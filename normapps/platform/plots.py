"""Figures for runs and studies: a matplotlib figure saved as PNG in the run directory and
logged to W&B when a logger is a WandbLogger.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so no global backend or
display is touched (works headless, in threads and under pytest)::

    fig = new_figure(width=8, height=4)
    ax = fig.subplots()
    ax.plot(steps, errors)
    path = save_figure(fig, ctx.output_dir, "errors", loggers=ctx.loggers)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


def new_figure(*, width: float = 8.0, height: float = 4.5, **kwargs: Any):
    """A pyplot-free matplotlib Figure of ``width`` x ``height`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kwargs)


def save_figure(fig, output_dir: str | Path, name: str, *, loggers: Sequence = (),
                key: str | None = None, dpi: int = 120, caption: str | None = None) -> Path:
    """Write ``<output_dir>/<name>.png`` and log it to every WandbLogger in ``loggers``
    under ``key`` (default ``name``); returns the PNG's path."""
    path = Path(output_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            kwargs: dict[str, Any] = {"key": key or name, "images": [str(path)]}
            if caption:
                kwargs["caption"] = [caption]
            lg.log_image(**kwargs)
    return path


def bar_panels(panels: Sequence[dict], *, ncols: int = 2, panel_width: float = 6.5,
               panel_height: float = 3.8, title: str | None = None):
    """A figure of grouped bar charts, one panel per entry of ``panels``.

    Each panel is a dict: ``title``, ``data`` (``{group: {series: value}}``, e.g. image size ->
    path -> images/s; series keep their first-seen order and colour across panels), optional
    ``notes`` (``{(group, series): text}`` written above the bar, e.g. a speed ratio),
    ``ylabel``, ``xlabel`` and ``log_y``; ``title`` goes above all panels.
    """
    import math

    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    panels = [p for p in panels if p.get("data")]
    if not panels:
        raise ValueError("bar_panels: nothing to plot")
    series: list = []
    for p in panels:
        for values in p["data"].values():
            series += [s for s in values if s not in series]
    colours = {s: f"C{i % 10}" for i, s in enumerate(series)}
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(width=panel_width * ncols, height=panel_height * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, p in zip(axes, panels):
        groups = list(p["data"])
        names = [s for s in series if any(s in p["data"][g] for g in groups)]
        width = 0.8 / len(names)
        for i, s in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * width for j, g in enumerate(groups) if s in p["data"][g]]
            gs = [g for g in groups if s in p["data"][g]]
            ax.bar(xs, [p["data"][g][s] for g in gs], width=width * 0.95, color=colours[s])
            for x, g in zip(xs, gs):
                note = (p.get("notes") or {}).get((g, s))
                if note:
                    ax.annotate(note, (x, p["data"][g][s]), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5, rotation=90)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        if p.get("log_y"):
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            # minor ticks: 2 and 5 of each decade, all of them when the axis spans less than 20x
            ax.yaxis.set_minor_formatter(FuncFormatter(
                lambda v, _, ax=ax: f"{v:g}" if f"{v:g}"[0] in "25" or ax.get_ylim()[1] < 20 * ax.get_ylim()[0]
                else ""))
        ax.margins(y=0.25)
        ax.set_title(p.get("title", ""), fontsize=10)
        ax.set_ylabel(p.get("ylabel", ""))
        ax.set_xlabel(p.get("xlabel", ""))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(handles=[Patch(color=colours[s], label=str(s)) for s in series], loc="lower center",
               ncol=min(len(series), 4), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    top = 1 - (0.35 / (panel_height * nrows + 0.6) if title else 0)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(series) / 4), 1, top))
    return fig
