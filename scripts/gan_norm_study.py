"""Aggregate the GAN D-normalization multirun into one table.

    python scripts/gan_norm_study.py outputs/gan_norm_study [more sweep dirs] [--out table.md]
    python scripts/gan_norm_study.py sweep_seed1 sweep_seed2 ... --by-norm   # mean over seeds
    python scripts/gan_norm_study.py <sweeps> --grid samples.png             # last grids, norm x seed
    python scripts/gan_norm_study.py <sweeps> --by-norm --plot study.png     # fid per norm, seeds as points

Reads each job's config.yaml and summary.json (final evaluation of the EMA generator) and the
CSV log (the best evaluation during training), and prints a Markdown table sorted by final
fid_local (or fid when Inception weights were used).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

import yaml


def _fid_key(metrics: dict) -> str:
    return "val/fid" if "val/fid" in metrics else "val/fid_local"


def _best_logged(run: Path, key: str) -> float:
    best = math.inf
    for path in run.glob("csv/**/metrics.csv"):
        with path.open() as fh:
            for row in csv.DictReader(fh):
                if row.get(key):
                    best = min(best, float(row[key]))
    return best


def collect(sweep: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(sweep.glob("*/summary.json")):
        run = summary_path.parent
        summary = json.loads(summary_path.read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        m = summary["metrics"]
        key = _fid_key(m)
        suffix = key.split("fid", 1)[1]
        rows.append({
            "d_norm": cfg["model"]["d_norm"],
            "seed": cfg.get("seed"),
            "g_norm": cfg["model"]["g_norm"],
            "loss": cfg["model"]["loss"],
            "g_steps": summary.get("g_steps"),
            f"fid{suffix} (final)": m.get(key, math.nan),
            f"fid{suffix} (best eval)": min(_best_logged(run, key), m.get(key, math.inf)),
            f"kid{suffix}": m.get(f"val/kid{suffix}", math.nan),
            f"is{suffix}": m.get(f"val/is{suffix}", math.nan),
            "D(real)": m.get("val/d_real", math.nan),
            "D(fake)": m.get("val/d_fake", math.nan),
            "max sigma(D)": m.get("val/sigma_max", math.nan),
            "run": f"{run.parent.name}/{run.name}",
        })
    rows.sort(key=lambda r: next(v for k, v in r.items() if k.startswith("fid") and "final" in k))
    return rows


def by_norm(rows: list[dict]) -> list[dict]:
    """One row per D norm: mean, sample std and range over the runs (seeds) that share it."""
    fid = next(k for k in rows[0] if k.startswith("fid") and "final" in k)
    kid = next(k for k in rows[0] if k.startswith("kid"))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["d_norm"], []).append(r)
    out = []
    for norm, runs in groups.items():
        runs = sorted(runs, key=lambda r: str(r["seed"]))
        fids = [r[fid] for r in runs]
        kids = [r[kid] for r in runs]
        out.append({
            "d_norm": norm,
            "seeds": len(runs),
            f"{fid} mean": statistics.fmean(fids),
            f"{fid} std": statistics.stdev(fids) if len(fids) > 1 else math.nan,
            f"{fid} per seed": " / ".join(f"{r['seed']}: {v:.0f}" for r, v in zip(runs, fids)),
            f"{kid} mean": statistics.fmean(kids),
            "max sigma(D) mean": statistics.fmean(r["max sigma(D)"] for r in runs),
        })
    out.sort(key=lambda r: r[f"{fid} mean"])
    return out


def sample_grid(sweeps: list[Path], out: Path) -> Path:
    """One picture: the last evaluation's sample grid of every run, a row per D norm, a column
    per seed, with a label above each tile."""
    from PIL import Image, ImageDraw

    tiles: dict[tuple[str, str], Path] = {}
    for sweep in sweeps:
        for summary_path in sorted(sweep.glob("*/summary.json")):
            run = summary_path.parent
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            grids = sorted((run / "images").glob("val_samples_*.png"))
            if grids:
                tiles[(cfg["model"]["d_norm"], str(cfg.get("seed")))] = grids[-1]
    if not tiles:
        raise SystemExit(f"no sample grids under {sweeps}")
    norms = sorted({k[0] for k in tiles})
    seeds = sorted({k[1] for k in tiles}, key=lambda v: (len(v), v))
    first = Image.open(next(iter(tiles.values())))
    w, h, pad = first.width, first.height, 14
    canvas = Image.new("RGB", (w * len(seeds), (h + pad) * len(norms)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, norm in enumerate(norms):
        for j, seed in enumerate(seeds):
            if (norm, seed) in tiles:
                canvas.paste(Image.open(tiles[(norm, seed)]).convert("RGB"), (j * w, i * (h + pad) + pad))
            draw.text((j * w + 2, i * (h + pad)), f"d_norm={norm} seed={seed}", fill="black")
    canvas.save(out)
    return out


def plot(rows: list[dict], out: Path) -> Path:
    """fid_local (or fid) of the final evaluation per D norm: one point per run (seed), labelled
    with its seed, the mean as a bar; a log axis, since collapsed runs sit 10-100x above."""
    from normapps.platform.plots import new_figure, save_figure

    fid = next(k for k in rows[0] if k.startswith("fid") and "final" in k)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["d_norm"], []).append(r)
    order = sorted(groups, key=lambda n: statistics.fmean(r[fid] for r in groups[n]))
    fig = new_figure(width=1.6 + 1.3 * len(order), height=4.2)
    ax = fig.subplots()
    for i, norm in enumerate(order):
        runs = sorted(groups[norm], key=lambda r: str(r["seed"]))
        mean = statistics.fmean(r[fid] for r in runs)
        ax.bar(i, mean, width=0.6, color="0.85", edgecolor="0.5", zorder=1)
        offsets = [(j - (len(runs) - 1) / 2) * 0.12 for j in range(len(runs))]
        ax.scatter([i + o for o in offsets], [r[fid] for r in runs], zorder=3, s=30, color="tab:blue")
        for o, r in zip(offsets, runs):
            ax.annotate(str(r["seed"]), (i + o, r[fid]), textcoords="offset points", xytext=(4, 0),
                        fontsize=7, va="center")
    ax.set_xticks(range(len(order)), [f"d_norm={n}" for n in order], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(f"{fid.split(' ')[0]} after the last G step (log; lower is better)")
    ax.set_title("GAN D-normalization study: bars = mean over seeds, points = seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, out.parent, out.stem)


def to_markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, nargs="+", help="the multirun's hydra.sweep.dir (or several)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--by-norm", action="store_true", help="aggregate runs (seeds) per D norm")
    ap.add_argument("--plot", type=Path, default=None,
                    help="also write a PNG of the final fid per D norm, one point per seed")
    ap.add_argument("--grid", type=Path, default=None,
                    help="also write one PNG with every run's last sample grid (rows: D norm, columns: seed)")
    args = ap.parse_args()
    rows = [r for sweep in args.sweep for r in collect(sweep)]
    rows.sort(key=lambda r: next(v for k, v in r.items() if k.startswith("fid") and "final" in k))
    if not rows:
        raise SystemExit(f"no finished runs (summary.json) under {args.sweep}")
    table = to_markdown(by_norm(rows) if args.by_norm else rows)
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.grid:
        print(f"sample grid: {sample_grid(args.sweep, args.grid)}")
    if args.plot:
        print(f"figure: {plot(rows, args.plot)}")


if __name__ == "__main__":
    main()
