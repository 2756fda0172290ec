"""``adapt=dsbn``: DSBN + self-training - domain-specific batch norm (Chang et al., CVPR 2019)
trained with source cross-entropy and target pseudo-labels.

This is not the paper's full two-stage method: the paper's stage 1 is a complete UDA method
with DSBN (MSTN) and its stage 2 trains a fresh network on stage 1's pseudo-labels of the
target *train* split, scored on held-out target data. Here both stages are self-training from
the source model, on the same unlabelled target images that are scored (transductive, like
AdaBN), so tables and docs call it "DSBN + self-training".

Every BN of a copy of the source model becomes the core's ``DomainBatchNorm`` with one branch
per domain (sources first, then targets); all other weights are shared. Branches start as
copies of the source BN, and each target branch's statistics are first re-estimated on its
target data (AdaBN), so the first pseudo-labels are not made with source statistics.

- Stage 1: each step feeds one mixed batch holding a labelled batch of every source and an
  unlabelled batch of every target; ``set_domain`` routes every sample to its own domain's
  branch. Loss: cross-entropy on the sources plus ``target_weight`` times cross-entropy on the
  target samples whose target-branch prediction (from the same forward, detached) is at least
  ``threshold`` confident.
- Stage 2: pseudo-labels are fixed from the stage-1 model's target branches (eval mode, same
  threshold) and training continues on sources plus pseudo-labelled targets (self-training).
  The paper trains a fresh network in stage 2; here it continues from stage 1 (cheaper).

Predictions come from each target's branch with its running statistics.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from normapps.norm import convert_to_domain_bn, domain_context, recalibrate_bn, set_domain
from normapps.norm.bn_tools import bn_modules
from normapps.tasks.domain_adaptation.common import predict_logits


def check_dsbn_options(*, threshold: float, stage1_epochs: int, stage2_epochs: int, lr: float,
                       target_weight: float) -> None:
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"adapt.dsbn.threshold must be in [0, 1], got {threshold}")
    if int(stage1_epochs) < 0 or int(stage2_epochs) < 0:
        raise ValueError("adapt.dsbn.stage1_epochs and adapt.dsbn.stage2_epochs must be >= 0")
    if not float(lr) > 0:
        raise ValueError(f"adapt.dsbn.lr must be > 0, got {lr}")
    if float(target_weight) < 0:
        raise ValueError(f"adapt.dsbn.target_weight must be >= 0, got {target_weight}")


def _batches(n: int, batch_size: int, steps: int, g: torch.Generator) -> list[torch.Tensor]:
    """``steps`` index batches cycling through fresh permutations of ``range(n)``."""
    idx = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(steps * batch_size / n) + 1)])
    return [idx[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def _train_stage(model, sources, targets, pseudo, *, epochs, batch_size, lr, target_weight,
                 threshold, g, device) -> None:
    """One DSBN stage. ``pseudo[j]`` is None (online pseudo-labels, stage 1) or a pair
    (indices, labels) of fixed confident pseudo-labels for target j (stage 2)."""
    if epochs <= 0:
        return
    num_src = len(sources)
    # An epoch is one pass over the (largest) target set: targets are what DSBN adapts to, and
    # the source sets are usually much larger.
    steps = epochs * max(1, math.ceil(max(len(x) for x in targets) / batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    src_b = [_batches(len(x), batch_size, steps, g) for x, _ in sources]
    tgt_pool = [torch.arange(len(x)) if p is None else p[0] for x, p in zip(targets, pseudo)]
    tgt_b = [_batches(len(pool), batch_size, steps, g) if len(pool) else None for pool in tgt_pool]
    model.train()
    for step in range(steps):
        # parts: (kind, size, labels) per domain, in the order of the mixed batch.
        xs, domains, parts = [], [], []
        for d, (x, y) in enumerate(sources):
            i = src_b[d][step]
            xs.append(x[i])
            domains.append(torch.full((len(i),), d))
            parts.append(("src", len(i), y[i]))
        for j, x in enumerate(targets):
            if tgt_b[j] is None:  # stage 2 and no confident pseudo-label for this target
                continue
            i = tgt_pool[j][tgt_b[j][step]]
            xs.append(x[i])
            domains.append(torch.full((len(i),), num_src + j))
            parts.append(("tgt", len(i), None if pseudo[j] is None else pseudo[j][1][tgt_b[j][step]]))
        domain = torch.cat(domains).to(device)
        set_domain(model, domain)  # every sample goes through its own domain's BN branch
        logits = model(torch.cat(xs).to(device))
        src_loss, tgt_loss, start = [], [], 0
        for kind, size, labels in parts:
            out = logits[start:start + size]
            start += size
            if kind == "src":
                src_loss.append(F.cross_entropy(out, labels.to(device)))
            elif labels is None:  # stage 1: online pseudo-labels from the target branch
                conf, pseudo_labels = out.detach().softmax(1).max(1)
                keep = conf >= threshold
                if keep.any():
                    tgt_loss.append(F.cross_entropy(out[keep], pseudo_labels[keep]))
            else:
                tgt_loss.append(F.cross_entropy(out, labels.to(device)))
        loss = torch.stack(src_loss).mean()
        if tgt_loss and target_weight > 0:
            loss = loss + target_weight * torch.stack(tgt_loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    set_domain(model, 0)
    model.eval()


@torch.no_grad()
def _fixed_pseudo_labels(model, targets, num_src, *, threshold, batch_size, device):
    out = []
    for j, x in enumerate(targets):
        with domain_context(model, num_src + j):
            probs = predict_logits(model.eval(), x, batch_size=batch_size, device=device).softmax(1)
        conf, labels = probs.max(1)
        keep = (conf >= threshold).nonzero().squeeze(1)
        out.append((keep, labels[keep]))
    return out


def dsbn_adapt(model: nn.Module, sources: list[tuple[torch.Tensor, torch.Tensor]],
               targets: list[torch.Tensor], *, threshold: float = 0.9, stage1_epochs: int = 3,
               stage2_epochs: int = 2, lr: float = 0.01, target_weight: float = 1.0,
               batch_size: int = 64, seed: int = 0, device: torch.device | str = "cpu") -> nn.Module:
    """Train a DSBN copy of ``model`` on labelled ``sources`` and unlabelled ``targets``.

    Domain ``d < len(sources)`` is source ``d``; domain ``len(sources) + j`` is target ``j``.
    Returns the adapted model in eval mode (route with ``domain_context`` / ``set_domain``).
    """
    check_dsbn_options(threshold=threshold, stage1_epochs=stage1_epochs,
                       stage2_epochs=stage2_epochs, lr=lr, target_weight=target_weight)
    if not sources or not targets:
        raise ValueError("DSBN needs at least one labelled source and one unlabelled target")
    num_src = len(sources)
    adapted = copy.deepcopy(model).to(device).eval()
    if not bn_modules(adapted):
        raise ValueError("DSBN needs a model with BatchNorm layers (model.norm=batch)")
    convert_to_domain_bn(adapted, num_src + len(targets))
    g = torch.Generator().manual_seed(seed)
    for j, x in enumerate(targets):  # target branches start from target statistics
        with domain_context(adapted, num_src + j):
            recalibrate_bn(adapted, x.split(batch_size))
    kw = dict(batch_size=batch_size, lr=lr, target_weight=target_weight, threshold=threshold,
              g=g, device=device)
    _train_stage(adapted, sources, targets, [None] * len(targets), epochs=stage1_epochs, **kw)
    if stage2_epochs > 0:
        pseudo = _fixed_pseudo_labels(adapted, targets, num_src, threshold=threshold,
                                      batch_size=batch_size, device=device)
        _train_stage(adapted, sources, targets, pseudo, epochs=stage2_epochs, **kw)
    return adapted.eval()


def predict_dsbn(model: nn.Module, target: torch.Tensor, *, sources, batch_size: int,
                 train_batch_size: int = 64, device: torch.device | str = "cpu",
                 **options) -> torch.Tensor:
    adapted = dsbn_adapt(model, sources, [target], batch_size=train_batch_size, device=device,
                         **options)
    with domain_context(adapted, len(sources)):
        return predict_logits(adapted, target, batch_size=batch_size, device=device)
