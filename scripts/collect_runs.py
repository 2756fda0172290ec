"""Collect a Hydra multirun into one table: rows and columns are config keys, cells are metrics.

    python scripts/collect_runs.py <sweep dir> --rows model.norm --cols data.batch_size \
        --metric test/acc [--metric test/snd] [--out table.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf


def load_runs(sweep: Path) -> list[tuple[dict, dict]]:
    runs = []
    for summary_path in sorted(sweep.glob("*/summary.json")):
        cfg = OmegaConf.load(summary_path.parent / "config.yaml")
        runs.append((cfg, json.loads(summary_path.read_text())))
    if not runs:
        raise SystemExit(f"no */summary.json under {sweep}")
    return runs


def pivot(runs, rows: str, cols: str, metric: str, scale: float = 1.0) -> str:
    cells: dict = {}
    for cfg, summary in runs:
        r, c = OmegaConf.select(cfg, rows), OmegaConf.select(cfg, cols)
        value = summary["metrics"].get(metric)
        cells[(r, c)] = None if value is None else float(value) * scale
    row_keys = sorted({k[0] for k in cells}, key=str)
    col_keys = sorted({k[1] for k in cells}, key=lambda v: (-v if isinstance(v, (int, float)) else 0, str(v)))
    lines = [f"| {rows} \\ {cols} | " + " | ".join(str(c) for c in col_keys) + " |",
             "|---|" + "---|" * len(col_keys)]
    for r in row_keys:
        vals = [cells.get((r, c)) for c in col_keys]
        lines.append(f"| {r} | " + " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    return f"{metric}{' (x%g)' % scale if scale != 1 else ''}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--cols", required=True)
    ap.add_argument("--metric", action="append", required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply values (100 for percent)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = load_runs(args.sweep)
    text = "\n".join(pivot(runs, args.rows, args.cols, m, args.scale) for m in args.metric)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
