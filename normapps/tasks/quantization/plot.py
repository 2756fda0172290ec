"""The quantization report's figure: accuracy and latency (batch 1 and 64) of every model in the
report, float and int8 side by side (one bar per model), beside quantization_report.md."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from normapps.platform.plots import new_figure, save_figure


def _color(name: str) -> str:
    return "tab:blue" if name.startswith(("fp32", "float", "pruned")) and "int8" not in name else "tab:orange"


def report_figure(rows: Sequence[dict[str, Any]], *, name_key: str = "model", title: str | None = None):
    """Accuracy (%) and latency per batch size, one horizontal bar per row; float rows blue,
    int8 rows orange. Rows need ``accuracy`` and ``latency_ms_bs<b>`` columns."""
    sizes = sorted(int(k[len("latency_ms_bs"):]) for k in rows[0] if k.startswith("latency_ms_bs"))
    names = [str(r[name_key]) for r in rows]
    colors = [_color(str(r.get("recipe", n))) for r, n in zip(rows, names)]
    fig = new_figure(width=4.0 + 3.2 * (1 + len(sizes)), height=1.2 + 0.45 * len(rows))
    axes = fig.subplots(1, 1 + len(sizes), sharey=True)
    ypos = list(range(len(rows)))[::-1]
    acc = [100 * r["accuracy"] for r in rows]
    axes[0].barh(ypos, acc, color=colors)
    lo = min(acc)
    axes[0].set_xlim(max(0.0, lo - 5), 100)
    for y, a in zip(ypos, acc):
        axes[0].text(a, y, f" {a:.1f}", va="center", fontsize=8)
    axes[0].set_yticks(ypos, names, fontsize=8)
    axes[0].set_xlabel("test accuracy (%)")
    for ax, b in zip(axes[1:], sizes):
        lat = [r[f"latency_ms_bs{b}"] for r in rows]
        ax.barh(ypos, lat, color=colors)
        for y, v in zip(ypos, lat):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=8)
        ax.set_xlabel(f"latency at batch {b} (ms)")
        ax.set_xlim(0, 1.25 * max(lat))
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_report_figure(rows: Sequence[dict[str, Any]], output_dir: str | Path, name: str, *,
                       loggers: Sequence = (), name_key: str = "model", title: str | None = None) -> Path:
    return save_figure(report_figure(rows, name_key=name_key, title=title), output_dir, name,
                       loggers=loggers, key=f"quantization/{name}_plot")
