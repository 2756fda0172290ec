"""The figure of docs/tasks/domain_adaptation.md: bundled digits clean, under the 19
corruptions at one severity, and under the four synthetic shifts.

    python scripts/da_targets_figure.py --out docs/images/da_targets.png --severity 5
"""
from __future__ import annotations

import argparse
from pathlib import Path

from normapps.data.classification import load_arrays
from normapps.data.corruptions import ALL_CORRUPTIONS, corrupt
from normapps.data.shifts import SYNTHETIC_SHIFTS, apply_shift
from normapps.platform.plots import new_figure, save_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/da_targets.png")
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--images", type=int, default=6)
    args = ap.parse_args()
    x, _ = load_arrays("digits", train=True, image_size=32, channels=3)
    x = x[:args.images]
    rows = [("clean", x)] + [(c, corrupt(x, c, args.severity)) for c in ALL_CORRUPTIONS]
    rows += [(s, apply_shift(x, s, seed=0)) for s in SYNTHETIC_SHIFTS]
    cols = 4
    per_col = -(-len(rows) // cols)
    fig = new_figure(width=3.0 * cols, height=0.62 * per_col)
    axes = fig.subplots(per_col, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (name, imgs) in enumerate(rows):
        ax = axes[i % per_col, i // per_col]
        strip = imgs.permute(2, 0, 3, 1).reshape(32, -1, 3).numpy()
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(name, fontsize=8, loc="left", pad=2)
    fig.suptitle(f"bundled digits: clean, the 15 + 4 corruptions at severity {args.severity}, the synthetic shifts",
                 fontsize=9)
    out = Path(args.out)
    print(save_figure(fig, out.parent, out.stem))


if __name__ == "__main__":
    main()
