"""Measured model cost: parameters, FLOPs, file size and latency tables (per batch size, side by
side, BN-folded deployment), all timed by ``normapps.platform.measure.round_robin``."""
from __future__ import annotations

import copy
import functools
import io
import statistics
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from normapps.platform.measure import Timing, round_ratio, round_robin


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
    """Median seconds per call of ``fn(example)`` under inference mode, after warm-up (the
    platform's round_robin with one candidate: CUDA synchronized when ``example`` is on CUDA).
    With ``min_seconds``, rounds of ``repeats`` calls go on until that much was timed."""
    if isinstance(fn, nn.Module):
        fn.eval()
    call = functools.partial(fn, example)
    with torch.inference_mode():
        samples = list(round_robin({"fn": call}, rounds=repeats, warmup=warmup, device=example.device)["fn"].samples)
        while sum(samples) < min_seconds:
            samples += round_robin({"fn": call}, rounds=repeats, warmup=0, device=example.device)["fn"].samples
    return statistics.median(samples)


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


def _round_robin_models(models, input_shape, *, batch_sizes, device, rounds, repeats, threads,
                        channels_last) -> dict[tuple[str, int], Timing]:
    """One round-robin over every (model, batch size) pair: ``{(name, batch): Timing}``."""
    device = torch.device(device)
    if rounds < 1 or repeats < 1:
        raise ValueError(f"latency rounds and repeats must be >= 1, got {rounds}, {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"latency threads must be >= 1, got {threads}")
    nhwc = {n: bool(channels_last[n] if isinstance(channels_last, Mapping) else channels_last) for n in models}
    fmt = {n: torch.channels_last if nhwc[n] else torch.contiguous_format for n in models}
    # Plain callables (exported or compiled graphs, which refuse .eval()) are timed as given.
    placed = {n: (m.eval().to(device, memory_format=fmt[n]) if isinstance(m, nn.Module) else m)
              for n, m in models.items()}
    base = {b: torch.randn(b, *input_shape, device=device) for b in batch_sizes}
    examples = {(b, f): x.contiguous(memory_format=f) for b, x in base.items()
                for f in (torch.channels_last, torch.contiguous_format)}
    # partial(model, example): the candidate says what it times (tests read .func and .args).
    candidates = {(name, b): functools.partial(model, examples[(b, fmt[name])])
                  for b in batch_sizes for name, model in placed.items()}
    with torch.inference_mode():
        return round_robin(candidates, rounds=rounds, repeats=repeats, warmup=1, threads=threads, device=device)


def _check_reference(reference: str | None, models: Mapping) -> None:
    if reference is not None and reference not in models:
        raise ValueError(f"latency reference {reference!r} is not one of the timed models ({list(models)})")


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
    reference: str | None = None,
) -> dict[str, dict[str, float]]:
    """``{model name: {f"{prefix}_bs{b}": median ms}}``: every (batch size, model) pair is one
    candidate of the platform's :func:`~normapps.platform.measure.round_robin` (one warm-up
    call each, then ``rounds`` rounds of ``repeats`` calls, CUDA synchronized), so all models
    see the same load. With ``reference`` (a model's name) each row also gets
    ``speedup_bs{b}``: the median over rounds of the reference's time over this model's.

    ``threads`` sets torch's intra-op threads for the measurement only; ``channels_last`` runs
    models and inputs in NHWC (a bool for all models, or one per model name).
    """
    _check_reference(reference, models)
    timing = _round_robin_models(models, input_shape, batch_sizes=batch_sizes, device=device, rounds=rounds,
                                 repeats=repeats, threads=threads, channels_last=channels_last)
    out = {n: {f"{prefix}_bs{b}": timing[(n, b)].median_ms for b in batch_sizes} for n in models}
    if reference is not None:
        for n, row in out.items():
            row.update({f"speedup_bs{b}": round_ratio(timing[(reference, b)], timing[(n, b)]) for b in batch_sizes})
    return out


def deployable(model: nn.Module) -> nn.Module:
    """What would be shipped for inference: an eval copy with every BN folded into its conv
    (core fold_bn), so the timing does not charge BN's separate pass."""
    from normapps.norm import fold_bn

    return fold_bn(model).eval()


def deployment_latency(
    models: Mapping[str, nn.Module | Callable],
    input_shape: Sequence[int],
    *,
    channels_last: bool | None | Mapping[str, bool | None] = None,
    prefix: str = "latency_ms",
    fold: bool | Mapping[str, bool] = True,
    batch_sizes: Sequence[int] = (1, 64),
    device: torch.device | str = "cpu",
    rounds: int = 5,
    repeats: int = 5,
    threads: int | None = None,
    reference: str | None = None,
) -> dict[str, dict[str, float | str]]:
    """Latency of each model's deployable (BN-folded) form. ``channels_last=None`` times NCHW
    and NHWC side by side and keeps the faster per model and batch size, naming it in
    ``latency_format_bs<b>`` (on CPU, oneDNN's best layout depends on the widths and the batch);
    True/False fixes the layout. ``fold=False`` times the models as given (e.g. int8 graphs,
    whose BN is already folded); for those only the input's layout changes. Both options also
    take a mapping per model name. All variants run in one round-robin; with ``reference`` each
    row gets ``speedup_bs{b}``, the median over rounds of the reference's time (in its kept
    layout) over this model's (in its kept layout)."""
    def per(option, name):
        return option.get(name) if isinstance(option, Mapping) else option

    _check_reference(reference, models)
    folded = {n: deployable(m) if per(fold, n) else m for n, m in models.items()}
    layouts = {n: [False, True] if per(channels_last, n) is None else [bool(per(channels_last, n))]
               for n in folded}
    variants, flags = {}, {}
    for n, m in folded.items():
        for cl in layouts[n]:
            key = f"{n}@{'channels_last' if cl else 'nchw'}"
            variants[key] = m if (len(layouts[n]) == 1 or not isinstance(m, nn.Module)) else copy.deepcopy(m)
            flags[key] = cl
    timing = _round_robin_models(variants, input_shape, batch_sizes=batch_sizes, device=device, rounds=rounds,
                                 repeats=repeats, threads=threads, channels_last=flags)
    kept: dict[tuple[str, int], tuple[Timing, bool]] = {}
    for n in folded:
        for b in batch_sizes:
            kept[(n, b)] = min(((timing[(f"{n}@{'channels_last' if cl else 'nchw'}", b)], cl) for cl in layouts[n]),
                               key=lambda tc: tc[0].median_s)
    out: dict[str, dict[str, float | str]] = {}
    for n in folded:
        row: dict[str, float | str] = {}
        for b in batch_sizes:
            t, cl = kept[(n, b)]
            row[f"{prefix}_bs{b}"] = t.median_ms
            row[f"latency_format_bs{b}"] = "channels_last" if cl else "nchw"
        if reference is not None:
            row.update({f"speedup_bs{b}": round_ratio(kept[(reference, b)][0], kept[(n, b)][0]) for b in batch_sizes})
        out[n] = row
    return out
