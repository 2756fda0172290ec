"""Domain-specific batch norm (DSBN, Chang et al. 2019).

Partition: per domain, per channel over (N_domain, *spatial). Each domain has its own
``nn.BatchNorm`` (running stats and affine), so all BN tooling (recalibration, folding,
freezing) sees the branches as ordinary BatchNorms.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .conditional import _bn_class

__all__ = ["DomainBatchNorm", "set_domain", "domain_context", "convert_to_domain_bn"]

Domain = int | torch.Tensor


class DomainBatchNorm(nn.Module):
    """One BatchNorm per domain; ``forward(x, domain=None)``.

    ``domain`` is an int (whole batch) or a LongTensor (N,) routing each sample. When it is
    None the module uses ``self.current_domain`` so the layer can sit inside networks whose
    forward knows nothing about domains (see :func:`set_domain` / :func:`domain_context`).
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_domains: int,
        dim: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        cls = _bn_class(dim)
        self.num_features = num_features
        self.num_domains = num_domains
        self.bns = nn.ModuleList(
            cls(num_features, eps=eps, momentum=momentum, affine=affine,
                track_running_stats=track_running_stats)
            for _ in range(num_domains)
        )
        self.current_domain: Domain = 0

    @classmethod
    def from_bn(cls, bn: _BatchNorm, *, num_domains: int) -> "DomainBatchNorm":
        """Every branch starts as a copy of ``bn`` (weights and running stats)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.num_features = bn.num_features
        self.num_domains = num_domains
        self.bns = nn.ModuleList(copy.deepcopy(bn) for _ in range(num_domains))
        self.current_domain = 0
        self.train(bn.training)
        return self

    def forward(self, x: torch.Tensor, domain: Domain | None = None) -> torch.Tensor:
        if domain is None:
            domain = self.current_domain
        if isinstance(domain, torch.Tensor) and domain.dim() == 0:
            domain = int(domain)
        if isinstance(domain, int):
            return self.bns[domain](x)
        if domain.shape != (x.shape[0],):
            raise ValueError(
                f"per-sample domain must be shaped ({x.shape[0]},), got {tuple(domain.shape)}"
            )
        domain = domain.to(x.device)
        present = torch.unique(domain).tolist()
        if len(present) == 1:
            return self.bns[present[0]](x)
        # Few domains: loop over domains (never samples); each branch sees only its samples,
        # so its batch statistics and running stats come from that domain alone.
        out = x.new_empty(x.shape)
        for d in present:
            idx = (domain == d).nonzero().squeeze(1)
            out = out.index_copy(0, idx, self.bns[d](x.index_select(0, idx)))
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_domains={self.num_domains}"


def set_domain(model: nn.Module, domain: Domain) -> nn.Module:
    """Set ``current_domain`` on every :class:`DomainBatchNorm` in ``model``."""
    for m in model.modules():
        if isinstance(m, DomainBatchNorm):
            m.current_domain = domain
    return model


@contextlib.contextmanager
def domain_context(model: nn.Module, domain: Domain) -> Iterator[nn.Module]:
    """Temporarily route ``model``'s DomainBatchNorms to ``domain``; restores previous values."""
    saved = [(m, m.current_domain) for m in model.modules() if isinstance(m, DomainBatchNorm)]
    set_domain(model, domain)
    try:
        yield model
    finally:
        for m, d in saved:
            m.current_domain = d


def convert_to_domain_bn(model: nn.Module, num_domains: int) -> nn.Module:
    """Replace every nn.BatchNorm1d/2d/3d in ``model`` by a DomainBatchNorm copying it."""
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if isinstance(model, bn_types):
        return DomainBatchNorm.from_bn(model, num_domains=num_domains)
    for name, child in model.named_children():
        if isinstance(child, DomainBatchNorm):
            continue  # already converted; its branches must stay plain BNs
        if isinstance(child, bn_types):
            setattr(model, name, DomainBatchNorm.from_bn(child, num_domains=num_domains))
        else:
            convert_to_domain_bn(child, num_domains)
    return model
