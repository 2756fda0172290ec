"""Loss curves of a training run from its CSV log, and a strip of its logged validation grids.

    python scripts/training_curves.py <run dir> --out docs/images/adain_bundled
        [--metric train/loss --metric val/loss ...] [--grid-steps 500 2000 4000]

Reads ``<run dir>/csv/metrics.csv`` (``logger=csv``; Lightning's CSVLogger layout) and writes
``<out>_curves.png`` (one panel per metric, training metrics smoothed with a running median so
the trend shows through the per-batch noise) and, with ``--grid-steps``, ``<out>_grids.png``:
the run's ``images/val_samples_step*.png`` at those steps side by side with their step numbers.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from normapps.platform.plots import new_figure, save_figure


def read_metrics(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} from every metrics.csv under ``run_dir/csv`` (a resumed run
    may have several versions; rows are merged by step)."""
    # metrics.<n>.csv: the earlier parts of a resumed run (normapps.platform.logging)
    files = sorted((run_dir / "csv").rglob("metrics*.csv"))
    if not files:
        raise FileNotFoundError(f"no csv/metrics.csv under {run_dir} (train with logger=csv)")
    series: dict[str, dict[int, float]] = {}
    for path in files:
        with path.open() as fh:
            for row in csv.DictReader(fh):
                step = int(row["step"])
                for key, value in row.items():
                    if key in ("step", "epoch") or value in ("", None):
                        continue
                    series.setdefault(key, {})[step] = float(value)
    return {k: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for k, v in series.items()}


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    pad = window // 2
    padded = np.pad(values, pad, mode="edge")
    return np.array([np.median(padded[i:i + window]) for i in range(len(values))])


def plot_curves(metrics: dict, names: list[str], out: Path, *, smooth: int = 9) -> Path:
    names = [n for n in names if n in metrics]
    if not names:
        raise ValueError(f"none of the metrics is logged; logged: {sorted(metrics)}")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(width=4.2 * cols, height=3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        steps, values = metrics[name]
        if name.startswith("train/"):
            ax.plot(steps, values, color="0.8", lw=0.8, label="logged")
            ax.plot(steps, running_median(values, smooth), color="C0", lw=1.6,
                    label=f"running median ({smooth})")
            ax.legend(fontsize=7)
        else:
            ax.plot(steps, values, "o-", color="C1", lw=1.6, ms=4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return save_figure(fig, out.parent, out.name + "_curves")


def grid_strip(run_dir: Path, steps: list[int], out: Path, *, height: int = 480) -> Path:
    """The run's logged validation grids at ``steps``, scaled to one height, labelled."""
    tiles = []
    for step in steps:
        path = run_dir / "images" / f"val_samples_step{step:07d}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no validation grid logged at step {step}")
        img = Image.open(path).convert("RGB")
        img = img.resize((round(img.width * height / img.height), height))
        label = Image.new("RGB", (img.width, 22), "white")
        ImageDraw.Draw(label).text((6, 5), f"step {step}", fill="black")
        tile = Image.new("RGB", (img.width, height + 22), "white")
        tile.paste(label, (0, 0))
        tile.paste(img, (0, 22))
        tiles.append(tile)
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 8
    path = out.parent / f"{out.name}_grids.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="path prefix of the PNGs")
    ap.add_argument("--metric", action="append",
                    help="metrics to plot (default: every train/* and val/* the run logged)")
    ap.add_argument("--grid-steps", type=int, nargs="*", default=[])
    ap.add_argument("--smooth", type=int, default=9)
    args = ap.parse_args(argv)
    metrics = read_metrics(args.run_dir)
    names = args.metric or sorted(k for k in metrics if k.startswith(("train/", "val/")))
    print(plot_curves(metrics, names, args.out, smooth=args.smooth))
    if args.grid_steps:
        print(grid_strip(args.run_dir, args.grid_steps, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
