"""The slimming run's figure: test accuracy against the fraction of BN channels kept and against
the measured latency of each stage (trained, sparsified, pruned, fine-tuned), beside its table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from normapps.platform.plots import new_figure, save_figure

FIGURE_NAME = "slimming"


def stage_figure(rows: Sequence[dict[str, Any]]):
    """Two panels from the stage table's rows (``stage``, ``test_acc``, ``channels_kept`` and
    ``latency_ms_bs<b>`` columns): accuracy vs channels kept, accuracy vs latency per batch size."""
    sizes = sorted(int(k[len("latency_ms_bs"):]) for k in rows[0] if k.startswith("latency_ms_bs"))
    fig = new_figure(width=10.0, height=4.0)
    left, right = fig.subplots(1, 2)
    acc = [100 * r["test_acc"] for r in rows]
    kept = [100 * r["channels_kept"] for r in rows]
    left.plot(kept, acc, color="0.7", zorder=1)
    for r, x, y in zip(rows, kept, acc):
        left.scatter([x], [y], zorder=2, s=40)
        left.annotate(r["stage"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.set_xlabel("BN channels kept (%)")
    left.set_ylabel("test accuracy (%)")
    left.set_title("accuracy vs channels kept")
    left.invert_xaxis()  # pruning moves right
    for b, marker in zip(sizes, "os^D"):
        lat = [r[f"latency_ms_bs{b}"] for r in rows]
        right.plot(lat, acc, marker=marker, label=f"batch {b}")
        for r, x, y in zip(rows, lat, acc):
            right.annotate(r["stage"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    right.set_xscale("log")
    right.set_xlabel(f"latency, ms ({rows[0].get('latency_model', 'deployable model')}, log scale)")
    right.set_ylabel("test accuracy (%)")
    right.set_title("accuracy vs latency")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_stage_figure(rows: Sequence[dict[str, Any]], output_dir: str | Path, *, loggers: Sequence = ()) -> Path:
    return save_figure(stage_figure(rows), output_dir, FIGURE_NAME, loggers=loggers,
                       key="slimming/stages_plot")
