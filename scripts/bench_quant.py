"""Benchmark for task=quantization: accuracy, file size and latency of every int8 recipe
against fp32, measured side by side in one process, plus the data-free showcase on a model
with widely varying per-channel weight ranges.

    python train.py task=classification logger=csv hydra.run.dir=runs/cls   # a float model
    python scripts/bench_quant.py --ckpt runs/cls/checkpoints/best-*.ckpt [--qat-file q.pt] \
        [--pt2e] [--threads 2] [--json out.json]

Prints Markdown tables. Latency is the median over interleaved rounds (each model measured
once per round), so load from other processes hits every model alike.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from normapps.data.classification import ClassificationDataModule
from normapps.norm import recalibrate_bn
from normapps.platform.checkpoint import load_module
from normapps.platform.int8 import set_int8_engine
from normapps.platform.measure import Duration, duration
from normapps.platform.profiling import side_by_side_latency, state_dict_bytes
from normapps.platform.summary import markdown_table
from normapps.tasks.quantization import dfq, ptq, zeroq
from normapps.tasks.quantization.artifact import arch_hparams, load_quantized, save_quantized
from normapps.tasks.quantization.report import accuracy, as_callable


def ill_conditioned(model: torch.nn.Module, *, spread: float, seed: int = 0) -> torch.nn.Module:
    """Same function, wildly different per-channel ranges: scale BN channel i (gamma, beta) of
    every conv-BN-ReLU-conv pair by s_i and divide the next conv's input channel i by s_i."""
    model = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pair in dfq.find_layer_pairs(model, first_types=(torch.nn.BatchNorm2d,)):
            bn, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
            if not isinstance(second, torch.nn.Conv2d) or not pair.through_relu:
                continue
            s = torch.logspace(-spread, spread, bn.num_features)[torch.randperm(bn.num_features, generator=g)]
            bn.weight.mul_(s)
            bn.bias.mul_(s)
            second.weight.div_(s.view(1, -1, 1, 1))
    return model


