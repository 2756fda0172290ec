"""Measured model cost: parameters, FLOPs, file size and wall-clock latency (median of repeats)."""
from __future__ import annotations

import io
import statistics
import time
from typing import Callable, Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), from torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


def state_dict_bytes(obj: nn.Module | dict) -> int:
    """Size of the serialized state dict, i.e. of the weights file a user would ship."""
    buf = io.BytesIO()
    torch.save(obj.state_dict() if isinstance(obj, nn.Module) else obj, buf)
    return buf.getbuffer().nbytes


def measure_latency(
    fn: Callable[[torch.Tensor], object] | nn.Module,
    example: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 10,
    min_seconds: float = 0.0,
) -> float:
    """Median seconds per call of ``fn(example)`` under no_grad, after warm-up."""
    if isinstance(fn, nn.Module):
        fn.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(example)
        start_all = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
            t0 = time.perf_counter()
            fn(example)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def latency_table(
    fn: Callable[[torch.Tensor], object] | nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    repeats: int = 10,
) -> dict[str, float]:
    """Latency in milliseconds at each batch size: ``{"latency_ms_bs1": ..., "latency_ms_bs64": ...}``."""
    out = {}
    for bs in batch_sizes:
        example = torch.randn(bs, *input_shape, device=device)
        out[f"latency_ms_bs{bs}"] = 1000.0 * measure_latency(fn, example, repeats=repeats)
    return out
