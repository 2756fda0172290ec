"""Per-stage figures for slimming: accuracy, parameters, FLOPs and measured latency.

Latencies of all stages are measured side by side, round-robin, and the median over rounds is
kept, so a load change on a shared machine hits every stage alike and the ratios stay fair.
What is timed is the deployable model (BN folded into the convs) in its fastest measured
memory format; parameters and FLOPs describe the network as trained.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from normapps.platform.predict import accuracy
from normapps.platform.profiling import count_flops, count_parameters
# Timing lives in the platform (shared with quantization); re-exported for existing callers.
from normapps.platform.profiling import deployable, deployment_latency, side_by_side_latency  # noqa: F401


def evaluate_accuracy(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` over (images, labels) batches, in eval mode (the platform's
    ``predict.accuracy``)."""
    return accuracy(model, batches, device=device)


def model_cost(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    return {"params": count_parameters(model), "flops": count_flops(model, example)}
