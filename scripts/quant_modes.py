"""Collect several task=quantization runs (one per mode) into one table and one figure.

    python train.py task=quantization hydra.run.dir=runs/q_ptq              # trains + ptq
    python train.py task=quantization quant.mode=qat source_ckpt=<ckpt> hydra.run.dir=runs/q_qat
    ...
    python scripts/quant_modes.py runs/q_ptq runs/q_qat runs/q_dfq runs/q_zeroq \
        --out quant_modes.md --plot quant_modes.png

Latencies of different runs are not comparable on a shared machine, so the table and the
figure use each run's own ratios: fp32 latency over int8 latency measured side by side in that
run (``latency/speedup_bs{1,64}``), its file-size ratio and its accuracy drop.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from normapps.platform.plots import new_figure, save_figure
from normapps.platform.summary import markdown_table


def collect(runs: list[Path]) -> list[dict]:
    """One row per run: its int8 recipe, fp32 and int8 accuracy, and its side-by-side ratios."""
    rows = []
    for run in runs:
        summary_path = run / "summary.json"
        if not summary_path.is_file():
            raise SystemExit(f"{run}: no summary.json (not a finished task=quantization run)")
        summary = json.loads(summary_path.read_text())
        if "report" not in summary or "metrics" not in summary:
            raise SystemExit(f"{summary_path} is not the summary of a task=quantization run")
        m = summary["metrics"]
        fp32, int8 = summary["report"][0], summary["report"][1]
        row = {
            "model": int8["model"], "acc_fp32": m["test/acc_fp32"], "acc_int8": m["test/acc_int8"],
            "drop_points": 100 * m["test/acc_drop"], "size_ratio": m["size/ratio"],
            "speedup_bs1": m["latency/speedup_bs1"], "speedup_bs64": m["latency/speedup_bs64"],
            "fp32_format_bs64": fp32.get("latency_format_bs64", ""),
            "run": run.name,
        }
        if "test/acc_int8_real_calibration" in m:
            row["acc_int8_real_calibration"] = m["test/acc_int8_real_calibration"]
        rows.append(row)
    return rows


def figure(rows: list[dict], *, title: str | None = None):
    """Accuracy (fp32 hatched behind each int8 bar) and each run's int8 speedup at batch 1 / 64."""
    fig = new_figure(width=12.0, height=1.4 + 0.5 * len(rows))
    acc_ax, bs1_ax, bs64_ax = fig.subplots(1, 3, sharey=True)
    y = list(range(len(rows)))[::-1]
    names = [r["model"] for r in rows]
    acc_ax.barh(y, [100 * r["acc_fp32"] for r in rows], color="none", edgecolor="tab:blue",
                hatch="//", label="fp32 (same run)")
    acc_ax.barh(y, [100 * r["acc_int8"] for r in rows], height=0.5, color="tab:orange", label="int8")
    for yy, r in zip(y, rows):
        acc_ax.text(100 * r["acc_int8"], yy, f" {100 * r['acc_int8']:.1f}", va="center", fontsize=8)
    lo = min(min(r["acc_int8"], r["acc_fp32"]) for r in rows)
    acc_ax.set_xlim(max(0.0, 100 * lo - 5), 100)
    acc_ax.set_yticks(y, names, fontsize=8)
    acc_ax.set_xlabel("test accuracy (%)")
    acc_ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 4 else -0.2), ncol=2)
    for ax, key, bs in ((bs1_ax, "speedup_bs1", 1), (bs64_ax, "speedup_bs64", 64)):
        vals = [r[key] for r in rows]
        ax.barh(y, vals, color="tab:orange")
        ax.axvline(1.0, color="tab:blue", lw=1, ls="--")
        for yy, v in zip(y, vals):
            ax.text(v, yy, f" {v:.2g}x", va="center", fontsize=8)
        ax.set_xlim(0, 1.25 * max(vals + [1.0]))
        ax.set_xlabel(f"int8 speedup over fp32 at batch {bs} (same run)")
    for ax in (acc_ax, bs1_ax, bs64_ax):
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories of task=quantization")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--plot", type=Path, default=None, help="write the figure (PNG) here")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    rows = collect(args.runs)
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.plot:
        save_figure(figure(rows, title=args.title), args.plot.parent, args.plot.stem)
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
