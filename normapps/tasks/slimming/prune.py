"""Network slimming's pruning: one global |gamma| threshold, physical removal with Torch-Pruning.

A *plan* maps every BN's qualified name to the channel indices it keeps. Channels that a
residual connection couples (e.g. every ``bn2`` of a ResNet stage and its shortcut BN) form one
group: Torch-Pruning's DependencyGraph finds the groups and does the surgery, so a group's
channels are kept or removed together, in every layer that reads or writes them.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normapps.norm import bn_modules


@dataclass
class ChannelGroup:
    """BN channels coupled by the graph: ``members[bn_name]`` maps root channel -> BN channel."""

    root: str
    size: int
    members: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass
class SlimmingPlan:
    threshold: float
    ratio: float
    keep: dict[str, list[int]]  # BN name -> kept channel indices (sorted)
    widths_before: dict[str, int]

    @property
    def widths_after(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in self.keep.items()}

    def pruned_fraction(self) -> float:
        before = sum(self.widths_before.values())
        return 1.0 - sum(self.widths_after.values()) / max(before, 1)

    def summary(self) -> dict:
        return {"threshold": self.threshold, "ratio": self.ratio,
                "pruned_fraction": self.pruned_fraction(),
                "widths_before": self.widths_before, "widths_after": self.widths_after}


def prunable_bns(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """BNs with a learnable scale, the only ones network slimming can rank."""
    return [(n, m) for n, m in bn_modules(model) if m.affine and m.weight is not None]


def bn_widths(model: nn.Module) -> dict[str, int]:
    return {name: int(bn.num_features) for name, bn in bn_modules(model)}


def _dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    # Tracing runs a forward pass: eval mode so BN running statistics stay untouched.
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        model.train(was_training)


def channel_groups(model: nn.Module, example: torch.Tensor,
                   dg: tp.DependencyGraph | None = None) -> list[ChannelGroup]:
    """Every set of BN channels that must be pruned together, rooted at its first BN."""
    dg = dg or _dependency_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    seen: set[str] = set()
    groups = []
    for name, bn in bn_modules(model):
        if name in seen:
            continue
        group = dg.get_pruning_group(bn, tp.prune_batchnorm_out_channels,
                                     idxs=list(range(bn.num_features)))
        cg = ChannelGroup(root=name, size=bn.num_features)
        for item in group:
            target = item.dep.target.module
            if isinstance(target, _BatchNorm) and names.get(target) is not None:
                mapping = cg.members.setdefault(names[target], {})
                mapping.update(zip(item.root_idxs, item.idxs))
        seen.update(cg.members)
        groups.append(cg)
    return groups


def global_threshold(scores: torch.Tensor, ratio: float) -> float:
    """The |gamma| value below which ``ratio`` of all channels lie (the paper's percentile)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"slimming.ratio must be in [0, 1), got {ratio}")
    flat = scores.flatten().sort().values
    k = int(math.floor(ratio * flat.numel()))
    if k == 0:
        return float("-inf")
    # Midway between the last pruned and the first kept value, so ties at the edge stay kept.
    return float((flat[k - 1] + flat[k]) / 2) if flat[k] > flat[k - 1] else float(flat[k - 1])


def make_plan(model: nn.Module, example: torch.Tensor, *, ratio: float, min_channels: int = 1,
              groups: list[ChannelGroup] | None = None) -> SlimmingPlan:
    """Keep channels whose |gamma| reaches the global threshold; never fewer than
    ``min_channels`` per layer (the strongest ones), so no layer is ever emptied.

    A coupled channel's score is the mean |gamma| over the BNs it appears in.
    """
    if min_channels < 1:
        raise ValueError(f"slimming.min_channels must be >= 1, got {min_channels}")
    bns = dict(bn_modules(model))
    ranked = dict(prunable_bns(model))
    if not ranked:
        raise ValueError("network slimming needs BatchNorm layers with a learnable scale; "
                         "use model.norm=batch")
    groups = groups if groups is not None else channel_groups(model, example)
    all_scores = torch.cat([bn.weight.detach().abs().flatten().cpu() for bn in ranked.values()])
    thr = global_threshold(all_scores, ratio)
    keep: dict[str, list[int]] = {}
    for g in groups:
        per_root = torch.zeros(g.size)
        counts = torch.zeros(g.size)
        for name, mapping in g.members.items():
            if name not in ranked:
                continue
            gamma = ranked[name].weight.detach().abs().cpu()
            roots = torch.tensor(list(mapping.keys()))
            per_root[roots] += gamma[torch.tensor(list(mapping.values()))]
            counts[roots] += 1
        if counts.eq(0).all():  # no learnable scale in this group: keep it whole
            kept_roots = list(range(g.size))
        else:
            score = per_root / counts.clamp_min(1)
            kept = score >= thr
            floor = min(min_channels, g.size)
            if int(kept.sum()) < floor:
                kept = torch.zeros_like(kept)
                kept[score.topk(floor).indices] = True
            kept_roots = kept.nonzero().flatten().tolist()
        for name, mapping in g.members.items():
            keep[name] = sorted(mapping[r] for r in kept_roots if r in mapping)
    missing = set(bns) - set(keep)
    for name in missing:  # not reached by any group: leave whole
        keep[name] = list(range(bns[name].num_features))
    return SlimmingPlan(threshold=thr, ratio=ratio, keep=keep, widths_before=bn_widths(model))


def apply_plan(model: nn.Module, example: torch.Tensor, keep: dict[str, list[int]]) -> nn.Module:
    """Physically remove every channel ``keep`` does not list (in place); returns ``model``."""
    bns = dict(bn_modules(model))
    unknown = set(keep) - set(bns)
    if unknown:
        raise ValueError(f"plan names BN layers the model does not have: {sorted(unknown)[:5]}")
    dg = _dependency_graph(model, example)
    for g in channel_groups(model, example, dg):
        root_bn = bns[g.root]
        if g.root not in keep:
            continue
        kept = set(keep[g.root])
        drop = [c for c in range(g.size) if c not in kept]
        if not drop:
            continue
        if len(drop) >= g.size:
            raise ValueError(f"plan would remove every channel of {g.root}")
        group = dg.get_pruning_group(root_bn, tp.prune_batchnorm_out_channels, idxs=drop)
        group.prune()
    return model


def shrink_to_widths(model: nn.Module, example: torch.Tensor, widths: dict[str, int]) -> nn.Module:
    """Give a freshly built model the pruned widths (keeping the first channels of each group),
    so a pruned checkpoint's state dict loads into it without the original network."""
    current = bn_widths(model)
    unknown = set(widths) - set(current)
    if unknown:
        raise ValueError(f"checkpoint widths name BN layers the model does not have: {sorted(unknown)[:5]}")
    bad = {n: (w, current[n]) for n, w in widths.items() if not 1 <= w <= current[n]}
    if bad:
        raise ValueError(f"checkpoint widths out of range (width, full) for {bad}")
    apply_plan(model, example, {n: list(range(w)) for n, w in widths.items()})
    after = bn_widths(model)
    wrong = {n: (after[n], w) for n, w in widths.items() if after[n] != w}
    if wrong:
        raise ValueError(f"could not rebuild the pruned widths (got, expected): {wrong}")
    return model


def masked_copy(model: nn.Module, keep: dict[str, list[int]]) -> nn.Module:
    """The original network with every pruned BN channel silenced (gamma = beta = 0), which is
    what the physically pruned network must compute exactly."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, bn in bn_modules(masked):
            if name not in keep or not bn.affine:
                continue
            drop = torch.ones(bn.num_features, dtype=torch.bool)
            drop[torch.tensor(keep[name], dtype=torch.long)] = False
            bn.weight[drop] = 0.0
            bn.bias[drop] = 0.0
    return masked


def slim(model: nn.Module, example: torch.Tensor, *, ratio: float,
         min_channels: int = 1) -> SlimmingPlan:
    """Plan and prune ``model`` in place; returns the plan."""
    plan = make_plan(model, example, ratio=ratio, min_channels=min_channels)
    apply_plan(model, example, plan.keep)
    return plan
