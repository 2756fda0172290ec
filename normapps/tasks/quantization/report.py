"""The quantization report: accuracy, file size and latency of one model, as a table row."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from normapps.platform.predict import accuracy as platform_accuracy
from normapps.platform.profiling import latency_table


def as_callable(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain function for the latency helpers, which call ``.eval()`` on modules: exported
    (PT2E) graphs refuse ``.eval()``, and models here are already in eval mode."""
    return lambda x: fn(x)


def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Any]) -> float:
    """Top-1 accuracy of a model as given (the platform's ``predict.accuracy`` without switching
    modes: the report's models are in eval mode already and exported graphs refuse ``.eval()``)."""
    return platform_accuracy(fn, batches, eval_mode=False)


def report_row(name: str, fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Any], *,
               size_bytes: int, input_shape: tuple[int, ...], repeats: int = 10,
               batch_sizes: tuple[int, ...] = (1, 64)) -> dict[str, Any]:
    row = {"model": name, "accuracy": accuracy(fn, batches), "size_bytes": int(size_bytes)}
    row.update(latency_table(as_callable(fn), input_shape, batch_sizes=batch_sizes, repeats=repeats))
    return row


def file_bytes(path: str | Path) -> int:
    return Path(path).stat().st_size


def time_models(models, input_shape, **kw):
    """Side-by-side latency of the report's models (platform's deployment_latency: float models
    BN-folded, every model in its faster memory format unless fixed)."""
    from normapps.platform.profiling import deployment_latency

    return deployment_latency(models, input_shape, **kw)
