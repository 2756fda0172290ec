"""Style-transfer throughput: fp32 NCHW vs channels_last vs bf16 autocast, side by side.

    python scripts/bench_style.py                      # CPU: 256 and 512, batch 1
    python scripts/bench_style.py --device cuda --batch 32 --sizes 256 512
    python scripts/bench_style.py --4096               # peak memory of a 4096x4096 stylization
    python scripts/bench_style.py --methods cin arbitrary_cin --sizes 384 512 1024 --threads 1
                                   # CIN methods vs onnxruntime on the same pretrained networks

All paths at one size are timed interleaved, round after round (the platform's round-robin
timer, ``normapps.platform.measure.round_robin``); ``speedup_vs_fp32_nchw`` is the median of the
per-round ratios. Images/s counts content encode + AdaIN + decode (the style is encoded once, outside the timing,
as in the paper). Fidelity: PSNR of each fast path against fp32 NCHW on the same inputs (peak 1,
outputs clamped to [0, 1] as saved). Weights: the shipped decoder and its packaged VGG-16 when
installed (fidelity depends on them, speed does not), else random (He init). Training: optimizer steps/s of the task's LightningModule step (batch 4, 128 px crops).

With ``--out results.json`` the results go there as JSON and a figure beside it,
``results.png``: images/s per path and size (each bar says its speed against the reference
path measured in the same run, the number to compare on a busy machine), one panel per method (and allocator for the CIN
methods), training steps/s in a panel of its own. ``--wandb`` also logs the figure to an
offline W&B run under the output's folder.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import resource
import time
import warnings
from pathlib import Path

import torch

from normapps.platform.inference import resolve_device
from normapps.platform.measure import duration, round_robin
from normapps.tasks.style_transfer.decoder import Decoder
from normapps.tasks.style_transfer.int8_calibration import square_photo as photo
from normapps.tasks.style_transfer.stylize import Stylizer
from normapps.tasks.style_transfer.vgg import VGGEncoder


def _bench_cin():
    """scripts/bench_cin.py, imported as ``bench_cin`` when this file runs as a script (its folder
    is on sys.path) and as ``scripts.bench_cin`` when the tests import this module."""
    try:
        import bench_cin
    except ImportError:
        from scripts import bench_cin
    return bench_cin

MODES = {  # name: (precision, channels_last, torch.compile)
    "fp32 NCHW": ("fp32", False, False),
    "fp32 channels_last": ("fp32", True, False),
    "bf16 autocast NCHW": ("bf16", False, False),
    "bf16 autocast channels_last": ("bf16", True, False),
    "fp32 channels_last compiled": ("fp32", True, True),
    "bf16 channels_last compiled": ("bf16", True, True),
    "int8 channels_last": ("int8", True, False),
}
# What precision=auto resolves to (Stylizer.precision_name) -> the mode that measures it.
AUTO_MODE = {"int8": "int8 channels_last", "bfloat16": "bf16 autocast channels_last",
             "float16": "bf16 autocast channels_last", "float32": "fp32 channels_last"}


def he_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return model


def bench_networks(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """The shipped decoder and its packaged VGG-16 when they are installed (speed does not
    depend on the weights, but fidelity does: int8 measured 38 dB against fp32 with random
    weights and 34-37 dB with the trained ones), else He-initialised networks of ``arch``."""
    if arch == "vgg16":
        from normapps.tasks.style_transfer.infer import load_shipped_networks

        try:
            enc, dec, _ = load_shipped_networks()
            return enc.float().eval(), dec.float().eval(), "shipped decoder + packaged VGG-16"
        except (ValueError, FileNotFoundError) as err:
            print(json.dumps({"note": f"shipped weights unavailable ({err}); random weights, "
                                      f"so the PSNR column says little"}), flush=True)
    return he_init(VGGEncoder(arch), 0), he_init(Decoder(), 1), f"random (He init) {arch}"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def bench_inference(sizes, batch, reps, device, no_compile=False, arch="vgg16") -> list[dict]:
    """Every path at one size is timed by the platform's round-robin timer against fp32 NCHW
    (each path its own copy of the networks: a Stylizer puts them in its memory format)."""
    rows = []
    enc, dec, weights = bench_networks(arch)
    print(json.dumps({"weights": weights}), flush=True)
    probe = Stylizer(copy.deepcopy(enc), copy.deepcopy(dec), device=device, precision="auto", tile_size=0)
    default_mode = AUTO_MODE[probe.precision_name]
    del probe
    print(json.dumps({"precision=auto runs": default_mode}), flush=True)
    for size in sizes:
        content = photo("astronaut", size).expand(batch, -1, -1, -1).contiguous()
        style = photo("gravel", size)
        if weights.startswith("random"):
            # A decoder with random weights outputs around 0 with a large spread; rescale its last
            # conv so outputs land mostly inside [0, 1] like a trained one and PSNR is not
            # inflated by clamping. The shipped decoder is measured as it is.
            st = Stylizer(enc, dec, device=device, precision="fp32", channels_last=False, tile_size=0)
            code = st.encode_style(style)
            raw = st.decode(st.target(st.encode(content), [code]))
            with torch.no_grad():
                last = st.decoder.net[-1]
                s = 0.25 / raw.std().item()
                last.weight.mul_(s)
                last.bias.add_(0.5 - raw.mean().item() * s)
        calls, first, outputs = {}, {}, {}
        for name, (precision, cl, comp) in MODES.items():
            if (comp and no_compile) or (precision == "int8" and device.type != "cpu"):
                continue
            st = Stylizer(copy.deepcopy(enc), copy.deepcopy(dec), device=device, precision=precision,
                          channels_last=cl, tile_size=0, compile=comp)
            code = st.encode_style(style)
            if precision == "int8":
                # The bundled calibration photos precision=auto uses (int8_calibration.py);
                # never the timed content astronaut or the style.
                with duration() as calibrating:
                    st.calibrate_int8([code])
                print(json.dumps({"size": size, "int8_calibration_s": round(calibrating.seconds, 1),
                                  "encoder": st.int8_source}))
            calls[name] = functools.partial(st.stylize, content, [code])
            with duration(device=device) as call:  # warm-up (oneDNN primitives; compilation)
                outputs[name] = calls[name]().cpu()
            first[name] = call.seconds
        timing = round_robin(calls, rounds=reps, warmup=0, reference="fp32 NCHW", device=device)
        for name, t in timing.items():
            rows.append({"size": size, "batch": batch, "mode": name, "median_s": round(t.median_s, 4),
                         "images_per_s": round(batch / t.median_s, 3),
                         "speedup_vs_fp32_nchw": round(t.speedup, 2),
                         "psnr_vs_fp32_db": round(psnr(outputs[name], outputs["fp32 NCHW"]), 1),
                         "first_call_s": round(first[name], 1), "weights": weights,
                         "default": name == default_mode})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_training(steps, device) -> list[dict]:
    import pytorch_lightning as pl  # noqa: F401 - the module imports it

    from normapps.tasks.style_transfer.module import StyleTransferModule

    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(4, 3, 128, 128, generator=g), torch.rand(4, 3, 128, 128, generator=g)

    def make_step(dtype):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = StyleTransferModule(encoder={"weights": "random"}).to(device)
        opt = torch.optim.Adam(module.decoder.parameters(), lr=1e-4)

        def step():
            ctx = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
            with ctx:
                loss = module.losses(content.to(device), style.to(device))[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    steps_by_mode = {name: make_step(dtype) for name, dtype in
                     (("fp32 channels_last", None), ("bf16 autocast channels_last", torch.bfloat16))}
    timing = round_robin(steps_by_mode, rounds=steps, warmup=1, device=device)
    rows = []
    for name, t in timing.items():
        rows.append({"train": name, "batch": 4, "crop": 128, "median_step_s": round(t.median_s, 3),
                     "steps_per_s": round(1 / t.median_s, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_4096(device, tile_size) -> dict:
    enc, dec = he_init(VGGEncoder(), 0), he_init(Decoder(), 1)
    st = Stylizer(enc, dec, device=device, precision="auto", channels_last=True, tile_size=tile_size)
    code = st.encode_style(torch.rand(1, 3, 512, 512))
    content = torch.rand(1, 3, 4096, 4096)
    with duration(device=device) as run_time:
        out = st.stylize(content, [code], preserve_color=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    row = {"size": 4096, "tile_size": tile_size, "seconds": round(run_time.seconds, 1),
           "peak_rss_gb": round(peak_gb, 2), "output": list(out.shape)}
    print(json.dumps(row), flush=True)
    return row


def figure_panels(result: dict) -> list[dict]:
    """The figure's panels: images/s per path and size for every timed method."""
    panels = []
    inference = result.get("inference") or []
    if inference:
        data, notes = {}, {}
        for r in inference:
            group = f"{r['size']} px"
            data.setdefault(group, {})[r["mode"]] = r["images_per_s"]
            notes[(group, r["mode"])] = f"{r['speedup_vs_fp32_nchw']:.2f}x"
        panels.append({"title": f"AdaIN, batch {inference[0]['batch']} (ratio: vs fp32 NCHW)",
                       "data": data, "notes": notes, "ylabel": "images/s", "xlabel": "content size"})
    if result.get("training"):
        panels.append({"title": f"AdaIN training, batch 4, {result['training'][0]['crop']} px crops",
                       "data": {"train step": {r["train"]: r["steps_per_s"] for r in result["training"]}},
                       "ylabel": "optimizer steps/s"})
    if result.get("cin") or result.get("arbitrary_cin"):
        cin_panels = _bench_cin().figure_panels

        panels += cin_panels(result)
    return panels


