"""Re-measure a slimming run's stage latencies side by side, from its checkpoints alone.

    python scripts/bench_slimming.py <run dir> [--threads 1 2] [--rounds 7] [--repeats 5]

Every stage checkpoint listed in ``<run dir>/summary.json`` is rebuilt with weights_only loading
(the pruned ones from their recorded widths), BN folded, then all are timed in turn, round-robin, and the
median per stage is printed as a Markdown table with the speedup over the first stage. OpenMP
threads are set to wait passively (the script re-executes itself once to do so), since spinning
threads on a shared, oversubscribed CPU inflate multi-threaded timings many-fold.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if os.environ.get("OMP_WAIT_POLICY") is None:  # must be set before the OpenMP runtime loads
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch

from normapps.platform.checkpoint import load_module
from normapps.platform.profiling import count_flops, count_parameters, deployment_latency
from normapps.platform.summary import markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--format", choices=("best", "nchw", "channels_last"), default="best",
                    help="memory format of the timed (BN-folded) models; best: both, the faster kept")
    args = ap.parse_args()
    summary_path = args.run_dir / "summary.json"
    if not summary_path.is_file():
        sys.exit(f"{summary_path} not found: pass the run directory of a `train.py task=slimming` run")
    summary = json.loads(summary_path.read_text())
    if summary.get("task") != "slimming":
        sys.exit(f"{summary_path} is from task {summary.get('task')!r}, not slimming")
    models, size = {}, 32
    for stage, paths in summary["stage_checkpoints"].items():
        module = load_module(paths["best_checkpoint"] if stage != "sparsified" else paths["last_checkpoint"],
                             expected_task="slimming")
        models[stage], size = module.net.eval(), module.image_size
        in_ch = module.hparams.in_channels
    shape = (in_ch, size, size)
    rows = []
    for threads in args.threads:
        timing = deployment_latency(models, shape, batch_sizes=args.batch_sizes, rounds=args.rounds,
                                    repeats=args.repeats, threads=threads,
                                    channels_last={"best": None, "nchw": False, "channels_last": True}[args.format],
                                    reference=next(iter(models)))  # speedup_bs<b>: median of per-round ratios
        for stage, t in timing.items():
            rows.append({"threads": threads, "stage": stage, "params": count_parameters(models[stage]),
                         "flops": count_flops(models[stage], torch.randn(1, *shape)), **t})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {args.run_dir}: median of {args.rounds} rounds x {args.repeats} calls, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}, torch {torch.__version__}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
