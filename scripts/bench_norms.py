"""Forward+backward time of every normapps.norm kind against PyTorch's own layer, side by side.

    python scripts/bench_norms.py [--batch 32 --channels 64 --size 32 --repeats 20]

Prints a Markdown table (median ms per forward+backward, ratio to nn.BatchNorm2d), as in
docs/results.md. Conditional kinds get their condition input; channels_last is measured for batch norm.
"""
from __future__ import annotations

import argparse
import functools
import platform

import torch
from torch import nn

from normapps.norm import build_norm
from normapps.platform.measure import round_robin


def fwd_bwd(layer: nn.Module, x: torch.Tensor, extra=()) -> None:
    x.grad = None
    layer(x, *extra).float().square().mean().backward()


def time_round_robin(cases, repeats: int) -> list[float]:
    """Median ms per case (the platform's round-robin timer: 3 warm-up calls each, then every
    case once per round, so drifting load hits all alike)."""
    for _, layer, _, _ in cases:
        layer.train()
    calls = {i: functools.partial(fwd_bwd, layer, x, extra) for i, (_, layer, x, extra) in enumerate(cases)}
    timing = round_robin(calls, rounds=repeats, warmup=3)
    return [timing[i].median_ms for i in calls]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    n, c, s = args.batch, args.channels, args.size
    torch.manual_seed(0)
    x = torch.randn(n, c, s, s, requires_grad=True)
    y = torch.randint(0, 10, (n,))
    z = torch.randn(n, 16)
    cases = [
        ("torch nn.BatchNorm2d", nn.BatchNorm2d(c), ()),
        ("batch", build_norm("batch", c), ()),
        ("batch (channels_last)", build_norm("batch", c), "cl"),
        ("instance", build_norm("instance", c), ()),
        ("group (32)", build_norm("group", c, num_groups=32), ()),
        ("layer", build_norm("layer", c), ()),
        ("batch_whiten (group 16)", build_norm("batch_whiten", c, group_size=16), ()),
        ("iter_norm (group 16, T=5)", build_norm("iter_norm", c, group_size=16), ()),
        ("cond_batch", build_norm("cond_batch", c, num_classes=10), (y,)),
        ("cond_instance", build_norm("cond_instance", c, num_styles=10), (y,)),
        ("self_mod", build_norm("self_mod", c, z_dim=16), (z,)),
        ("domain_batch (2 domains, mixed)", build_norm("domain_batch", c, num_domains=2), (y % 2,)),
    ]
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    runs = [(name, layer, x_cl if extra == "cl" else x, () if extra == "cl" else extra)
            for name, layer, extra in cases]
    ms = time_round_robin(runs, args.repeats)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, input {n}x{c}x{s}x{s} fp32, "
          f"median of {args.repeats} round-robin repeats\n")
    print("| kind | ms (fwd+bwd, median) | x nn.BatchNorm2d |\n|---|---|---|")
    for (name, *_), t in zip(runs, ms):
        print(f"| {name} | {t:.2f} | {t / ms[0]:.2f} |")


if __name__ == "__main__":
    main()
