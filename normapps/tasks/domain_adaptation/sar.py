"""``adapt=sar``: sharpness-aware and reliable entropy minimization (Niu et al., ICLR 2023).

Aimed at GN/LN models and batch size 1, where test-time BN and TENT fail:
- reliable entropy: only samples with entropy below E0 = ``e_margin`` * ln(C) (0.4) count;
- sharpness-aware: the core's ``SAM`` (rho ``rho``, 0.05) around SGD with momentum 0.9 moves
  the norm affine parameters to the worst case nearby, re-filters the samples there (their
  entropy changed) and steps with the gradient taken there;
- model recovery: a moving average (0.9) of the second-pass entropy below ``reset_constant``
  (0.2) signals collapse to a trivial solution, and the model is restored to the source state.
Norm layers: ``adapt.sar.norms`` (default all of batch, group, layer); the official code skips
the last stage of ResNet-50 / the last ViT blocks, ``adapt.sar.exclude`` takes such module
name prefixes.
"""
from __future__ import annotations

import torch
from torch import nn

from normapps.norm import ADAPTABLE_NORM_KINDS, SAM, entropy_margin, reliable_mask, softmax_entropy
from normapps.tasks.domain_adaptation.online import OnlineAdapter, predict_online


def check_sar_options(*, e_margin: float, rho: float, reset_constant: float) -> None:
    if not float(e_margin) > 0:
        raise ValueError(f"adapt.sar.e_margin (E0 / ln C) must be > 0, got {e_margin}")
    if not float(rho) > 0:
        raise ValueError(f"adapt.sar.rho must be > 0, got {rho}")
    if not float(reset_constant) >= 0:
        raise ValueError(f"adapt.sar.reset_constant must be >= 0, got {reset_constant}")


class Sar(OnlineAdapter):
    name = "sar"

    def __init__(self, model: nn.Module, *, e_margin: float = 0.4, rho: float = 0.05,
                 reset_constant: float = 0.2, norms=ADAPTABLE_NORM_KINDS, optimizer: str = "sgd",
                 lr: float = 2.5e-4, **kw) -> None:
        check_sar_options(e_margin=e_margin, rho=rho, reset_constant=reset_constant)
        self.rho = float(rho)
        super().__init__(model, norms=norms, optimizer=optimizer, lr=lr, **kw)
        self.e_margin_factor = float(e_margin)
        self.e_margin: float | None = None  # E0 needs the class count: set at the first batch
        self.reset_constant = float(reset_constant)
        self.ema: float | None = None

    def build_optimizer(self, params, *, optimizer: str, lr: float, momentum: float) -> torch.optim.Optimizer:
        base = self.optimizer_class(optimizer)
        kwargs = dict(lr=lr, momentum=momentum) if optimizer == "sgd" else dict(lr=lr)
        return SAM(params, base, rho=self.rho, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.ema = None

    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        if self.e_margin is None:
            self.e_margin = entropy_margin(logits.shape[1], self.e_margin_factor)
        ent = softmax_entropy(logits)
        keep = reliable_mask(ent, self.e_margin).nonzero().squeeze(1)
        if not len(keep):  # nothing reliable: no update (the official code steps with a NaN loss)
            return logits
        ent[keep].mean().backward()
        self.optimizer.first_step(zero_grad=True)
        ent2 = softmax_entropy(self.model(x))[keep]
        keep2 = reliable_mask(ent2, self.e_margin)
        if keep2.any():
            loss2 = ent2[keep2].mean()
            value = float(loss2.detach())
            self.ema = value if self.ema is None else 0.9 * self.ema + 0.1 * value
            loss2.backward()
        self.optimizer.second_step(zero_grad=True)
        if self.ema is not None and self.ema < self.reset_constant:
            self.reset()  # model recovery: the entropy collapsed
        return logits


def predict_sar(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                device: torch.device | str = "cpu", **options) -> torch.Tensor:
    adapter = Sar(model.to(device), **options)
    return predict_online(adapter, target, batch_size=batch_size, device=device)
