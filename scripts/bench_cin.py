"""The CIN methods against onnxruntime on the same pretrained networks, side by side in one run
(``python scripts/bench_style.py --methods cin arbitrary_cin``).

For each size, every mode of ours and onnxruntime run interleaved, round after round, so both
see the same machine load; the table reports medians and the median of the per-round ratios.
- ``cin``: the packaged 26-style network (float ONNX) vs our port through ``CINStylizer``.
- ``arbitrary_cin``: Magenta's int8 transformer (ONNX as shipped) vs our float port through
  ``ArbitraryCINStylizer``, with the same style embedding; the style prediction (once per style)
  is timed separately at 256.
Fidelity: PSNR of every output against onnxruntime's on the same input (peak 1).
Allocator: each size runs with glibc's default and with ``keep_freed_memory`` (no mmap per
large tensor); onnxruntime runs in the same process, so it sees the same setting. The compiled
modes (torch.compile with freezing; first call = compilation) run in the second pass only.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import json
import statistics
import time
from typing import Callable

import numpy as np
import torch

from normapps.data.bundled import skimage_image
from normapps.tasks.style_transfer.cin_stylize import ArbitraryCINStylizer, CINStylizer
from normapps.tasks.style_transfer.onnx_ports import load_magenta, load_multistyle26
from normapps.weights import locate
from normapps.tasks.style_transfer.onnx_reference import psnr, session

MODES = {  # name: (precision, channels_last, compile)
    "fp32 NCHW": ("fp32", False, False),
    "fp32 channels_last": ("fp32", True, False),
    "bf16 channels_last": ("bf16", True, False),
    "fp32 channels_last compiled": ("fp32", True, True),
    "bf16 channels_last compiled": ("bf16", True, True),
}
STYLE_INDEX = 7


def set_malloc(reuse: bool) -> None:
    """Toggle glibc's mmap of large blocks (default: up to 65536 mmaps, trim at 128 KiB)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(-4, 0 if reuse else 65536)  # M_MMAP_MAX
    libc.mallopt(-1, (1 << 30) if reuse else 128 * 1024)  # M_TRIM_THRESHOLD


def photo(name: str, size: int) -> np.ndarray:
    import torchvision.transforms.functional as TF

    img = TF.center_crop(TF.resize(skimage_image(name), size, antialias=True), size)
    return np.asarray(img, dtype=np.float32) / 255.0


