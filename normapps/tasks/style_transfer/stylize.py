"""Inference pipeline: encode styles once, stylize batches of contents (AdaIN or WCT), with
style interpolation, two-style spatial masks, content/style trade-off, colour preservation,
mixed precision and channels_last, and tiled encode/decode for very large images."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from normapps.norm import adain_from_stats, calc_mean_std, wct
from normapps.platform.compile import compile_frozen
from normapps.platform.hardware import cpu_has_native_bf16, cpu_has_vnni
from normapps.tasks.style_transfer import network_cache
from normapps.tasks.style_transfer.decoder import DECODER_MARGIN, DECODER_SCALE
from normapps.tasks.style_transfer.int8_calibration import (DECODER_PHOTOS, ENCODER_PHOTOS,
                                                            calibration_photos, calibration_size,
                                                            load_cached_observers, observer_key,
                                                            save_observers)
from normapps.tasks.style_transfer.network_cache import module_digest, tensors_digest
from normapps.tasks.style_transfer.tiling import tiled_apply
from normapps.tasks.style_transfer.vgg import ENCODER_MARGIN, ENCODER_STRIDE

METHODS = ("adain", "wct")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


@dataclass
class StyleCode:
    """What the pipeline keeps of an encoded style: relu4_1 statistics (AdaIN) and, for WCT,
    the features themselves."""
    mean: torch.Tensor
    std: torch.Tensor
    feat: torch.Tensor | None = None


def check_precision(precision: str, *, compile: bool = False,
                    device: torch.device | None = None) -> None:
    """Reject a precision this pipeline cannot run, before any model is built."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "int8" and compile:
        raise ValueError("precision=int8 and compile=true do not combine: int8 runs fx-quantized "
                         "modules eagerly")
    if precision == "int8" and device is not None and device.type != "cpu":
        raise ValueError(f"precision=int8 runs on CPU only (x86 fbgemm/oneDNN kernels), not {device.type}; "
                         f"use bf16 or fp16 on {device.type}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32 (and int8, which runs quantized modules instead of
    autocast). ``auto``: bf16 where the hardware does it fast."""
    check_precision(precision, device=device)
    if precision in ("fp32", "int8"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def auto_int8(device: torch.device, *, method: str, compile: bool = False) -> bool:
    """Whether ``precision=auto`` runs int8: AdaIN, eager, on a CPU with VNNI, where int8 is
    about 3x fp32 NCHW at 36-41 dB against fp32 (docs/tasks/style_transfer.md); the
    encoder's calibration is cached, so a run pays only the decoder's (about 1 s per style)."""
    return device.type == "cpu" and method == "adain" and not compile and cpu_has_vnni()


def match_color(image: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``image`` (N, 3, H, W) the per-sample RGB mean and covariance of ``reference``
    (same N, any size): the whitening-colouring transform applied to pixels (core ``wct``)."""
    out = wct(image.double(), reference.double(), alpha=1.0, eps=eps)
    return out.to(image.dtype)


