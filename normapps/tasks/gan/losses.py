"""GAN losses on raw discriminator scores: hinge, non-saturating (ns) and WGAN-GP."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSSES = ("hinge", "ns", "wgan_gp")


def check_loss(kind: str) -> str:
    if kind not in LOSSES:
        raise ValueError(f"model.loss must be one of {LOSSES}, got {kind!r}")
    return kind


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss without the gradient penalty (added separately for wgan_gp)."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "ns":
        # -log sigmoid(r) - log(1 - sigmoid(f)), written with softplus for stability.
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wgan_gp":
        return fake.mean() - real.mean()
    raise ValueError(f"model.loss must be one of {LOSSES}, got {kind!r}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    fake = fake.float()
    if kind in ("hinge", "wgan_gp"):
        return -fake.mean()
    if kind == "ns":
        return F.softplus(-fake).mean()
    raise ValueError(f"model.loss must be one of {LOSSES}, got {kind!r}")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al. 2017: E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).square().mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018: E[||grad_x D(x)||^2] on real images (the caller weighs it by
    gamma / 2). Differentiable w.r.t. D's parameters (create_graph)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).float().sum(), x, create_graph=True)
    return grad.flatten(1).square().sum(1).mean()
