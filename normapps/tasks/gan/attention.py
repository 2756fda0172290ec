"""SAGAN's self-attention block (Zhang et al. 2019), as BigGAN uses it.

``x + gamma * o(g(x) . softmax(theta(x)^T phi(x)))`` with 1x1 convs theta, phi (C/8 channels),
g (C/2), o (back to C), phi and g max-pooled 2x2 (BigGAN's cheaper variant, a quarter of the
keys), and a learned gate ``gamma`` that starts at 0, so the block starts as the identity. In a
spectral-normalized network the 1x1 convs are normalized with the rest.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs at least 8 channels, got {channels}")
        self.theta = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.phi = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.g = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.o = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (N, C/8, HW)
        pool = (lambda t: F.max_pool2d(t, 2)) if h % 2 == 0 and w % 2 == 0 else (lambda t: t)
        phi = pool(self.phi(x)).flatten(2)  # (N, C/8, HW/4)
        g = pool(self.g(x)).flatten(2)  # (N, C/2, HW/4)
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4)
        o = self.o((g @ beta.transpose(1, 2)).view(n, c // 2, h, w))
        return x + self.gamma * o
