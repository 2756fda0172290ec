"""Recovery: how a normalized representation gets its scale and shift back.

Shared by whitening, conditional and self-modulated layers so that every layer that is not a
plain torch module recovers the representation the same way (and with one fused kernel).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelAffine", "ConditionalAffine", "modulate"]


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (C,) or (N, C) parameter so it broadcasts over channels-first ``x``."""
    # Both (C,) and (N, C) need one trailing singleton per spatial dim of x.
    return v.reshape(*v.shape, *([1] * (x.dim() - 2)))


def modulate(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``x * gamma + beta`` with gamma/beta shaped (C,) or (N, C), x shaped (N, C, *).

    addcmul does the multiply-add in one kernel instead of two elementwise passes.
    """
    return torch.addcmul(_channel_view(beta, x), x, _channel_view(gamma, x))


class ChannelAffine(nn.Module):
    """Per-channel affine ``x * weight + bias`` (weight 1, bias 0 at init)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return modulate(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class ConditionalAffine(nn.Module):
    """Affine whose gamma/beta are looked up from per-condition tables.

    ``cond`` is either a LongTensor (N,) of condition indices, or a float tensor (N, K) of mixing
    weights, in which case gamma/beta are ``weights @ table`` (style interpolation).
    Tables start at gamma=1, beta=0 so the layer starts as the unconditional normalization.
    """

    def __init__(self, num_features: int, *, num_conditions: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_conditions = num_conditions
        self.weight = nn.Parameter(torch.ones(num_conditions, num_features))
        self.bias = nn.Parameter(torch.zeros(num_conditions, num_features))

    def params_for(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cond.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if cond.dim() != 1:
                raise ValueError(f"index condition must be shaped (N,), got {tuple(cond.shape)}")
            return self.weight[cond], self.bias[cond]
        if cond.dim() != 2 or cond.shape[1] != self.num_conditions:
            raise ValueError(
                f"mixing weights must be shaped (N, {self.num_conditions}), got {tuple(cond.shape)}"
            )
        cond = cond.to(self.weight.dtype)
        return cond @ self.weight, cond @ self.bias

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.params_for(cond)
        return modulate(x, gamma.to(x.dtype), beta.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_conditions={self.num_conditions}"
