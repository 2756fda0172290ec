"""Test-time adaptation of normalization layers: the pieces TENT, EATA and SAR are built from.

- which norm layers adapt (:func:`norm_layer_kind`, :func:`norm_affine_params`,
  :func:`configure_norm_adaptation`): only the affine weight/bias of the chosen kinds
  (``batch``, ``group``, ``layer``) get gradients; BN normalizes with batch statistics;
- the objective and sample selection: :func:`softmax_entropy`, :func:`entropy_margin`
  (E0 = factor * ln C), :func:`reliable_mask` (EATA / SAR: entropy below E0),
  :func:`redundancy_mask` and :func:`update_mean_probs` (EATA: skip samples whose prediction
  is too similar to the recent average), :func:`entropy_weights` (EATA's 1 / exp(E - E0));
- anti-forgetting: :func:`fisher_diagonal` and :func:`fisher_penalty` (EATA's EWC term);
- :class:`SAM`, sharpness-aware minimization (Foret et al. 2021) around any base optimizer (SAR);
- :class:`StateSnapshot`: model + optimizer state to restore exactly (episodic resets, SAR's
  model recovery).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .factory import check_norm_kind, norm_kind_of
from .test_time import use_batch_stats

__all__ = [
    "ADAPTABLE_NORM_KINDS", "check_adaptable_kinds", "norm_layer_kind", "norm_affine_params", "configure_norm_adaptation",
    "softmax_entropy", "entropy_margin", "reliable_mask", "redundancy_mask", "update_mean_probs",
    "entropy_weights", "fisher_diagonal", "fisher_penalty", "SAM", "StateSnapshot",
]

ADAPTABLE_NORM_KINDS = ("batch", "group", "layer")


def norm_layer_kind(module: nn.Module) -> str | None:
    """``batch``, ``group``, ``layer`` (nn.LayerNorm or a one-group GroupNorm, which is what
    ``build_norm("layer")`` makes for feature maps), ``instance``, another registry kind or
    None: the core's :func:`normapps.norm.factory.norm_kind_of`."""
    return norm_kind_of(module)


def check_adaptable_kinds(kinds: str | Sequence[str], option: str = "norm kinds to adapt",
                          allowed: Sequence[str] = ADAPTABLE_NORM_KINDS + ("instance",)) -> tuple[str, ...]:
    """``kinds`` (one name or a list, not empty) as a tuple of registry kinds among ``allowed``,
    else a ValueError naming ``option``."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds or ())
    if not kinds:
        raise ValueError(f"{option} must list norm kinds among {', '.join(allowed)}, got []")
    return tuple(check_norm_kind(k, option, allowed) for k in kinds)


def norm_affine_params(model: nn.Module, kinds: Sequence[str] = ADAPTABLE_NORM_KINDS, *,
                       exclude: Sequence[str] = ()) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the weight and bias of every norm layer of ``kinds``, skipping
    modules whose qualified name starts with one of ``exclude``."""
    kinds = check_adaptable_kinds(kinds)
    out = []
    for name, m in model.named_modules():
        if norm_layer_kind(m) not in kinds or any(name.startswith(e) for e in exclude if e):
            continue
        for pname in ("weight", "bias"):
            p = getattr(m, pname, None)
            if isinstance(p, nn.Parameter):
                out.append((f"{name}.{pname}" if name else pname, p))
    return out


