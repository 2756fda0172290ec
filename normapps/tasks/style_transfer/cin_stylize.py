"""Inference pipelines of the CIN methods, beside the AdaIN/WCT ``Stylizer``:

- :class:`CINStylizer` (``method=cin``): an N-style CIN network; a style is a mixture of its N
  styles (one style index, or weights), turned once into every norm's (gamma, beta).
- :class:`ArbitraryCINStylizer` (``method=arbitrary_cin``): any style image -> style embedding
  (style prediction at 256x256) -> every norm's (gamma, beta). Styles mix by their embeddings.

Both share the transformer run: reflection padding to a multiple of 4, precision (autocast) and
channels_last, two styles under a mask as spatially varying (gamma, beta), output blending with
the content (``alpha``), colour preservation, and tiles for large images with thumbnail
instance normalization (statistics from a downscaled pass, so tiles agree exactly).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F

from normapps.tasks.style_transfer.arbitrary_net import ArbitraryStyleNetwork
from normapps.tasks.style_transfer.cin_transformer import (
    STRIDE,
    CINTransformer,
    InstanceMoments,
    NormParams,
    receptive_margin,
)
from normapps.tasks.style_transfer.stylize import (
    check_precision,
    compile_frozen,
    match_color,
    resolve_precision,
)
from normapps.tasks.style_transfer.style_predictor import STYLE_SIZE
from normapps.tasks.style_transfer.tiling import tiled_apply

CIN_METHODS = ("cin", "arbitrary_cin")
CIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_cin_precision(precision: str, *, compile: bool = False,
                        device: torch.device | None = None) -> None:
    """The AdaIN pipeline's rules, minus int8: quantized activations cost these small networks
    more fidelity than the ports may lose (Magenta's own int8 graph is only ~31 dB from the same
    graph with float activations), while bf16 already runs faster than onnxruntime's int8
    (docs/tasks/style_transfer.md)."""
    if precision == "int8":
        raise ValueError("precision=int8 is not offered for method=cin/arbitrary_cin: int8 activations "
                         "cost more fidelity than the 40/30 dB the ports keep; use bf16 (the fast path) "
                         "or fp32")
    check_precision(precision, compile=compile, device=device)


def normalized_weights(weights: Sequence[float], count: int, *, name: str = "style_weights") -> torch.Tensor:
    """Non-negative, finite weights with a positive sum, as a (count,) tensor summing to 1."""
    w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
    if w.numel() != count:
        raise ValueError(f"{name} has {w.numel()} values, expected {count}")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name}={[float(v) for v in weights]}: need finite, non-negative values "
                         f"with a positive sum")
    return w / w.sum()


class _CINPipeline:
    def __init__(self, transformer: CINTransformer, *, device: torch.device | str = "cpu",
                 precision: str = "auto", channels_last: bool = True, tile_size: int = 1024,
                 compile: bool = False) -> None:
        if tile_size and (tile_size < 64 or tile_size % STRIDE):
            raise ValueError(f"tile_size={tile_size}: use 0 (no tiling) or a multiple of {STRIDE} >= 64")
        self.device = torch.device(device)
        check_cin_precision(precision, compile=compile, device=self.device)
        self.dtype = resolve_precision(precision, self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.transformer = transformer.to(self.device, memory_format=self.memory_format).eval()
        self.tile_size = tile_size
        self.margin = receptive_margin(len(transformer.residual))
        self._run = compile_frozen(self.transformer) if compile else self.transformer

    @property
    def precision_name(self) -> str:
        return str(self.dtype or torch.float32).replace("torch.", "")

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.memory_format)

    def _tiled(self, x: torch.Tensor) -> bool:
        return bool(self.tile_size) and x.shape[-2] * x.shape[-1] > self.tile_size ** 2

    def _transform(self, content: torch.Tensor, params: NormParams, mask: torch.Tensor | None,
                   params_b: NormParams | None) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, H, W) float32; tiled with thumbnail statistics when large."""
        h, w = content.shape[-2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        x = F.pad(content, (0, pw, 0, ph), mode="reflect") if ph or pw else content
        if mask is not None and (ph or pw):
            mask = F.pad(mask, (0, pw, 0, ph), mode="replicate")
        kw = dict(params=params, mask=mask, params_b=params_b)
        with self._autocast():
            if not self._tiled(x):
                return self._run(self._fmt(x), **kw).float()[..., :h, :w]
            moments = self.thumbnail_moments(x, params, mask, params_b)
            joined = x if mask is None else torch.cat([x, mask.to(x.dtype)], dim=1)

            def run(region: torch.Tensor) -> torch.Tensor:
                part_mask = region[:, 3:] if mask is not None else None
                return self.transformer(self._fmt(region[:, :3]), params=params, mask=part_mask,
                                        params_b=params_b, moments=moments).float()

            out = tiled_apply(run, joined, tile=self.tile_size, margin=self.margin)
            return out[..., :h, :w]

    @torch.no_grad()
    def thumbnail_moments(self, x: torch.Tensor, params: NormParams, mask: torch.Tensor | None = None,
                          params_b: NormParams | None = None) -> InstanceMoments:
        """Every norm's statistics on ``x`` downscaled to at most ``tile_size``^2 pixels
        (sides multiples of 4), ready to replay on the tiles of ``x``."""
        moments = InstanceMoments()
        scale = min(1.0, self.tile_size / (x.shape[-2] * x.shape[-1]) ** 0.5)
        size = [max(STRIDE, int(d * scale) // STRIDE * STRIDE) for d in x.shape[-2:]]
        thumb = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        thumb_mask = F.interpolate(mask, size=size, mode="area") if mask is not None else None
        with self._autocast():
            self.transformer(self._fmt(thumb), params=params, mask=thumb_mask, params_b=params_b,
                             moments=moments)
        return moments.replay()

    @torch.no_grad()
    def stylize_with_params(self, content: torch.Tensor, params: NormParams, *,
                            mask: torch.Tensor | None = None, params_b: NormParams | None = None,
                            alpha: float = 1.0, preserve_color: bool = False) -> torch.Tensor:
        """(N, 3, H, W) contents in [0, 1] -> stylized (N, 3, H, W) in [0, 1], float32.
        ``alpha`` blends the output with the content (0 gives the content back)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} is outside [0, 1]")
        if mask is not None and params_b is None:
            raise ValueError("a mask needs two styles")
        n = content.shape[0]
        params = [(g.to(self.device).expand(n, -1), b.to(self.device).expand(n, -1)) for g, b in params]
        if params_b is not None:
            params_b = [(g.to(self.device).expand(n, -1), b.to(self.device).expand(n, -1))
                        for g, b in params_b]
        content = content.to(self.device).float()
        if mask is not None:
            mask = mask.to(self.device, torch.float32).expand(n, -1, -1, -1)
        out = self._transform(content, params, mask, params_b)
        if preserve_color:
            out = match_color(out, content)
        if alpha < 1.0:
            out = torch.lerp(content, out, alpha)
        return out.clamp_(0, 1)


class CINStylizer(_CINPipeline):
    """``method=cin``: stylize with a mixture of an N-style CIN network's styles."""

    def __init__(self, transformer: CINTransformer, **kw) -> None:
        if transformer.num_styles is None:
            raise ValueError("CINStylizer needs an N-style network (num_styles set); an arbitrary-"
                             "style transformer goes with ArbitraryCINStylizer")
        super().__init__(transformer, **kw)

    @property
    def num_styles(self) -> int:
        return int(self.transformer.num_styles)

    def mixture(self, indices: Sequence[int] | None = None,
                weights: Sequence[float] | None = None) -> torch.Tensor:
        """(1, N) mixing weights: one-hot of one index, ``weights`` over ``indices``, or
        ``weights`` over all N styles."""
        n = self.num_styles
        idx = list(indices) if indices is not None else None
        for k in idx or []:
            if not 0 <= int(k) < n:
                raise ValueError(f"style_index={k} is out of range: the network has {n} styles (0-{n - 1})")
        if idx is None:
            if weights is None:
                raise ValueError("give style_index or style_weights")
            return normalized_weights(weights, n)[None]
        w = normalized_weights(weights if weights is not None else [1.0] * len(idx), len(idx))
        mix = torch.zeros(1, n)
        for k, wk in zip(idx, w.tolist()):
            mix[0, int(k)] += wk
        return mix

    def style_params(self, mixture: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every norm's (gamma, beta) of a (1, N) mixture: the rows mixed linearly."""
        with torch.no_grad():
            return [(g.float(), b.float()) for g, b in self.transformer.norm_params(mixture.to(self.device))]

    def stylize(self, content: torch.Tensor, mixture: torch.Tensor, *, mask: torch.Tensor | None = None,
                mixture_b: torch.Tensor | None = None, alpha: float = 1.0,
                preserve_color: bool = False) -> torch.Tensor:
        params_b = self.style_params(mixture_b) if mixture_b is not None else None
        return self.stylize_with_params(content, self.style_params(mixture), mask=mask, params_b=params_b,
                                        alpha=alpha, preserve_color=preserve_color)


def square_style(style: torch.Tensor, size: int = STYLE_SIZE) -> torch.Tensor:
    """Centre square crop resized to ``size`` x ``size`` (antialiased), as the pretrained style
    predictor was trained and as its reference runtime feeds it."""
    h, w = style.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = style[..., top:top + side, left:left + side]
    if side == size:
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ArbitraryCINStylizer(_CINPipeline):
    """``method=arbitrary_cin``: stylize with any style image through style prediction."""

    def __init__(self, network: ArbitraryStyleNetwork, *, predict_size: int = STYLE_SIZE, **kw) -> None:
        if predict_size < 32:
            raise ValueError(f"predict_size={predict_size} must be >= 32")
        super().__init__(network.transformer, **kw)
        self.network = network.to(self.device).eval()  # its transformer is self.transformer
        # channels_last 1.5x on the depthwise convolutions; bf16 is not used here: it moved the
        # embedding 3x more than onnxruntime's int8 graph does
        self.network.predictor.to(memory_format=self.memory_format)
        self.predict_size = predict_size

    @torch.no_grad()
    def encode_style(self, style: torch.Tensor) -> torch.Tensor:
        """A style image (1 or N, 3, H, W) in [0, 1] -> its (N, D) embedding, predicted at
        ``predict_size`` in float32 (a style is predicted once for every content)."""
        style = style if style.dim() == 4 else style.unsqueeze(0)
        square = square_style(style.to(self.device).float(), self.predict_size)
        return self.network.embed(square.contiguous(memory_format=self.memory_format))

    def style_params(self, embedding: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        with torch.no_grad():
            return [(g.float(), b.float()) for g, b in self.network.norm_params(embedding.to(self.device))]

    @staticmethod
    def mix(embeddings: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
        """Weighted mean of (1, D) embeddings: the head is affine, so this mixes every (gamma, beta)."""
        w = normalized_weights(weights if weights is not None else [1.0] * len(embeddings), len(embeddings))
        return sum(wi * e for wi, e in zip(w.tolist(), embeddings))

    def stylize(self, content: torch.Tensor, embedding: torch.Tensor, *, mask: torch.Tensor | None = None,
                embedding_b: torch.Tensor | None = None, alpha: float = 1.0,
                preserve_color: bool = False) -> torch.Tensor:
        params_b = self.style_params(embedding_b) if embedding_b is not None else None
        return self.stylize_with_params(content, self.style_params(embedding), mask=mask, params_b=params_b,
                                        alpha=alpha, preserve_color=preserve_color)

