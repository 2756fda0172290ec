"""``adapt=tent``: test-time entropy minimization (Wang et al., ICLR 2021).

Only the affine parameters (weight, bias) of every BN, GroupNorm and LayerNorm layer are
optimized, to minimize the mean softmax entropy of each target batch; BN layers normalize with
the batch's statistics (running statistics untouched); Adam, lr 1e-3 by default. As in the
official code each batch's prediction is the output of the forward pass that drives its (last)
update, so episodic TENT with one step predicts exactly like test-time BN.

Modes (``mode``):
- ``continual``: adapt across all target batches without resetting (TENT's online setting);
- ``episodic``: restore the source parameters and optimizer state before every batch;
- ``reset``: restore them every ``reset_every`` batches (guards continual adaptation against
  collapse on long target streams).

Batch size 1: GN/LN are per sample anyway; a BN with spatial maps normalizes with the single
sample's statistics; a BN that sees one value per channel keeps its source running statistics
for that call (no crash); entropy minimization runs as usual.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normapps.norm import use_batch_stats
from normapps.tasks.domain_adaptation.common import entropy

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)
TENT_MODES = ("continual", "episodic", "reset")


def norm_affine_params(model: nn.Module) -> list[nn.Parameter]:
    """Weight and bias of every BN / GN / LN layer (the only parameters TENT updates)."""
    params = []
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            params += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None))
                       if isinstance(p, nn.Parameter)]
    return params


def check_tent_options(*, lr: float, steps: int, mode: str, reset_every: int | None) -> None:
    if mode not in TENT_MODES:
        raise ValueError(f"adapt.mode must be one of {', '.join(TENT_MODES)}, got {mode!r}")
    if mode == "reset" and (reset_every is None or int(reset_every) < 1):
        raise ValueError(f"adapt.mode=reset needs adapt.reset_every >= 1, got {reset_every!r}")
    if int(steps) < 1:
        raise ValueError(f"adapt.steps must be >= 1, got {steps}")
    if not float(lr) > 0:
        raise ValueError(f"adapt.lr must be > 0, got {lr}")


class Tent:
    """Wraps a copy of a model; calling it on a target batch adapts and returns logits."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, steps: int = 1,
                 mode: str = "continual", reset_every: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> None:
        check_tent_options(lr=lr, steps=steps, mode=mode, reset_every=reset_every)
        self.model = copy.deepcopy(model).eval()
        use_batch_stats(self.model)
        self.model.requires_grad_(False)
        self.params = norm_affine_params(self.model)
        if not self.params:
            raise ValueError("TENT needs a model with affine BN, GroupNorm or LayerNorm layers")
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.steps, self.mode = int(steps), mode
        self.reset_every = int(reset_every) if reset_every else None
        self._model_state = copy.deepcopy(self.model.state_dict())
        self._opt_state = copy.deepcopy(self.optimizer.state_dict())
        self.batches_seen = 0

    def reset(self) -> None:
        """Back to the source parameters and a fresh optimizer state, exactly."""
        self.model.load_state_dict(self._model_state)
        self.optimizer.load_state_dict(copy.deepcopy(self._opt_state))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "episodic" or (
            self.mode == "reset" and self.batches_seen and self.batches_seen % self.reset_every == 0
        ):
            self.reset()
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.model(x)
                loss = entropy(logits).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        self.batches_seen += 1
        return logits.detach()


def predict_tent(model: nn.Module, target: torch.Tensor, *, batch_size: int, lr: float = 1e-3,
                 steps: int = 1, mode: str = "continual", reset_every: int | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Adapt on the target stream in order, ``batch_size`` images at a time."""
    tent = Tent(model.to(device), lr=lr, steps=steps, mode=mode, reset_every=reset_every)
    return torch.cat([tent(chunk.to(device)).float().cpu() for chunk in target.split(batch_size)])
