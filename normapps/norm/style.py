"""Per-sample feature statistics transfer: AdaIN and WCT (style transfer recovery).

AdaIN = instance standardization whose recovery takes the style's mean/std; WCT = instance
whitening whose recovery colours with the style's covariance.
"""

from __future__ import annotations

import torch

__all__ = ["calc_mean_std", "adain", "adain_from_stats", "wct"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    # Variances of bf16/fp16 activations lose most of their digits; upcast for the statistics.
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def calc_mean_std(
    x: torch.Tensor, eps: float = 1e-5, unbiased: bool = True, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and ``sqrt(var + eps)`` of (N, C, *) features.

    Both are shaped (N, C, 1, ...) and at least float32. ``unbiased`` matches the widely used
    pytorch-AdaIN port (std from the unbiased variance). ``weight`` (N or 1, 1, *spatial, >= 0)
    restricts the statistics to a region: a 0/1 weight gives exactly the statistics of the
    selected positions (frequency weights, so ``unbiased`` divides by their count minus one);
    an empty region gives mean 0 and std sqrt(eps) rather than NaN.
    """
    if x.dim() < 3:
        raise ValueError(f"expected (N, C, *spatial), got {tuple(x.shape)}")
    n, c = x.shape[:2]
    shape = (n, c) + (1,) * (x.dim() - 2)
    f = x.to(_stat_dtype(x)).reshape(n, c, -1)
    if weight is None:
        var, mean = torch.var_mean(f, dim=2, correction=int(unbiased))
        return mean.reshape(shape), (var + eps).sqrt().reshape(shape)
    if weight.shape[1] != 1 or weight.shape[2:] != x.shape[2:]:
        raise ValueError(f"weight must be (N, 1, *spatial) matching {tuple(x.shape)}, got {tuple(weight.shape)}")
    w = weight.to(f.dtype).reshape(weight.shape[0], 1, -1)
    total = w.sum(dim=2)  # (N, 1)
    mean = (f * w).sum(dim=2) / total.clamp_min(1e-12)
    sq = ((f - mean.unsqueeze(2)) ** 2 * w).sum(dim=2)
    var = sq / (total - int(unbiased)).clamp_min(1e-12)
    return mean.reshape(shape), (var + eps).sqrt().reshape(shape)


def adain_from_stats(
    content: torch.Tensor,
    style_mean: torch.Tensor,
    style_std: torch.Tensor,
    eps: float = 1e-5,
    unbiased: bool = True,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """AdaIN with precomputed style statistics (encode a style once, apply it many times).

    ``region`` (N or 1, 1, *spatial): normalize the content with the statistics of that region
    only (spatial control as in the original implementation: each masked region is aligned to
    its own style); the result is meant for that region."""
    c_mean, c_std = calc_mean_std(content, eps=eps, unbiased=unbiased, weight=region)
    scale = style_std.to(c_std.dtype) / c_std
    shift = style_mean.to(c_mean.dtype) - c_mean * scale
    # One fused multiply-add over the big tensor; the per-channel algebra is on (N, C) stats.
    return torch.addcmul(shift, content.to(scale.dtype), scale).to(content.dtype)


def adain(
    content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5, unbiased: bool = True
) -> torch.Tensor:
    """Align content's per-sample channel mean/std to style's (Huang & Belongie 2017).

    ``style`` may have another spatial size, and a batch of 1 broadcasts over content's batch.
    """
    s_mean, s_std = calc_mean_std(style, eps=eps, unbiased=unbiased)
    return adain_from_stats(content, s_mean, s_std, eps=eps, unbiased=unbiased)


def _centered_cov(f: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f: (N, C, M) float64 -> (mean (N,C,1), centred f, cov (N,C,C) + eps*I)."""
    m = f.shape[-1]
    mean = f.mean(-1, keepdim=True)
    fc = f - mean
    eye = torch.eye(f.shape[1], dtype=f.dtype, device=f.device).expand(f.shape[0], -1, -1)
    cov = torch.baddbmm(eye, fc, fc.transpose(1, 2), beta=eps, alpha=1.0 / max(m - 1, 1))
    return mean, fc, cov


def wct(
    content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0, eps: float = 1e-5
) -> torch.Tensor:
    """Whitening-colouring transform (Li et al. 2017), batched over samples.

    Eigendecompositions run in float64 (float32 eigh on near-singular feature covariances is
    where WCT's artifacts come from); ``eps`` on the covariance diagonals replaces the original
    small-eigenvalue truncation so everything stays batched. A style batch of 1 broadcasts.
    Output = alpha * coloured + (1 - alpha) * content, in content's dtype.
    """
    n, c = content.shape[:2]
    fc = content.reshape(n, c, -1).double()
    fs = style.reshape(style.shape[0], style.shape[1], -1).double()
    _, fc_c, cov_c = _centered_cov(fc, eps)
    mean_s, _, cov_s = _centered_cov(fs, eps)
    ec, uc = torch.linalg.eigh(cov_c)
    es, us = torch.linalg.eigh(cov_s)
    whiten = (uc * ec.clamp_min(eps).rsqrt().unsqueeze(-2)) @ uc.transpose(1, 2)
    colour = (us * es.clamp_min(0).sqrt().unsqueeze(-2)) @ us.transpose(1, 2)
    out = colour @ (whiten @ fc_c) + mean_s  # style stats broadcast when style batch is 1
    out = out.reshape(content.shape)
    if alpha != 1.0:
        out = alpha * out + (1.0 - alpha) * content.double()
    return out.to(content.dtype)