class _Forward(nn.Module):
    """``forward(x)`` only, so fx traces the encoder without its ``all_layers`` switch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class Stylizer:
    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, device: torch.device | str = "cpu",
                 precision: str = "auto", channels_last: bool = True, unbiased: bool = True,
                 eps: float = 1e-5, tile_size: int = 1024, method: str = "adain",
                 compile: bool = False) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {METHODS}")
        if tile_size and (tile_size < 64 or tile_size % ENCODER_STRIDE):
            raise ValueError(f"tile_size={tile_size}: use 0 (no tiling) or a multiple of 8 >= 64")
        self.device = torch.device(device)
        check_precision(precision, compile=compile, device=self.device)
        self.int8 = precision == "int8" or (
            precision == "auto" and auto_int8(self.device, method=method, compile=compile))
        self.dtype = None if self.int8 else resolve_precision(precision, self.device)
        self.int8_ready = False
        self.int8_source: str | None = None  # "calibrated" | "cached calibration" (the encoder)
        self._int8_styles: str | None = None  # the styles the int8 decoder was calibrated for
        self._digests: dict[str, str] = {}
        # The layers int8 keeps float run in bf16 where the CPU has native bf16.
        self._float_dtype = torch.bfloat16 if self.device.type == "cpu" and cpu_has_native_bf16() else None
        # 7-bit activations where the CPU lacks VNNI (int16 saturation), all 8 bits with it.
        self._reduce_range = not cpu_has_vnni()
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder = encoder.to(self.device, memory_format=self.memory_format).eval()
        self.decoder = decoder.to(self.device, memory_format=self.memory_format).eval()
        self.unbiased, self.eps, self.tile_size, self.method = unbiased, eps, tile_size, method
        self._encoder_fn, self._decoder_fn = self.encoder, self.decoder
        if compile:
            self._encoder_fn, self._decoder_fn = compile_frozen(self.encoder), compile_frozen(self.decoder)

    @property
    def precision_name(self) -> str:
        return "int8" if self.int8 else str(self.dtype or torch.float32).replace("torch.", "")

    # --- int8 ----------------------------------------------------------------------------------
    def _digest(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = module_digest(getattr(self, name))
        return self._digests[name]

    def _int8_settings(self) -> tuple:
        return (self.channels_last, self._reduce_range, str(self._float_dtype))

    def _quantized_encoder(self, photos: Sequence[torch.Tensor] | None = None) -> nn.Module:
        """The int8 encoder: calibrated on ``photos``, or by default on the bundled
        ENCODER_PHOTOS, whose observers are cached on disk (first run) and the quantized module
        in this process (later Stylizers of the same encoder)."""
        from normapps.platform.int8 import (autocast_submodules, calibrate, convert_fx_model,
                                            load_observer_state, observer_state, prepare_fx_model,
                                            set_int8_engine)

        net = _Forward(self.encoder)
        last = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)][-1]

        def build() -> nn.Module:
            set_int8_engine()
            example = self._fmt(torch.zeros(1, 3, 64, 64, device=self.device))
            prepared = prepare_fx_model(net, example, reduce_range=self._reduce_range,
                                        float_modules=[last])
            key = None if photos is not None else observer_key("encoder", self._digest("encoder"))
            state = load_cached_observers(key) if key else None
            if state is not None:
                try:
                    load_observer_state(prepared, state)
                    self.int8_source = "cached calibration"
                except ValueError as err:
                    warnings.warn(f"int8 calibration cache {key}: {err}; calibrating again")
                    state = None
            if state is None:
                images = photos if photos is not None else calibration_photos(ENCODER_PHOTOS)
                calibrate(prepared, [self._fmt(calibration_size(x.to(self.device))) for x in images])
                self.int8_source = "calibrated"
                if key:
                    save_observers(key, observer_state(prepared))
            gm = convert_fx_model(prepared)
            return autocast_submodules(gm, [last], self._float_dtype) if self._float_dtype else gm

        if photos is not None:
            return build()
        self.int8_source = "kept from an earlier run in this process"
        return network_cache.cached(("int8-encoder", self._digest("encoder"), *self._int8_settings()),
                                    build, max_entries=2)

    def _quantized_decoder(self, styles: Sequence[StyleCode],
                           photos: Sequence[torch.Tensor] | None = None) -> nn.Module:
        """An int8 decoder for these styles, calibrated on the AdaIN targets they give with
        ``photos`` (default: the bundled DECODER_PHOTOS; kept per style set in this process)."""
        from normapps.platform.int8 import autocast_submodules, quantize_fx

        net = _Forward(self.decoder)
        first = next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))

        def features(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            return [self.encoder(self._fmt(calibration_size(x.to(self.device)))) for x in images]

        def build() -> nn.Module:
            if photos is not None:
                feats = features(photos)
            else:  # the bundled photos' float features, encoded once per encoder in a process
                feats = network_cache.cached(
                    ("int8-decoder-photos", self._digest("encoder"), self.channels_last),
                    lambda: features(calibration_photos(DECODER_PHOTOS)), max_entries=2)
            if photos is None:
                # One pass per photo or per style, whichever is more (photo k with style k),
                # not every pair: each pass through the observed decoder costs ~0.5 s at 256 px.
                n = max(len(feats), len(styles))
                pairs = [(feats[k % len(feats)], styles[k % len(styles)]) for k in range(n)]
            else:
                pairs = [(f, code) for f in feats for code in styles]
            targets = [self._fmt(self.target(f, [code])) for f, code in pairs]
            gm = quantize_fx(net, targets, example=targets[0], reduce_range=self._reduce_range,
                             float_modules=[first])
            return autocast_submodules(gm, [first], self._float_dtype) if self._float_dtype else gm

        if photos is not None:
            return build()
        key = ("int8-decoder", self._digest("decoder"), self._digest("encoder"), self._style_key(styles),
               self.method, self.unbiased, self.eps, *self._int8_settings())
        return network_cache.cached(key, build, max_entries=8)

    @staticmethod
    def _style_key(styles: Sequence[StyleCode]) -> str:
        return tensors_digest([t for s in styles for t in (s.mean, s.std)])

    @torch.no_grad()
    def calibrate_int8(self, styles: Sequence[StyleCode], *,
                       photos: Sequence[torch.Tensor] | None = None) -> None:
        """Quantize encoder and decoder to int8 (per-channel weights, histogram-calibrated
        activations) for ``styles``. ``stylize`` does this by itself when it meets new styles;
        call it to time the calibration apart. ``photos`` (each (N, 3, H, W)) replace the
        bundled calibration photos of both networks (then nothing is cached). Styles stay
        encoded in fp32, so their statistics lose nothing."""
        if not self.int8:
            raise RuntimeError("calibrate_int8 needs a Stylizer built with precision='int8' "
                               "(or 'auto' on a CPU with VNNI)")
        if not styles:
            raise ValueError("int8 calibration needs at least one style")
        if photos is not None and not photos:
            raise ValueError("int8 calibration photos: got an empty list")
        if photos is not None or self._encoder_fn is self.encoder:
            self._encoder_fn = self._quantized_encoder(photos)
        self._decoder_fn = self._quantized_decoder(styles, photos)
        self._int8_styles = None if photos is not None else self._style_key(styles)
        self.int8_ready = True

    def _ensure_int8(self, styles: Sequence[StyleCode]) -> None:
        if self.int8 and (not self.int8_ready or (self._int8_styles is not None
                                                  and self._int8_styles != self._style_key(styles))):
            self.calibrate_int8(styles)

    def _check_int8(self) -> None:
        if self.int8 and not self.int8_ready:
            raise RuntimeError("precision=int8: call calibrate_int8(styles) or stylize() first")

    # --- precision / layout ------------------------------------------------------------------
    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)

    def _tiled(self, x: torch.Tensor) -> bool:
        return bool(self.tile_size) and x.shape[-2] * x.shape[-1] > self.tile_size ** 2

    # --- encoder / decoder, tiled when large -------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """relu4_1 features; ``exact`` uses the float encoder even on the int8 path (styles,
        encoded once, keep fp32 statistics)."""
        fn = self.encoder if exact and self.int8 else self._encoder_fn
        if fn is not self.encoder:
            self._check_int8()
        images = images.to(self.device)
        run = lambda x: fn(self._fmt(x))  # noqa: E731
        with self._autocast():
            if self._tiled(images):
                return tiled_apply(run, images, tile=self.tile_size, margin=ENCODER_MARGIN,
                                   down=ENCODER_STRIDE)
            return run(images)

    @torch.no_grad()
    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        self._check_int8()
        run = lambda t: self._decoder_fn(self._fmt(t)).float()  # noqa: E731
        with self._autocast():
            out_area = feats.shape[-2] * feats.shape[-1] * DECODER_SCALE ** 2
            if self.tile_size and out_area > self.tile_size ** 2:
                return tiled_apply(run, feats, tile=self.tile_size // DECODER_SCALE,
                                   margin=DECODER_MARGIN, up=DECODER_SCALE)
            return run(feats)

    @torch.no_grad()
    def encode_style(self, style: torch.Tensor) -> StyleCode:
        feat = self.encode(style if style.dim() == 4 else style.unsqueeze(0), exact=True)
        mean, std = calc_mean_std(feat, eps=self.eps, unbiased=self.unbiased)
        return StyleCode(mean=mean, std=std, feat=feat if self.method == "wct" else None)

    # --- feature-space transfer --------------------------------------------------------------
    def _transfer(self, c: torch.Tensor, code: StyleCode) -> torch.Tensor:
        if self.method == "wct":
            return wct(c, code.feat, alpha=1.0, eps=self.eps)
        return adain_from_stats(c, code.mean, code.std, eps=self.eps, unbiased=self.unbiased)

    def target(self, c: torch.Tensor, styles: Sequence[StyleCode], *,
               weights: Sequence[float] | None = None, mask: torch.Tensor | None = None,
               alpha: float = 1.0) -> torch.Tensor:
        """The decoder's input for content features ``c`` (N, 512, h, w)."""
        if mask is not None:
            if len(styles) != 2:
                raise ValueError(f"a mask needs exactly two styles, got {len(styles)}")
            m = F.interpolate(mask.to(c.device, torch.float32), size=c.shape[-2:], mode="area")
            if self.method == "adain":
                # Each region is normalized with its own content statistics and given its own
                # style's, so the white part carries exactly the first style's statistics.
                t = sum(r * adain_from_stats(c, s.mean, s.std, eps=self.eps, unbiased=self.unbiased,
                                             region=r).float()
                        for r, s in ((m, styles[0]), (1 - m, styles[1])))
            else:
                t = m * self._transfer(c, styles[0]).float() + (1 - m) * self._transfer(c, styles[1]).float()
        elif len(styles) == 1:
            t = self._transfer(c, styles[0]).float()
        else:
            w = torch.as_tensor(weights if weights is not None else [1.0] * len(styles), dtype=torch.float32)
            w = (w / w.sum()).tolist()
            if self.method == "adain":
                # AdaIN is affine in the style statistics, so interpolating the statistics equals
                # interpolating the AdaIN outputs (the reference's weighted sum) in one pass.
                mean = sum(wi * s.mean for wi, s in zip(w, styles))
                std = sum(wi * s.std for wi, s in zip(w, styles))
                t = adain_from_stats(c, mean, std, eps=self.eps, unbiased=self.unbiased).float()
            else:
                t = sum(wi * self._transfer(c, s).float() for wi, s in zip(w, styles))
        if alpha < 1.0:
            t = alpha * t + (1 - alpha) * c.float()
        return t.to(c.dtype)

    @torch.no_grad()
    def stylize(self, content: torch.Tensor, styles: Sequence[StyleCode], *,
                weights: Sequence[float] | None = None, mask: torch.Tensor | None = None,
                alpha: float = 1.0, preserve_color: bool = False) -> torch.Tensor:
        """(N, 3, H, W) contents in [0, 1] -> stylized (N, 3, H, W) in [0, 1], float32."""
        content = content.to(self.device)
        self._ensure_int8(styles)
        c = self.encode(content)
        t = self.target(c, styles, weights=weights, mask=mask, alpha=alpha)
        del c
        out = self.decode(t)[..., : content.shape[-2], : content.shape[-1]]
        if preserve_color:
            out = match_color(out, content.float())
        return out.clamp_(0, 1)
