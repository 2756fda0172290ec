"""What TENT, EATA and SAR share: a copy of the source model whose chosen norm layers adapt
their affine parameters on each target batch as it arrives, predicting that batch with the
forward pass that drives its update (the papers' online protocol).

A method subclasses :class:`OnlineAdapter` and writes only ``adapt_step`` (its loss, sample
selection and update) and, if it needs one, a custom optimizer; layer selection, BN batch
statistics, the optimizer, resets and the stream loop are here, built on the core's
``normapps.norm.adaptation`` tools.

Reset modes (``mode``): ``continual`` never resets; ``episodic`` restores the source state
before every batch; ``reset`` every ``reset_every`` batches.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from normapps.norm import ADAPTABLE_NORM_KINDS, StateSnapshot, check_adaptable_kinds, configure_norm_adaptation, norm_affine_params

RESET_MODES = ("continual", "episodic", "reset")
OPTIMIZERS = ("adam", "sgd")


def check_norm_kinds(kinds, option: str) -> list[str]:
    return list(check_adaptable_kinds(kinds, option, ADAPTABLE_NORM_KINDS))


def check_online_options(prefix: str, *, lr: float, steps: int = 1, mode: str = "continual",
                         reset_every: int | None = None, optimizer: str = "adam") -> None:
    if mode not in RESET_MODES:
        raise ValueError(f"{prefix}.mode must be one of {', '.join(RESET_MODES)}, got {mode!r}")
    if mode == "reset" and (reset_every is None or int(reset_every) < 1):
        raise ValueError(f"{prefix}.mode=reset needs {prefix}.reset_every >= 1, got {reset_every!r}")
    if int(steps) < 1:
        raise ValueError(f"{prefix}.steps must be >= 1, got {steps}")
    if not float(lr) > 0:
        raise ValueError(f"{prefix}.lr must be > 0, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"{prefix}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")


def has_adaptable_norms(model: nn.Module, kinds: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    return bool(norm_affine_params(model, kinds, exclude=exclude))


class OnlineAdapter:
    """Wraps a copy of a model; calling it on a target batch adapts and returns logits."""

    name = "online"

    def __init__(self, model: nn.Module, *, norms: Sequence[str] = ("batch",), exclude: Sequence[str] = (),
                 lr: float = 1e-3, optimizer: str = "adam", momentum: float = 0.9, steps: int = 1,
                 mode: str = "continual", reset_every: int | None = None) -> None:
        check_online_options(f"adapt.{self.name}", lr=lr, steps=steps, mode=mode,
                             reset_every=reset_every, optimizer=optimizer)
        self.model = copy.deepcopy(model).eval()
        self.params = configure_norm_adaptation(self.model, check_norm_kinds(norms, f"adapt.{self.name}.norms"),
                                                exclude=exclude)
        if not self.params:
            raise ValueError(f"adapt={self.name} adapts the affine parameters of {list(norms)} layers "
                             f"(adapt.{self.name}.norms) and this model has none")
        self.optimizer = self.build_optimizer(self.params, optimizer=optimizer, lr=float(lr),
                                              momentum=float(momentum))
        self.steps, self.mode = int(steps), mode
        self.reset_every = int(reset_every) if reset_every else None
        self.snapshot = StateSnapshot(self.model, self.optimizer)
        self.batches_seen = 0
        self.resets = 0

    @staticmethod
    def optimizer_class(optimizer: str):
        return torch.optim.Adam if optimizer == "adam" else torch.optim.SGD

    def build_optimizer(self, params, *, optimizer: str, lr: float, momentum: float) -> torch.optim.Optimizer:
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
        return torch.optim.SGD(params, lr=lr, momentum=momentum)

    def reset(self) -> None:
        """Back to the source parameters and a fresh optimizer state, exactly."""
        self.snapshot.restore()
        self.resets += 1

    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "episodic" or (
            self.mode == "reset" and self.batches_seen and self.batches_seen % self.reset_every == 0
        ):
            self.reset()
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.adapt_step(x)
        self.batches_seen += 1
        return logits.detach()


def predict_online(adapter: OnlineAdapter, target: torch.Tensor, *, batch_size: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Adapt on the target stream in order, ``batch_size`` images at a time."""
    adapter.model.to(device)
    return torch.cat([adapter(chunk.to(device)).float().cpu() for chunk in target.split(batch_size)])
