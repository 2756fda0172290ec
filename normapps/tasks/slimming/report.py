"""Per-stage figures for slimming: accuracy, parameters, FLOPs and measured latency.

Latencies of all stages are measured side by side, round-robin, and the median over rounds is
kept, so a load change on a shared machine hits every stage alike and the ratios stay fair.
"""
from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

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
    channels_last: bool = False,
) -> dict[str, dict[str, float]]:
    """``{model name: {f"{prefix}_bs{b}": median ms}}``, models timed in turn each round.

    ``threads`` sets torch's intra-op threads for the measurement only; ``channels_last`` runs
    models and inputs in NHWC, usually the faster layout for oneDNN convolutions.
    """
    device = torch.device(device)
    if rounds < 1 or repeats < 1:
        raise ValueError(f"latency rounds and repeats must be >= 1, got {rounds}, {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"latency threads must be >= 1, got {threads}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in models}
    placed = {n: m.eval().to(device, memory_format=fmt) for n, m in models.items()}
    examples = {b: torch.randn(b, *input_shape, device=device).contiguous(memory_format=fmt)
                for b in batch_sizes}
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for _ in range(rounds):
            for b in batch_sizes:
                for name, model in placed.items():
                    fn = _synced(model, device)
                    samples[name][b].append(measure_latency(fn, examples[b], warmup=1, repeats=repeats))
    finally:
        torch.set_num_threads(saved_threads)
    return {n: {f"{prefix}_bs{b}": 1000.0 * statistics.median(v) for b, v in per.items()}
            for n, per in samples.items()}