def configure_norm_adaptation(model: nn.Module, kinds: Sequence[str] = ("batch",), *,
                              exclude: Sequence[str] = ()) -> list[nn.Parameter]:
    """Prepare ``model`` (in place) as TENT does: eval mode, every BN on batch statistics,
    gradients only for the affine parameters of the chosen norm kinds; returns those."""
    model.eval()
    use_batch_stats(model)
    model.requires_grad_(False)
    params = [p for _, p in norm_affine_params(model, kinds, exclude=exclude)]
    for p in params:
        p.requires_grad_(True)
    return params


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the softmax, per sample (nats)."""
    logp = logits.float().log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def entropy_margin(num_classes: int, factor: float = 0.4) -> float:
    """E0 = factor * ln(C): EATA's and SAR's reliability threshold (factor 0.4 in both papers)."""
    return float(factor) * math.log(num_classes)


def reliable_mask(entropies: torch.Tensor, margin: float) -> torch.Tensor:
    """Samples whose entropy is below the margin."""
    return entropies < margin


def redundancy_mask(probs: torch.Tensor, mean_probs: torch.Tensor | None, d_margin: float) -> torch.Tensor:
    """EATA: keep samples whose softmax has |cosine similarity| < d_margin with the moving
    average of recent predictions (all samples while there is no average yet)."""
    if mean_probs is None:
        return torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    cos = F.cosine_similarity(mean_probs.unsqueeze(0), probs, dim=1)
    return cos.abs() < d_margin


@torch.no_grad()
def update_mean_probs(mean_probs: torch.Tensor | None, probs: torch.Tensor,
                      momentum: float = 0.9) -> torch.Tensor | None:
    """EATA's moving average of the selected samples' softmax (unchanged when none)."""
    if probs.shape[0] == 0:
        return mean_probs
    new = probs.detach().mean(0)
    return new if mean_probs is None else momentum * mean_probs + (1 - momentum) * new


def entropy_weights(entropies: torch.Tensor, margin: float) -> torch.Tensor:
    """EATA's sample weights 1 / exp(E - E0) (no gradient): confident samples count more."""
    return torch.exp(-(entropies.detach() - margin))


def fisher_diagonal(model: nn.Module, params: Sequence[nn.Parameter], batches: Iterable[torch.Tensor],
                    *, loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Diagonal Fisher information of ``params``, averaged over ``batches`` (EATA).

    Per batch, the squared gradient of the loss (default: cross-entropy against the model's
    own predictions, as EATA computes it on unlabelled clean samples); the model's state is
    left as it was (gradients cleared).
    """
    fisher = [torch.zeros_like(p) for p in params]
    count = 0
    with torch.enable_grad():
        for x in batches:
            logits = model(x)
            loss = loss_fn(logits) if loss_fn else F.cross_entropy(logits, logits.detach().argmax(1))
            grads = torch.autograd.grad(loss, list(params), allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f += g.detach().square()
            count += 1
    return [f / max(count, 1) for f in fisher]


def fisher_penalty(params: Sequence[nn.Parameter], fisher: Sequence[torch.Tensor],
                   anchors: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """EATA's anti-forgetting term alpha * sum F * (theta - theta_source)^2."""
    total = sum(((f * (p - a).square()).sum() for p, f, a in zip(params, fisher, anchors)),
                torch.zeros(()))
    return alpha * total


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization around ``base_optimizer`` (Foret et al. 2021).

    ``first_step`` moves every parameter to the worst case within an L2 ball of radius rho
    along its gradient (``adaptive``: scaled by |theta|, ASAM); ``second_step`` moves back and
    lets the base optimizer step with the gradient taken there.
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], *, rho: float = 0.05,
                 adaptive: bool = False, **kwargs) -> None:
        if not rho >= 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(p=2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.stack(norms).norm(p=2) if norms else torch.zeros(())

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                p.add_((p.square() if group["adaptive"] else 1.0) * p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)  # exactly back (adding and subtracting e_w would round)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure=None):  # pragma: no cover - SAM needs two forward passes
        raise RuntimeError("SAM needs first_step() and second_step() around a second forward pass")


class StateSnapshot:
    """The exact state of a model and its optimizer, to restore at will."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.model, self.optimizer = model, optimizer
        self._model_state = copy.deepcopy(model.state_dict())
        # SAM keeps the momentum etc. in its base optimizer.
        inner = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
        self._opt_state = copy.deepcopy(inner.state_dict()) if inner is not None else None

    def restore(self) -> None:
        self.model.load_state_dict(self._model_state)
        if self.optimizer is None:
            return
        if isinstance(self.optimizer, SAM):
            self.optimizer.base_optimizer.load_state_dict(copy.deepcopy(self._opt_state))
            self.optimizer.state.clear()
            self.optimizer.param_groups = self.optimizer.base_optimizer.param_groups
        else:
            self.optimizer.load_state_dict(copy.deepcopy(self._opt_state))
