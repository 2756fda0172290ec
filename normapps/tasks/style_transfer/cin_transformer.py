"""The feed-forward style transformer whose every instance norm is conditional (Dumoulin et al.
2017; Ghiasi et al. 2017): three downsampling convolutions, residual blocks, two upsamplings by
nearest resize + convolution, a 9x9 output convolution and a sigmoid.

One class serves both methods. With ``num_styles=N`` each norm holds a (gamma, beta) row per
style (``forward(x, style)`` with style indices or mixing weights). With ``num_styles=None`` the
norms have no parameters and ``forward(x, params=...)`` takes each norm's (gamma, beta) from
outside (predicted from a style embedding). Convolutions are reflection-padded, as in both
pretrained networks; a convolution feeding an instance norm has no bias (the norm's mean
subtraction cancels it).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from normapps.norm import ConditionalInstanceNorm, instance_moments

# Total stride of the three contracting convolutions: inputs are padded to a multiple of it.
STRIDE = 4
NormParams = Sequence[tuple[torch.Tensor, torch.Tensor]]


class ReflectConv(nn.Conv2d):
    """``k x k`` convolution on a reflection-padded input (same size at stride 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, bias: bool = True) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2,
                         padding_mode="reflect", bias=bias)


class InstanceMoments:
    """Instance-norm statistics recorded on one pass and replayed on later ones: the thumbnail
    instance normalization of Chen et al. 2022 (AAAI), which stylizes a large image tile by tile
    with statistics taken from a downscaled copy, so tiles agree with each other exactly."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.recording = True

    def __call__(self, key: tuple[int, str], x: torch.Tensor, eps: float,
                 weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recording:
            if key in self.values:
                raise RuntimeError(f"InstanceMoments: statistics of {key} recorded twice")
            self.values[key] = instance_moments(x, eps, weight=weight)
            return self.values[key]
        if key not in self.values:
            raise RuntimeError(f"InstanceMoments: no recorded statistics for {key}")
        return self.values[key]

    def replay(self) -> "InstanceMoments":
        self.recording = False
        return self


class CINTransformer(nn.Module):
    """``forward(x, style=None, *, params=None, mask=None, params_b=None, moments=None)``.

    ``x``: (N, 3, H, W) in [0, 1], any H, W (padded by reflection to a multiple of 4 and cropped
    back). ``style``: indices (N,) or mixing weights (N, num_styles) for the per-style tables;
    ``params``: one (gamma, beta) pair of (N, C) tensors per norm layer, in :meth:`norm_sizes`
    order. ``mask`` (N, 1, H, W) in [0, 1] with ``params_b`` (or ``style_b``): two styles in one
    pass; at every norm the masked region is normalized with its own statistics and the first
    style's (gamma, beta), the rest with its statistics and the second style's. Output in [0, 1].
    """

    def __init__(
        self,
        *,
        num_styles: int | None = None,
        contract: Sequence[int] = (32, 32, 32),
        expand: Sequence[int] = (8, 4),
        num_residual: int = 6,
        normalize_contract: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(contract) != 3 or len(expand) != 2:
            raise ValueError(f"contract needs 3 widths and expand 2, got {contract}, {expand}")
        self.num_styles = num_styles
        self.eps = eps
        c0, c1, c2 = contract
        e0, e1 = expand
        nc = normalize_contract
        self.contract = nn.ModuleList([
            ReflectConv(3, c0, 9, bias=not nc),
            ReflectConv(c0, c1, 3, stride=2, bias=not nc),
            ReflectConv(c1, c2, 3, stride=2, bias=not nc),
        ])
        self.residual = nn.ModuleList([
            nn.ModuleList([ReflectConv(c2, c2, 3, bias=False), ReflectConv(c2, c2, 3, bias=False)])
            for _ in range(num_residual)
        ])
        self.expand = nn.ModuleList([
            ReflectConv(c2, e0, 3, bias=False), ReflectConv(e0, e1, 3, bias=False),
            ReflectConv(e1, 3, 9, bias=False),
        ])
        sizes = ([c0, c1, c2] if nc else []) + [c2] * (2 * num_residual) + [e0, e1, 3]
        self.norms = nn.ModuleList([ConditionalInstanceNorm(c, num_styles=num_styles, eps=eps)
                                    for c in sizes])
        self.normalize_contract = nc

    def norm_sizes(self) -> list[int]:
        return [n.num_features for n in self.norms]

    def norm_params(self, style: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every norm's (gamma, beta) for style indices (N,) or mixing weights (N, num_styles)."""
        return [n.params_for(style) for n in self.norms]

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def _norm(self, i: int, t: torch.Tensor, params: NormParams, mask: torch.Tensor | None,
              params_b: NormParams | None, moments: InstanceMoments | None) -> torch.Tensor:
        gamma, beta = params[i]
        norm = self.norms[i]
        if mask is None:
            stats = moments((i, "all"), t, self.eps) if moments is not None else None
            return norm(t, gamma=gamma, beta=beta, moments=stats)
        # Two styles under a mask: each region is normalized with its own statistics and given
        # its own style's (gamma, beta), so each region is stylized as if it were the image.
        m = F.interpolate(mask.to(torch.float32), size=t.shape[-2:], mode="area")
        regions = []
        for key, w, (g, b) in (("a", m, (gamma, beta)), ("b", 1 - m, params_b[i])):
            stats = (moments((i, key), t, self.eps, w) if moments is not None
                     else instance_moments(t, self.eps, weight=w))
            regions.append(norm(t, gamma=g, beta=b, moments=stats))
        return torch.lerp(regions[1], regions[0], m.to(regions[0].dtype))

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor | None = None,
        *,
        params: NormParams | None = None,
        mask: torch.Tensor | None = None,
        params_b: NormParams | None = None,
        style_b: torch.Tensor | None = None,
        moments: InstanceMoments | None = None,
    ) -> torch.Tensor:
        if (style is None) == (params is None):
            raise ValueError("give exactly one of style (indices / mixing weights) or params")
        if params is None:
            params = self.norm_params(style)
        if len(params) != len(self.norms):
            raise ValueError(f"params has {len(params)} (gamma, beta) pairs, the network has "
                             f"{len(self.norms)} norm layers")
        if mask is not None:
            if style_b is not None:
                params_b = self.norm_params(style_b)
            if params_b is None or len(params_b) != len(self.norms):
                raise ValueError("a mask needs the second style's parameters (params_b or style_b)")
        h, w = x.shape[-2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            if mask is not None:
                mask = F.pad(mask, (0, pw, 0, ph), mode="replicate")
        i = 0
        for conv in self.contract:
            x = conv(x)
            if self.normalize_contract:
                x, i = self._norm(i, x, params, mask, params_b, moments), i + 1
            x = F.relu(x, inplace=True)
        for conv1, conv2 in self.residual:
            y = F.relu(self._norm(i, conv1(x), params, mask, params_b, moments), inplace=True)
            x = x + self._norm(i + 1, conv2(y), params, mask, params_b, moments)
            i += 2
        up0, up1, out = self.expand
        x = F.relu_(self._norm(i, up0(F.interpolate(x, scale_factor=2, mode="nearest")),
                              params, mask, params_b, moments))
        x = F.relu_(self._norm(i + 1, up1(F.interpolate(x, scale_factor=2, mode="nearest")),
                              params, mask, params_b, moments))
        x = torch.sigmoid(self._norm(i + 2, out(x), params, mask, params_b, moments))
        return x[..., :h, :w]


def receptive_margin(num_residual: int) -> int:
    """Input pixels of context each side that an output pixel depends on, rounded up to a
    multiple of the stride: tiles with this margin paste together exactly when they share their
    instance-norm statistics (:class:`InstanceMoments`)."""
    # 9x9 conv (4) + 3x3 at stride 1 and 2 (1 + 2) + 2 * num_residual 3x3 convs at stride 4
    # (4 each) + the upsampled 3x3 convs (2 + 1) + 9x9 (4) + nearest upsampling's offsets (2 + 1).
    reach = 4 + 1 + 2 + 8 * num_residual + 2 + 1 + 4 + 3
    return -(-reach // STRIDE) * STRIDE