def file_size(state: dict, arch: dict, recipe: dict, image_size: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = save_quantized(Path(d) / "q.pt", state_dict=state, arch=arch, recipe=recipe,
                              image_size=image_size)
        return path.stat().st_size


def latencies(models: dict, shape, *, batch_sizes=(1, 64), rounds: int = 5, repeats: int = 5):
    """``{name: {"latency_ms_bs<b>": ms, "speedup_bs<b>": x}}`` from the platform's side-by-side
    (round-robin) latency: every model and batch size timed once per round; speedups are the
    median over rounds of fp32's time over the model's."""
    return side_by_side_latency(models, shape, batch_sizes=batch_sizes, rounds=rounds, repeats=repeats,
                                reference="fp32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="classification checkpoint (task=classification)")
    ap.add_argument("--qat-file", default=None, help="quantized.pt of a mode=qat run to include")
    ap.add_argument("--pt2e", action="store_true", help="also PT2E + torch.compile (slow to compile)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--spread", type=float, default=1.5, help="log10 range of the channel scales")
    ap.add_argument("--zeroq-steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    set_int8_engine()

    module = load_module(args.ckpt, expected_network="classifier")
    hp = dict(module.hparams)
    arch = arch_hparams(hp)
    net = module.net.eval()
    dm = ClassificationDataModule(dataset="digits", image_size=32, channels=hp["in_channels"], seed=42)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    test = list(dm.test_dataloader())
    shape = (hp["in_channels"], 32, 32)
    example = torch.zeros(2, *shape)
    with duration() as synthesis:
        synth = zeroq.synthesize_calibration_data(net, input_shape=shape, num_samples=128, batch_size=64,
                                                  steps=args.zeroq_steps, lr=0.2)
    synth_s = synthesis.seconds
    synth_batches = list(torch.split(synth, 64))

    rows, models = [], {}

    def add(name, fn, state, recipe, note=""):
        size = state_dict_bytes(fn) if state is None else file_size(state, arch, recipe, 32)
        rows.append({"model": name, "accuracy": accuracy(fn, test), "size_bytes": size, "note": note})
        models[name] = as_callable(fn)

    add("fp32", net, None, {})
    recal = recalibrate_bn(copy.deepcopy(net), train, max_batches=16)
    q = ptq.quantize_fx(recal, train, example=example, max_batches=8)
    add("int8 ptq (fx, per-channel)", q, q.state_dict(), {"backend": "fx"}, "8 calibration batches")
    if args.pt2e:
        compile_time = Duration.started()
        prepared, conv = ptq.quantize_pt2e(recal, train, example=example, max_batches=8)
        compiled = ptq.compile_int8(conv)
        with torch.no_grad():
            compiled(torch.rand(64, *shape))
            compiled(torch.rand(1, *shape))
        add("int8 ptq (pt2e + compile)", compiled, prepared.state_dict(), {"backend": "pt2e"},
            f"file holds float weights + observer ranges; compile {compile_time.stop():.0f} s")
        fc = torch.compile(net)
        with torch.no_grad():
            fc(torch.rand(64, *shape)), fc(torch.rand(1, *shape))
        add("fp32 (torch.compile)", fc, None, {})
        rows[-1]["size_bytes"] = rows[0]["size_bytes"]
    if args.qat_file:
        qat_model, _ = load_quantized(args.qat_file)
        rows.append({"model": "int8 qat (fx)", "accuracy": accuracy(qat_model, test),
                     "size_bytes": os.path.getsize(args.qat_file), "note": "from a mode=qat run"})
        models["int8 qat (fx)"] = as_callable(qat_model)
    zq = ptq.quantize_fx(net, synth_batches, example=example)
    add("int8 zeroq (fx, per-channel)", zq, zq.state_dict(), {"backend": "fx"}, f"no data; synthesis {synth_s:.0f} s")
    folded, info = dfq.data_free_prepare(net, per_channel=True)
    dq = ptq.quantize_fx(folded, synth_batches, example=example)
    add("int8 dfq (fx, per-channel)", dq, dq.state_dict(), {"backend": "fx", "folded": True}, "no data")

    lat = latencies(models, shape, rounds=args.rounds)
    for r in rows:
        t = lat[r["model"]]
        r["ms_bs1"], r["ms_bs64"], r["speedup_bs64"] = t["latency_ms_bs1"], t["latency_ms_bs64"], t["speedup_bs64"]
        r["size_ratio"] = rows[0]["size_bytes"] / r["size_bytes"]

    # ---- data-free showcase: same function, per-channel ranges spread over 10^(2*spread)
    bad = ill_conditioned(net, spread=args.spread)
    x = torch.rand(8, *shape)
    assert torch.allclose(bad(x), net(x), atol=1e-3, rtol=1e-3), "reparametrization changed the function"
    bad_synth = list(torch.split(zeroq.synthesize_calibration_data(
        bad, input_shape=shape, num_samples=128, batch_size=64, steps=args.zeroq_steps, lr=0.2), 64))
    demo = [{"model": "fp32 (reparametrized)", "data": "-", "accuracy": accuracy(bad, test)}]

    def demo_row(name, fn, data):
        demo.append({"model": name, "data": data, "accuracy": accuracy(fn, test)})

    demo_row("ptq per-tensor, no CLE", ptq.quantize_fx(bad, train, example=example, per_channel=False,
                                                       max_batches=8), "8 train batches")
    demo_row("ptq per-channel, no CLE", ptq.quantize_fx(bad, train, example=example, max_batches=8),
             "8 train batches")
    demo_row("zeroq per-tensor, no CLE", ptq.quantize_fx(bad, bad_synth, example=example, per_channel=False),
             "none (synthetic)")
    for eq, bc, label in ((True, False, "CLE"), (True, True, "CLE + bias corr.")):
        f, _ = dfq.data_free_prepare(bad, per_channel=False, equalize=eq, correct_bias=bc)
        demo_row(f"dfq per-tensor ({label})", ptq.quantize_fx(f, bad_synth, example=example,
                                                              per_channel=False), "none (synthetic)")
    f, _ = dfq.data_free_prepare(bad, per_channel=True)
    demo_row("dfq per-channel (CLE + bias corr.)", ptq.quantize_fx(f, bad_synth, example=example),
             "none (synthetic)")
    for r in demo[1:]:
        r["drop_points"] = 100 * (demo[0]["accuracy"] - r["accuracy"])

    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}, "
              f"load average {os.getloadavg()[0]:.1f}; dfq pairs {info}")
    print(header)
    cols = ["model", "accuracy", "size_bytes", "size_ratio", "ms_bs1", "ms_bs64", "speedup_bs64", "note"]
    print(markdown_table(rows, cols))
    print(markdown_table(demo, ["model", "data", "accuracy", "drop_points"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows, "demo": demo}, indent=2, default=str))


if __name__ == "__main__":
    main()
