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