def interleaved(fns: dict[str, Callable[[], object]], reps: int, sync=lambda: None) -> dict[str, list[float]]:
    times = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def _rows(method: str, size: int, batch: int, allocator: str, times, outputs, ref_name: str,
          reference: np.ndarray, first_call: dict[str, float]) -> list[dict]:
    rows = []
    ref_t = times[ref_name]
    for name, ts in times.items():
        ratio = statistics.median([r / t for r, t in zip(ref_t, ts)])
        row = {"method": method, "size": size, "batch": batch, "allocator": allocator, "mode": name,
               "median_s": round(statistics.median(ts), 4), "images_per_s": round(batch / statistics.median(ts), 2),
               "speed_vs_onnxruntime": round(ratio, 2),
               "psnr_vs_onnxruntime_db": round(psnr(outputs[name], reference), 1) if name != ref_name else None,
               "first_call_s": round(first_call.get(name, 0.0), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _our_modes(make, device, compile_modes: bool):
    out = {}
    for name, (precision, cl, comp) in MODES.items():
        if comp and not compile_modes:
            continue
        if device.type != "cpu" and name == "fp32 NCHW":
            continue
        out[name] = make(precision=precision, channels_last=cl, compile=comp, device=device, tile_size=0)
    return out


def bench_cin(sizes, reps, device, *, compile_modes=True, batch=1, threads=1) -> list[dict]:
    rows = []
    ort = session(locate("multistyle26"), threads=threads) if device.type == "cpu" else None
    net = load_multistyle26()
    w = np.eye(26, dtype=np.float32)[STYLE_INDEX]
    for size in sizes:
        x = np.repeat(photo("astronaut", size).transpose(2, 0, 1)[None], batch, axis=0)
        for allocator in (("glibc default", False), ("keep_freed_memory", True)) if device.type == "cpu" else (("-", False),):
            set_malloc(allocator[1]) if device.type == "cpu" else None
            pipes = _our_modes(lambda **kw: CINStylizer(copy.deepcopy(net), **kw), device,
                               compile_modes and (allocator[1] or device.type != "cpu"))
            mix = next(iter(pipes.values())).mixture([STYLE_INDEX])
            fns, first = {}, {}
            xt = torch.from_numpy(x).to(device)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            if ort is not None:
                fns["onnxruntime"] = lambda: ort.run(None, {"image": x[:1], "style_weights": w})[0]
            for name, pipe in pipes.items():
                params = pipe.style_params(mix)
                fns[name] = (lambda p=pipe, q=params: p.stylize_with_params(xt, q))
            outputs = {}
            for name, fn in fns.items():  # warm-up: oneDNN primitives, compilation
                t0 = time.perf_counter()
                out = fn()
                first[name] = time.perf_counter() - t0
                outputs[name] = out.float().cpu().numpy()[:1] if torch.is_tensor(out) else out
            times = interleaved(fns, reps, sync)
            if ort is None:  # GPU: fidelity against our fp32 run, no onnxruntime timing
                ref_name = "fp32 channels_last"
            else:
                ref_name = "onnxruntime"
            rows += _rows("cin", size, batch, allocator[0], times, outputs, ref_name, outputs[ref_name], first)
    return rows


def bench_arbitrary(sizes, reps, device, *, compile_modes=True, batch=1, threads=1) -> list[dict]:
    rows = []
    predict_ort = session(locate("magenta_style_predict"), threads=threads)
    transform_ort = session(locate("magenta_style_transform"), threads=threads)
    names = [i.name for i in transform_ort.get_inputs()]
    net = load_magenta()
    style = photo("immunohistochemistry", 256)
    emb = predict_ort.run(None, {predict_ort.get_inputs()[0].name: style[None]})[0]
    for size in sizes:
        # the shipped transformer graph is fixed at 384x384: onnxruntime runs only there
        content = photo("chelsea", size)
        x = np.repeat(content.transpose(2, 0, 1)[None], batch, axis=0)
        for allocator in (("glibc default", False), ("keep_freed_memory", True)):
            set_malloc(allocator[1])
            pipes = _our_modes(lambda **kw: ArbitraryCINStylizer(copy.deepcopy(net), **kw), device,
                               compile_modes and allocator[1])
            fns, first, outputs = {}, {}, {}
            if size == 384:
                fns["onnxruntime"] = lambda: transform_ort.run(None, {names[0]: content[None], names[1]: emb})[0][0].transpose(2, 0, 1)[None]
            xt = torch.from_numpy(x).to(device)
            for name, pipe in pipes.items():
                params = pipe.style_params(torch.from_numpy(emb.reshape(1, 100)))
                fns[name] = (lambda p=pipe, q=params: p.stylize_with_params(xt, q))
            for name, fn in fns.items():
                t0 = time.perf_counter()
                out = fn()
                first[name] = time.perf_counter() - t0
                outputs[name] = out.float().cpu().numpy()[:1] if torch.is_tensor(out) else out
            times = interleaved(fns, reps)
            ref_name = "onnxruntime" if size == 384 else "fp32 channels_last"
            rows += _rows("arbitrary_cin", size, batch, allocator[0], times, outputs, ref_name, outputs[ref_name], first)
    # style prediction, once per style image: ours (fp32) vs onnxruntime (int8) at 256
    pipe = ArbitraryCINStylizer(copy.deepcopy(net), precision="fp32", tile_size=0)
    st = torch.from_numpy(style).permute(2, 0, 1)[None].contiguous()
    fns = {"onnxruntime": lambda: predict_ort.run(None, {predict_ort.get_inputs()[0].name: style[None]})[0].reshape(1, 100),
           "fp32": lambda: pipe.encode_style(st).numpy()}
    outs = {k: f() for k, f in fns.items()}
    times = interleaved(fns, reps)
    for name, ts in times.items():
        row = {"method": "arbitrary_cin style prediction", "size": 256, "mode": name,
               "median_s": round(statistics.median(ts), 4),
               "speed_vs_onnxruntime": round(statistics.median([r / t for r, t in zip(times["onnxruntime"], ts)]), 2),
               "embedding_max_abs_diff": float(np.abs(outs[name] - outs["onnxruntime"]).max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_int8_convolutions(size: int, reps: int) -> list[dict]:
    """Why precision=int8 is not offered for the CIN methods: the networks' convolutions (3-32
    channels) in int8 (x86 quantized kernels, quantize/dequantize included) vs fp32 channels_last."""
    import torch.ao.nn.quantized as nnq

    from normapps.platform.int8 import set_int8_engine

    set_int8_engine()
    shapes = [("contract 9x9 3->32", 3, 32, 9, 1, size), ("contract 3x3/2 32->32", 32, 32, 3, 2, size),
              ("residual 3x3 32->32", 32, 32, 3, 1, size // 4), ("expand 3x3 8->4", 8, 4, 3, 1, size),
              ("output 9x9 4->3", 4, 3, 9, 1, size)]
    rows = []
    for label, cin, cout, k, s, hw in shapes:
        conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=k // 2).eval().to(memory_format=torch.channels_last)
        x = torch.rand(1, cin, hw, hw).contiguous(memory_format=torch.channels_last)
        q = nnq.Conv2d(cin, cout, k, stride=s, padding=k // 2)
        wq = torch.quantize_per_channel(conv.weight.detach(), conv.weight.detach().abs().amax((1, 2, 3)) / 127 + 1e-8,
                                        torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        q.set_weight_bias(wq, conv.bias.detach())
        q.scale, q.zero_point = 0.05, 0

        def int8_path():
            xq = torch.quantize_per_tensor(x, 1 / 255, 0, torch.quint8)
            return q(xq).dequantize()

        with torch.no_grad():
            fns = {"fp32 channels_last": lambda: conv(x), "int8 (quantize + conv + dequantize)": int8_path}
            for f in fns.values():
                f()
            times = interleaved(fns, reps)
        base = statistics.median(times["fp32 channels_last"])
        for name, ts in times.items():
            row = {"int8_kernels": label, "size": hw, "mode": name, "median_ms": round(1000 * statistics.median(ts), 2),
                   "speed_vs_fp32": round(base / statistics.median(ts), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def figure_panels(result: dict) -> list[dict]:
    """Images/s per path and size, one panel per method and allocator (``bench_style``'s figure).
    Each bar says its speed against the run's reference: onnxruntime where it runs (every size
    for ``cin``, 384 only for ``arbitrary_cin``: the shipped graph is fixed there), else fp32
    channels_last."""
    panels = []
    for method in ("cin", "arbitrary_cin"):
        rows = [r for r in result.get(method) or [] if "images_per_s" in r]
        for allocator in dict.fromkeys(r["allocator"] for r in rows):
            data, notes = {}, {}
            for r in rows:
                if r["allocator"] != allocator:
                    continue
                group = f"{r['size']} px"
                data.setdefault(group, {})[r["mode"]] = r["images_per_s"]
                notes[(group, r["mode"])] = f"{r['speed_vs_onnxruntime']:.2f}x"
            label = "26-style CIN" if method == "cin" else "arbitrary CIN (transformer)"
            alloc = "" if allocator == "-" else f", {allocator}"
            refs = ["onnxruntime" if "onnxruntime" in modes else "fp32 channels_last" for modes in data.values()]
            if len(set(refs)) > 1:  # a title per size overflows the panel: name the sizes only
                ort = ", ".join(g for g, r in zip(data, refs) if r == "onnxruntime")
                ref = f"onnxruntime at {ort}, else fp32 channels_last"
            else:
                ref = refs[0]
            panels.append({"title": f"{label}, batch {rows[0]['batch']}{alloc}\n(ratio: vs {ref})", "data": data,
                           "notes": notes, "ylabel": "images/s", "xlabel": "content size"})
    return panels


def run(methods, *, sizes, reps, device, compile_modes, batch, threads, int8_kernels) -> dict:
    torch.set_num_threads(threads)
    result = {}
    if "cin" in methods:
        result["cin"] = bench_cin(sizes, reps, device, compile_modes=compile_modes, batch=batch, threads=threads)
    if "arbitrary_cin" in methods:
        result["arbitrary_cin"] = bench_arbitrary(sizes, reps, device, compile_modes=compile_modes,
                                                  batch=batch, threads=threads)
    if int8_kernels and device.type == "cpu":
        result["int8_kernels"] = bench_int8_convolutions(max(sizes), reps)
    return result
