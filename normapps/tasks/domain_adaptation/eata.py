"""``adapt=eata``: efficient anti-forgetting test-time adaptation (Niu et al., ICML 2022).

TENT's entropy minimization over norm affine parameters, on selected samples only:
- reliability: entropy below E0 = ``e_margin`` * ln(C) (0.4 in the paper);
- redundancy: |cosine similarity| of the sample's softmax with the moving average (momentum
  0.9) of the selected samples' softmax below ``d_margin``;
- each kept sample's entropy weighted by 1 / exp(E - E0);
- an anti-forgetting term ``fisher_alpha`` * sum F (theta - theta_source)^2, with F the
  diagonal Fisher information measured on ``fisher_size`` clean source images (cross-entropy
  against the model's own predictions, as in the official code).
A batch in which no sample survives both filters does not update the model. The official
code uses SGD with momentum 0.9 (lr 2.5e-4 at ImageNet batch 64).

``d_margin``: 0.05 is the paper's ImageNet value; with 10 classes the softmax vectors of two
unrelated confident predictions already have cosine ~0.1-0.3, so 0.05 would drop nearly every
sample. The default here is 0.4.
"""
from __future__ import annotations

import torch
from torch import nn

from normapps.norm import (
    entropy_margin, entropy_weights, fisher_diagonal, fisher_penalty, redundancy_mask,
    reliable_mask, softmax_entropy, update_mean_probs,
)
from normapps.tasks.domain_adaptation.online import OnlineAdapter, predict_online


def check_eata_options(*, e_margin: float, d_margin: float, fisher_alpha: float, fisher_size: int) -> None:
    if not float(e_margin) > 0:
        raise ValueError(f"adapt.eata.e_margin (E0 / ln C) must be > 0, got {e_margin}")
    if not float(d_margin) > 0:
        raise ValueError(f"adapt.eata.d_margin must be > 0, got {d_margin}")
    if not float(fisher_alpha) >= 0:
        raise ValueError(f"adapt.eata.fisher_alpha must be >= 0, got {fisher_alpha}")
    if int(fisher_size) < 0:
        raise ValueError(f"adapt.eata.fisher_size must be >= 0, got {fisher_size}")


class Eata(OnlineAdapter):
    name = "eata"

    def __init__(self, model: nn.Module, *, source_images: torch.Tensor | None = None,
                 e_margin: float = 0.4, d_margin: float = 0.4, fisher_alpha: float = 2000.0,
                 fisher_size: int = 512, fisher_batch_size: int = 64, optimizer: str = "sgd",
                 lr: float = 2.5e-4, **kw) -> None:
        check_eata_options(e_margin=e_margin, d_margin=d_margin, fisher_alpha=fisher_alpha,
                           fisher_size=fisher_size)
        super().__init__(model, optimizer=optimizer, lr=lr, **kw)
        self.e_margin_factor = float(e_margin)
        self.e_margin: float | None = None  # E0 needs the class count: set at the first batch
        self.d_margin = float(d_margin)
        self.fisher_alpha = float(fisher_alpha)
        self.mean_probs: torch.Tensor | None = None
        self.fisher = None
        self.anchors = [p.detach().clone() for p in self.params]
        if self.fisher_alpha > 0 and int(fisher_size) > 0:
            if source_images is None or not len(source_images):
                raise ValueError("adapt=eata with adapt.eata.fisher_alpha > 0 needs clean source images "
                                 "for its Fisher information (or set adapt.eata.fisher_alpha=0)")
            device = self.params[0].device
            batches = [b.to(device) for b in source_images[:int(fisher_size)].split(int(fisher_batch_size))]
            self.fisher = fisher_diagonal(self.model, self.params, batches)
        self.updated_samples = 0

    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.e_margin is None:
            self.e_margin = entropy_margin(logits.shape[1], self.e_margin_factor)
        ent = softmax_entropy(logits)
        keep = reliable_mask(ent, self.e_margin)
        probs = logits.softmax(1)
        keep_ids = keep.nonzero().squeeze(1)
        novel = redundancy_mask(probs[keep_ids], self.mean_probs, self.d_margin)
        selected = keep_ids[novel]
        self.mean_probs = update_mean_probs(self.mean_probs, probs[selected])
        self.optimizer.zero_grad(set_to_none=True)
        if len(selected):
            ent_sel = ent[selected]
            loss = (ent_sel * entropy_weights(ent_sel, self.e_margin)).mean()
            if self.fisher is not None:
                loss = loss + fisher_penalty(self.params, self.fisher, self.anchors, self.fisher_alpha)
            loss.backward()
            self.optimizer.step()
            self.updated_samples += len(selected)
        return logits


def predict_eata(model: nn.Module, target: torch.Tensor, *, batch_size: int,
                 source_images: torch.Tensor | None = None, device: torch.device | str = "cpu",
                 **options) -> torch.Tensor:
    adapter = Eata(model.to(device), source_images=source_images, **options)
    return predict_online(adapter, target, batch_size=batch_size, device=device)
