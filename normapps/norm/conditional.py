"""Conditional normalizations: standardize with a plain torch layer, recover with a condition.

Partition/operation are delegated to the fused torch module (BatchNorm / instance_norm without
affine); only the recovery differs, and it comes from :mod:`.recovery`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .recovery import ConditionalAffine, modulate

__all__ = ["ConditionalBatchNorm", "ConditionalInstanceNorm", "SelfModulatedBatchNorm"]

_BN_BY_DIM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _bn_class(dim: int) -> type[nn.modules.batchnorm._BatchNorm]:
    try:
        return _BN_BY_DIM[dim]
    except KeyError:
        raise ValueError(f"dim must be one of {sorted(_BN_BY_DIM)}, got {dim}") from None


class ConditionalBatchNorm(nn.Module):
    """Class-conditional BN (de Vries et al. 2017; Miyato & Koyama 2018): ``forward(x, y)``.

    Statistics are shared by all classes (one BN without affine); each class has its own
    gamma/beta row, initialised to 1/0.
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_classes: int,
        dim: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.bn = _bn_class(dim)(
            num_features, eps=eps, momentum=momentum, affine=False,
            track_running_stats=track_running_stats,
        )
        self.affine = ConditionalAffine(num_features, num_conditions=num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.affine(self.bn(x), y)


class ConditionalInstanceNorm(nn.Module):
    """Conditional instance norm (Dumoulin et al. 2017): ``forward(x, style)``.

    ``style`` is a LongTensor (N,) of style indices or a float (N, num_styles) tensor of mixing
    weights; mixing combines the gamma/beta tables linearly, which interpolates styles.
    """

    def __init__(self, num_features: int, *, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.affine = ConditionalAffine(num_features, num_conditions=num_styles)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.affine(F.instance_norm(x, eps=self.eps), style)


class SelfModulatedBatchNorm(nn.Module):
    """Self-modulated BN for GAN generators (Chen et al. 2019): ``forward(x, z)``.

    gamma and beta come from the latent z through a small MLP. The output layer starts at zero
    weight with bias (1, 0), so at init the layer is exactly plain BN and learning decides how
    much z modulates it.
    """

    def __init__(
        self,
        num_features: int,
        *,
        z_dim: int,
        hidden_dim: int | None = 32,
        dim: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.bn = _bn_class(dim)(num_features, eps=eps, momentum=momentum, affine=False)
        out = nn.Linear(hidden_dim or z_dim, 2 * num_features)
        nn.init.zeros_(out.weight)
        with torch.no_grad():
            out.bias[:num_features].fill_(1.0)
            out.bias[num_features:].zero_()
        self.mlp = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), out) if hidden_dim else out

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(z).to(x.dtype).chunk(2, dim=1)
        return modulate(self.bn(x), gamma, beta)