def write_figure(result: dict, out: Path, *, wandb: bool = False) -> Path | None:
    """``<out>.png`` beside the JSON results (and on W&B with ``wandb``); None when nothing was timed."""
    from normapps.platform.plots import bar_panels, save_figure

    panels = figure_panels(result)
    if not panels:
        return None
    machine = result.get("machine", {})
    fig = bar_panels(panels, title=f"{out.stem}: {machine.get('device', '')} {machine.get('cpu', '')}, "
                                   f"{machine.get('threads', '?')} threads, torch {machine.get('torch', '?')}, "
                                   f"{machine.get('date', '')}")
    from normapps.platform.logging import finish_loggers, script_wandb_loggers

    loggers = script_wandb_loggers(out.parent, name=out.stem, group="benchmarks",
                                   job_type="bench_style") if wandb else []
    path = save_figure(fig, out.parent, out.stem, loggers=loggers, key=f"{out.stem}_plot")
    if loggers:
        finish_loggers(loggers)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode")
    p.add_argument("--4096", dest="big", action="store_true", help="only the 4096x4096 memory run")
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"],
                   help="AdaIN encoder (vgg16: the packaged default; vgg19: the public release's)")
    p.add_argument("--out", default=None, help="write the results as JSON here and a figure beside it (.png)")
    p.add_argument("--wandb", action="store_true", help="with --out: also log the figure to an offline W&B run")
    p.add_argument("--methods", nargs="+", default=["adain"], choices=["adain", "cin", "arbitrary_cin"],
                   help="adain: the AdaIN/WCT Stylizer; cin / arbitrary_cin: side by side with "
                        "onnxruntime on the packaged networks (scripts/bench_cin.py)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ours and onnxruntime (cin methods)")
    p.add_argument("--int8-kernels", action="store_true", help="cin methods: int8 vs fp32 convolutions of their shapes")
    args = p.parse_args()
    if args.wandb and not args.out:
        p.error("--wandb logs the figure written beside --out: give --out results.json too")
    try:
        device = resolve_device(args.device)  # the platform's device choice (infer.py's too)
    except ValueError as err:
        p.error(str(err))
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(info), flush=True)
    result = {"machine": info}
    cin_methods = [m for m in args.methods if m != "adain"]
    if cin_methods:
        run_cin = _bench_cin().run

        result.update(run_cin(cin_methods, sizes=args.sizes, reps=args.reps, device=device,
                              compile_modes=not args.no_compile, batch=args.batch,
                              threads=args.threads or torch.get_num_threads(),
                              int8_kernels=args.int8_kernels))
    if "adain" not in args.methods:
        pass
    elif args.big:
        result["large"] = bench_4096(device, args.tile_size)
    else:
        result["inference"] = bench_inference(args.sizes, args.batch, args.reps, device, args.no_compile,
                                              arch=args.arch)
        if args.train_steps:
            result["training"] = bench_training(args.train_steps, device)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        figure = write_figure(result, out, wandb=args.wandb)
        print(json.dumps({"results": str(out), "figure": str(figure) if figure else None}), flush=True)


if __name__ == "__main__":
    main()
