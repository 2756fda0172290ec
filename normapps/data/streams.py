"""Test streams over several target domains, as test-time adaptation papers report them.

- ``reset``: one stream per domain, each adapted from the source model (TENT's protocol);
- ``continual``: one stream through the domains in the given order (CoTTA's benchmark);
- ``mixed``: one stream of all domains' samples shuffled together (mixed domain shifts);
- ``label_shift``: one stream per domain, its samples ordered so that classes come in
  temporally correlated runs, drawn with a Dirichlet distribution as in NOTE / RoTTA
  (:func:`dirichlet_label_order`; a small concentration gives long single-class runs, a large
  one approaches class-balanced slots).

Every order is deterministic by seed. A :class:`Stream` records, per sample, which domain it
came from, so errors can be reported per domain whatever the order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAMS = ("reset", "continual", "mixed", "label_shift")


@dataclass
class Stream:
    images: torch.Tensor
    labels: torch.Tensor
    domains: torch.Tensor  # (N,) index into the list of domains the stream was built from
    name: str


def check_stream(kind: str, dirichlet: float | None = None) -> str:
    if kind not in STREAMS:
        raise ValueError(f"data.target.stream must be one of {', '.join(STREAMS)}, got {kind!r}")
    if kind == "label_shift" and not (dirichlet is not None and float(dirichlet) > 0):
        raise ValueError(f"data.target.stream=label_shift needs data.target.dirichlet > 0 "
                         f"(the Dirichlet concentration), got {dirichlet!r}")
    return kind


def dirichlet_label_order(labels: torch.Tensor, concentration: float, *, num_slots: int | None = None,
                          seed: int = 0) -> torch.Tensor:
    """A permutation of ``range(len(labels))`` with classes in temporally correlated runs.

    RoTTA's scheme: the stream is cut into T time slots (default: one per class); each class's
    samples (in random order) are split over the slots with proportions drawn from
    Dirichlet(concentration * 1_T), and each slot lists its classes' chunks in random order.
    """
    if not concentration > 0:
        raise ValueError(f"Dirichlet concentration must be > 0, got {concentration}")
    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    classes = np.unique(labels_np)
    slots = int(num_slots or len(classes))
    proportions = rng.dirichlet([float(concentration)] * slots, size=len(classes))
    chunks: list[list[np.ndarray]] = [[] for _ in range(slots)]
    for c, frac in zip(classes, proportions):
        idx = rng.permutation(np.flatnonzero(labels_np == c))
        cuts = (np.cumsum(frac)[:-1] * len(idx)).astype(int)
        for t, part in enumerate(np.split(idx, cuts)):
            if len(part):
                chunks[t].append(part)
    order = [part for slot in chunks for i in rng.permutation(len(slot)) for part in [slot[i]]]
    return torch.from_numpy(np.concatenate(order).astype(np.int64))


def build_streams(kind: str, domains: list[tuple[str, torch.Tensor, torch.Tensor]], *,
                  seed: int = 0, dirichlet: float | None = None) -> list[Stream]:
    """Streams from (name, images, labels) per domain, in order."""
    check_stream(kind, dirichlet)
    if kind in ("reset", "label_shift"):
        out = []
        for d, (name, x, y) in enumerate(domains):
            order = (dirichlet_label_order(y, float(dirichlet), seed=seed + d) if kind == "label_shift"
                     else torch.arange(len(y)))
            out.append(Stream(x[order], y[order], torch.full((len(y),), d, dtype=torch.long), name))
        return out
    x = torch.cat([d[1] for d in domains])
    y = torch.cat([d[2] for d in domains])
    dom = torch.cat([torch.full((len(d[2]),), i, dtype=torch.long) for i, d in enumerate(domains)])
    if kind == "mixed":
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        x, y, dom = x[order], y[order], dom[order]
    return [Stream(x, y, dom, kind)]
