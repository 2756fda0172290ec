"""Generator and discriminator training-step throughput per normalization.

    python scripts/bench_gan.py [--device auto|cpu|cuda] [--arch resnet] [--batch 64] [--repeats 10]

A D step is what GANModule does per real batch (G forward without grad, D on real and fake,
backward, Adam step); a G step is G forward, D forward, backward through both, Adam step on G.
Each D norm is timed with g_norm=batch, each G norm with d_norm=spectral. Prints a Markdown
table (median ms per step and images/s) and writes JSON next to it with --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from normapps.platform.inference import resolve_device
from normapps.platform.measure import round_robin
from normapps.tasks.gan.discriminators import D_NORMS, build_discriminator
from normapps.tasks.gan.generators import G_NORMS, build_generator
from normapps.tasks.gan.losses import d_loss, g_loss


def make_steps(g, d, *, batch: int, z_dim: int, k: int, device, precision: str):
    """The (D step, G step) closures GANModule runs, on fixed inputs."""
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.9))
    x = torch.rand(batch, 3, g.image_size, g.image_size, device=device) * 2 - 1
    y = torch.randint(0, k, (batch,), device=device) if k else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def d_step():
        with autocast:
            with torch.no_grad():
                fake = g(torch.randn(batch, z_dim, device=device), y)
            loss = d_loss("hinge", d(x, y), d(fake, y))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    def g_step():
        with autocast:
            loss = g_loss("hinge", d(g(torch.randn(batch, z_dim, device=device), y), y))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return d_step, g_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:<index>")
    ap.add_argument("--arch", default="resnet", choices=["resnet", "dcgan"])
    ap.add_argument("--g-width", type=int, default=256)
    ap.add_argument("--d-width", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="32", choices=["32", "bf16"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)  # the platform's device choice (infer.py's too)
    except ValueError as err:
        ap.error(str(err))
    z_dim, k = 128, 10
    configs = [("d_norm", n, "batch", n) for n in D_NORMS] + [("g_norm", n, n, "spectral") for n in G_NORMS]
    steps = []
    for axis, name, g_norm, d_norm in configs:
        torch.manual_seed(0)
        cond = g_norm == "cond_batch"
        g = build_generator(args.arch, z_dim=z_dim, num_classes=k if cond else 0, norm=g_norm,
                            image_size=args.image_size, channels=3, width=args.g_width).to(device).train()
        d = build_discriminator(args.arch, norm=d_norm, num_classes=k if cond else 0, image_size=args.image_size,
                                channels=3, width=args.d_width).to(device).train()
        steps.append(make_steps(g, d, batch=args.batch, z_dim=z_dim, k=k if cond else 0, device=device,
                                precision=args.precision))
    # The platform's round-robin timer over every configuration's D and G step (warm-up first,
    # CUDA synchronized), so load that drifts during the run (shared machines) affects every
    # row alike instead of whichever ran last.
    candidates = {(i, part): fn for i, pair in enumerate(steps) for part, fn in zip("dg", pair)}
    timing = round_robin(candidates, rounds=args.repeats, warmup=args.warmup, device=device)
    rows = []
    for i, (axis, name, g_norm, _) in enumerate(configs):
        md, mg = timing[(i, "d")].median_s, timing[(i, "g")].median_s
        rows.append({"varied": axis, "norm": name + (" (+projection D)" if g_norm == "cond_batch" else ""),
                     "d_step_ms": 1000 * md, "d_step_img_s": args.batch / md,
                     "g_step_ms": 1000 * mg, "g_step_img_s": args.batch / mg})
        print(json.dumps(rows[-1]), flush=True)
    base = {r["varied"]: r for r in rows if r["norm"] in ("none",)}
    head = (f"device={device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
            f"arch={args.arch}, {args.image_size}px, batch {args.batch}, precision {args.precision}, "
            f"torch threads {torch.get_num_threads()}, median of {args.repeats} round-robin repeats")
    lines = [head, "", "| varied | norm | D step ms | D img/s | G step ms | G img/s | varied step vs none |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = base.get(r["varied"])
        # D norms change the D step most, G norms the G step: compare the step that varies.
        key = "d_step_ms" if r["varied"] == "d_norm" else "g_step_ms"
        rel = f"{r[key] / ref[key]:.2f}x ({key[0].upper()})" if ref else ""
        lines.append(f"| {r['varied']} | {r['norm']} | {r['d_step_ms']:.1f} | {r['d_step_img_s']:.0f} | "
                     f"{r['g_step_ms']:.1f} | {r['g_step_img_s']:.0f} | {rel} |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"setup": head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
