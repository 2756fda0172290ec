"""Per-stage figures for slimming: accuracy, parameters, FLOPs and measured latency.

Latencies of all stages are measured side by side, round-robin, and the median over rounds is
kept, so a load change on a shared machine hits every stage alike and the ratios stay fair.
What is timed is the deployable model (BN folded into the convs) in its fastest measured
memory format; parameters and FLOPs describe the network as trained.
"""
from __future__ import annotations

import copy
import statistics
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from normapps.norm import fold_bn
from normapps.platform.profiling import count_flops, count_parameters, measure_latency


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` over (images, labels) batches, in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in batches:
        x, y = batch[0].to(device), batch[1].to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluation data is empty")
    return correct / total


def model_cost(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    return {"params": count_parameters(model), "flops": count_flops(model, example)}


def _synced(model: nn.Module, device: torch.device):
    if device.type != "cuda":
        return model

    def run(x: torch.Tensor):
        out = model(x)
        torch.cuda.synchronize(device)
        return out

    return run


def side_by_side_latency(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    device: torch.device | str = "cpu",
    rounds: int = 5,
    repeats: int = 5,
    prefix: str = "latency_ms",
    threads: int | None = None,
    channels_last: bool | Mapping[str, bool] = False,
) -> dict[str, dict[str, float]]:
    """``{model name: {f"{prefix}_bs{b}": median ms}}``, models timed in turn each round.

    ``threads`` sets torch's intra-op threads for the measurement only; ``channels_last`` runs
    models and inputs in NHWC (a bool for all models, or one per model name).
    """
    device = torch.device(device)
    if rounds < 1 or repeats < 1:
        raise ValueError(f"latency rounds and repeats must be >= 1, got {rounds}, {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"latency threads must be >= 1, got {threads}")
    nhwc = {n: bool(channels_last[n] if isinstance(channels_last, Mapping) else channels_last) for n in models}
    fmt = {n: torch.channels_last if nhwc[n] else torch.contiguous_format for n in models}
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in models}
    placed = {n: m.eval().to(device, memory_format=fmt[n]) for n, m in models.items()}
    base = {b: torch.randn(b, *input_shape, device=device) for b in batch_sizes}
    examples = {(b, f): x.contiguous(memory_format=f) for b, x in base.items()
                for f in (torch.channels_last, torch.contiguous_format)}
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for _ in range(rounds):
            for b in batch_sizes:
                for name, model in placed.items():
                    fn = _synced(model, device)
                    samples[name][b].append(measure_latency(fn, examples[(b, fmt[name])], warmup=1,
                                                            repeats=repeats))
    finally:
        torch.set_num_threads(saved_threads)
    return {n: {f"{prefix}_bs{b}": 1000.0 * statistics.median(v) for b, v in per.items()}
            for n, per in samples.items()}


def deployable(model: nn.Module) -> nn.Module:
    """What would be shipped for inference: an eval copy with every BN folded into its conv
    (core fold_bn), so the timing does not charge BN's separate pass."""
    return fold_bn(model).eval()


def deployment_latency(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    channels_last: bool | None = None,
    prefix: str = "latency_ms",
    **kw,
) -> dict[str, dict[str, float | str]]:
    """Latency of each model's deployable (BN-folded) form. ``channels_last=None`` times NCHW
    and NHWC side by side and keeps the faster per model and batch size, naming it in
    ``latency_format_bs<b>`` (on CPU, oneDNN's best layout depends on the widths and the batch);
    True/False fixes the layout."""
    folded = {n: deployable(m) for n, m in models.items()}
    layouts = [False, True] if channels_last is None else [bool(channels_last)]
    variants, flags = {}, {}
    for n, m in folded.items():
        for cl in layouts:
            key = f"{n}@{'channels_last' if cl else 'nchw'}"
            variants[key] = m if len(layouts) == 1 else copy.deepcopy(m)
            flags[key] = cl
    timing = side_by_side_latency(variants, input_shape, channels_last=flags, prefix=prefix, **kw)
    out: dict[str, dict[str, float | str]] = {}
    for n in folded:
        row: dict[str, float | str] = {}
        for b in kw.get("batch_sizes", (1, 64)):
            best = min((timing[f"{n}@{'channels_last' if cl else 'nchw'}"][f"{prefix}_bs{b}"], cl) for cl in layouts)
            row[f"{prefix}_bs{b}"] = best[0]
            row[f"latency_format_bs{b}"] = "channels_last" if best[1] else "nchw"
        out[n] = row
    return out
