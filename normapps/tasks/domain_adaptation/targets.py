"""Target domains from ``data.target``: corruptions x severities (generated, or read from the
released files) and digit shifts, and the test streams over them.

Generated corruptions and synthetic shifts are applied to the source dataset's test split (the
same images the clean accuracy is measured on), so every row measures the shift alone; with
``data.target.released_dir`` the corrupted images and labels come from the released files
instead; dataset shifts (usps, mnist) load that dataset's test split at the source's size and
channels. ``data.target.n_examples`` keeps the first N images of each target (RobustBench's
convention for the released files).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from normapps.data.corruptions import check_severity, corrupt, resolve_corruptions
from normapps.data.released import check_released, load_released
from normapps.data.shifts import DATASET_SHIFTS, apply_shift, load_shift_dataset, resolve_shifts
from normapps.data.streams import Stream, build_streams, check_stream


@dataclass
class Target:
    name: str
    images: torch.Tensor
    labels: torch.Tensor
    corruption: str | None = None
    severity: int | None = None
    shift: str | None = None


@dataclass
class TargetSpec:
    corruptions: list[str]
    severities: list[int]
    shifts: list[str]
    seed: int
    rotate_degrees: float
    scale_factor: float
    stream: str = "reset"
    dirichlet: float | None = None
    released_dir: str | None = None
    n_examples: int | None = None
    batch_size: int = 128


def parse_target_spec(cfg: Mapping[str, Any]) -> TargetSpec:
    """Validate ``data.target`` (a plain dict) before any expensive work."""
    from normapps.platform.options import OptionError, as_int

    def names(key: str, resolve) -> list[str]:
        """One name, ``all`` or a list of names, resolved; errors name data.target.<key> (a
        number, e.g. data.target.shift=-1, is refused, not iterated)."""
        value = cfg.get(key)
        ok = value is None or isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
        if not ok:
            raise OptionError(f"data.target.{key}={value!r}: expected a name, all, or a list of names")
        try:
            return resolve(value)
        except ValueError as err:
            raise OptionError(f"data.target.{key}={value!r}: {err}") from None

    corruptions = names("corruption", resolve_corruptions)
    sev = cfg.get("severity", 5)
    sevs = [1, 2, 3, 4, 5] if sev == "all" else list(sev) if isinstance(sev, (list, tuple)) else [sev]
    severities = ([check_severity(as_int("data.target.severity", s, min=1, max=5)) for s in sevs]
                  if corruptions else [])
    shifts = names("shift", resolve_shifts)
    if not corruptions and not shifts:
        raise ValueError("no target: set data.target.corruption=<name>|all|extra|[list] and/or "
                         "data.target.shift=<inverted|colour|rotate|scale|usps|mnist>|all")
    from normapps.platform.options import as_float, as_int, as_text

    key = "data.target"
    dirichlet = as_float(f"{key}.dirichlet", cfg.get("dirichlet"), min=0.0, min_open=True, allow_none=True)
    stream = check_stream(as_text(f"{key}.stream", cfg.get("stream", "reset")), dirichlet)
    batch_size = as_int(f"{key}.batch_size", cfg.get("batch_size", 128), min=1)
    n = as_int(f"{key}.n_examples", cfg.get("n_examples"), min=1, allow_none=True)
    seed = as_int(f"{key}.seed", cfg.get("seed", 0), min=0)
    rotate = as_float(f"{key}.rotate_degrees", cfg.get("rotate_degrees", 45.0), min=0.0, max=180.0)
    scale = as_float(f"{key}.scale_factor", cfg.get("scale_factor", 0.6), min=0.0, max=1.0, min_open=True)
    released = as_text(f"{key}.released_dir", cfg.get("released_dir"), allow_none=True)
    if released is not None and not Path(released).expanduser().is_dir():
        raise NotADirectoryError(f"{key}.released_dir={released}: no such folder (the released "
                                 f"CIFAR-10-C / CIFAR-100-C / ImageNet-C files go there)")
    if released and corruptions:
        check_released(Path(str(released)).expanduser(), corruptions)
    return TargetSpec(corruptions, severities, shifts, seed, rotate, scale,
                      stream=stream, dirichlet=None if dirichlet is None else float(dirichlet),
                      released_dir=str(Path(str(released)).expanduser()) if released else None,
                      n_examples=None if n is None else int(n), batch_size=batch_size)


def load_dataset_shifts(spec: TargetSpec, *, root: str, download: bool, image_size: int,
                        channels: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Load usps/mnist targets up front, so a missing dataset fails before training."""
    return {name: load_shift_dataset(name, root=root, download=download, image_size=image_size,
                                     channels=channels)
            for name in spec.shifts if name in DATASET_SHIFTS}


def _first(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if n is None else (x[:n], y[:n])


def build_targets(spec: TargetSpec, images: torch.Tensor, labels: torch.Tensor, *,
                  loaded: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                  image_size: int | None = None, channels: int = 3,
                  num_classes: int | None = None) -> list[Target]:
    """One Target per (corruption, severity) and per shift, in table (and stream) order."""
    out = []
    images, labels = _first(images, labels, spec.n_examples)
    for name in spec.corruptions:
        for sev in spec.severities:
            if spec.released_dir:
                x, y = load_released(spec.released_dir, name, sev, n_examples=spec.n_examples,
                                     image_size=image_size, channels=channels)
                if num_classes is not None and len(y) and int(y.max()) >= num_classes:
                    raise ValueError(f"{spec.released_dir}/labels.npy has class {int(y.max())} but the "
                                     f"source model has {num_classes} classes: released data must "
                                     f"share the source data's classes")
            else:
                x, y = corrupt(images, name, sev, seed=spec.seed), labels
            out.append(Target(f"{name}-{sev}", x, y, corruption=name, severity=sev))
    for name in spec.shifts:
        if name in DATASET_SHIFTS:
            x, y = _first(*(loaded or {})[name], spec.n_examples)
            out.append(Target(name, x, y, shift=name))
        else:
            x = apply_shift(images, name, seed=spec.seed, rotate_degrees=spec.rotate_degrees,
                            scale_factor=spec.scale_factor)
            out.append(Target(name, x, labels, shift=name))
    return out


def target_streams(spec: TargetSpec, targets: list[Target]) -> list[Stream]:
    return build_streams(spec.stream, [(t.name, t.images, t.labels) for t in targets],
                         seed=spec.seed, dirichlet=spec.dirichlet)


def dataset_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a TensorDataset or a Subset of one, without a Python loop."""
    from torch.utils.data import Subset, TensorDataset

    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
        idx = torch.as_tensor(ds.indices)
        return ds.dataset.tensors[0][idx], ds.dataset.tensors[1][idx]
    xs, ys = zip(*(ds[i][:2] for i in range(len(ds))))  # generic datasets: decode once
    return torch.stack(xs), torch.as_tensor(ys)
