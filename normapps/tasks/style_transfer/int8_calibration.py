"""Int8 calibration of the AdaIN pipeline: which images calibrate which network, which layers
stay float, and the caches that let ``precision=auto`` run int8 without a calibration pass over
the encoder on every run.

Measured with the shipped decoder and the packaged VGG-16 at 512 px, PSNR against fp32 on six
held-out (content, style) pairs (docs/tasks/style_transfer.md, "int8"):

* The encoder's activation ranges do not depend on the style, so it is calibrated once on
  bundled photos (:data:`ENCODER_PHOTOS`) and its observers are cached on disk, keyed by the
  encoder's weights and torch's version (:func:`load_cached_observers`, :func:`save_observers`).
* The decoder's do: its input is the AdaIN target, which carries the style's statistics. Each
  style set calibrates its own decoder on :data:`DECODER_PHOTOS` (two photos at 256 px, about
  1 s): 44-47 dB decoder-only, against 36-40 dB for one decoder calibrated on a fixed style set.
* Two layers stay float, in bf16 where the CPU has native bf16: conv4_1, whose output AdaIN
  rescales channel by channel (a quantized conv4_1 alone took pairs down to 35.7 dB; with it
  float, the rest of the encoder in int8 gives 37-42 dB against 33-41 dB all-int8), and the
  decoder's first conv, whose input spans the style's per-channel scales (7 dB when quantized).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from normapps.tasks.style_transfer.vgg import ENCODER_STRIDE

# Bundled photos (scikit-image / scikit-learn samples) the encoder is calibrated on. astronaut,
# coffee and motorcycle, the photos the benchmark and the docs evaluate on, are left out.
ENCODER_PHOTOS = ("chelsea", "rocket", "china", "flower", "retina")
# Photos whose AdaIN targets, one per style of the run, calibrate the decoder.
DECODER_PHOTOS = ("chelsea", "rocket")
# Calibration images are centre-cropped squares of this side: ranges observed at 384 or 512 px
# gave 1-3 dB less (outliers widen the histogram), and a pass at 256 costs a quarter of one at 512.
CALIBRATION_SIZE = 256
# Bump when the calibration images or the observers change, so stale cache files are not read.
CALIBRATION_VERSION = 1


def square_photo(name: str, size: int = CALIBRATION_SIZE) -> torch.Tensor:
    """A bundled photo, shorter side resized to ``size`` and centre-cropped: (1, 3, size, size)
    in [0, 1] (the calibration images, and the benchmark's inputs)."""
    import torchvision.transforms.functional as TF

    from normapps.data.bundled import bundled_image

    img = TF.center_crop(TF.resize(bundled_image(name), size, antialias=True), size)
    return TF.to_tensor(img).unsqueeze(0)


def calibration_photos(names: tuple[str, ...], size: int = CALIBRATION_SIZE) -> list[torch.Tensor]:
    return [square_photo(n, size) for n in names]


def calibration_size(x: torch.Tensor, size: int = CALIBRATION_SIZE) -> torch.Tensor:
    """``x`` (N, 3, H, W) with its shorter side brought down to ``size`` (never up)."""
    short = min(x.shape[-2:])
    if short <= size:
        return x.float()
    shape = [max(ENCODER_STRIDE, round(d * size / short)) for d in x.shape[-2:]]
    return F.interpolate(x.float(), size=shape, mode="bilinear", antialias=True, align_corners=False)


def cache_dir() -> Path:
    """Where int8 observer states are cached: ``$NORMAPPS_CACHE/int8``, else
    ``$XDG_CACHE_HOME/normapps/int8``, else ``~/.cache/normapps/int8``."""
    root = os.environ.get("NORMAPPS_CACHE")
    if root:
        return Path(root) / "int8"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "normapps" / "int8"


def observer_cache_path(key: str) -> Path:
    return cache_dir() / f"{key}.pt"


def observer_key(kind: str, digest: str) -> str:
    torch_version = torch.__version__.split("+")[0]
    return f"{kind}-{digest}-v{CALIBRATION_VERSION}-torch{torch_version}"


def load_cached_observers(key: str) -> dict[str, torch.Tensor] | None:
    """The cached observer state of ``key``, or None (absent; unreadable files are warned about
    and ignored: a calibration pass rebuilds them)."""
    path = observer_cache_path(key)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("not a dict of tensors")
        return state
    except Exception as err:  # truncated, tampered or foreign file: recalibrate
        warnings.warn(f"int8 calibration cache {path} is unreadable ({type(err).__name__}: {err}); "
                      f"calibrating again")
        return None


def save_observers(key: str, state: dict[str, torch.Tensor]) -> None:
    """Write the cache file atomically; a read-only cache folder costs a warning, not the run."""
    path = observer_cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"int8 calibration cache not written ({path}: {err}); the next run "
                      f"calibrates again")
