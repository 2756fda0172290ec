"""Target domains from ``data.target``: corruptions x severities and digit shifts.

Corruptions and synthetic shifts are applied to the source dataset's test split (the same
images the clean accuracy is measured on), so every row measures the shift alone; dataset
shifts (usps, mnist) load that dataset's test split at the source's size and channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from normapps.data.corruptions import check_severity, corrupt, resolve_corruptions
from normapps.data.shifts import DATASET_SHIFTS, apply_shift, load_shift_dataset, resolve_shifts


@dataclass
class Target:
    name: str
    images: torch.Tensor
    labels: torch.Tensor
    corruption: str | None = None
    severity: int | None = None
    shift: str | None = None

    def row(self) -> dict[str, Any]:
        return {"target": self.name, "corruption": self.corruption or "",
                "severity": self.severity if self.severity is not None else "",
                "shift": self.shift or ""}


@dataclass
class TargetSpec:
    corruptions: list[str]
    severities: list[int]
    shifts: list[str]
    seed: int
    rotate_degrees: float
    scale_factor: float


def parse_target_spec(cfg: Mapping[str, Any]) -> TargetSpec:
    """Validate ``data.target`` (a plain dict: names, severities) before any expensive work."""
    corruptions = resolve_corruptions(cfg.get("corruption"))
    sev = cfg.get("severity", 5)
    sevs = [1, 2, 3, 4, 5] if sev == "all" else list(sev) if isinstance(sev, (list, tuple)) else [sev]
    severities = [check_severity(s) for s in sevs] if corruptions else []
    shifts = resolve_shifts(cfg.get("shift"))
    if not corruptions and not shifts:
        raise ValueError("no target: set data.target.corruption=<name>|all and/or "
                         "data.target.shift=<inverted|colour|rotate|scale|usps|mnist>|all")
    return TargetSpec(corruptions, severities, shifts, int(cfg.get("seed", 0)),
                      float(cfg.get("rotate_degrees", 45.0)), float(cfg.get("scale_factor", 0.6)))


def load_dataset_shifts(spec: TargetSpec, *, root: str, download: bool, image_size: int,
                        channels: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Load usps/mnist targets up front, so a missing dataset fails before training."""
    return {name: load_shift_dataset(name, root=root, download=download, image_size=image_size,
                                     channels=channels)
            for name in spec.shifts if name in DATASET_SHIFTS}


def build_targets(spec: TargetSpec, images: torch.Tensor, labels: torch.Tensor, *,
                  loaded: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                  ) -> list[Target]:
    """One Target per (corruption, severity) and per shift, in table order."""
    out = []
    for name in spec.corruptions:
        for sev in spec.severities:
            x = corrupt(images, name, sev, seed=spec.seed)
            out.append(Target(f"{name}-{sev}", x, labels, corruption=name, severity=sev))
    for name in spec.shifts:
        if name in DATASET_SHIFTS:
            x, y = (loaded or {})[name]
            out.append(Target(name, x, y, shift=name))
        else:
            x = apply_shift(images, name, seed=spec.seed, rotate_degrees=spec.rotate_degrees,
                            scale_factor=spec.scale_factor)
            out.append(Target(name, x, labels, shift=name))
    return out


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
