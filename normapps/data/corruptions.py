"""The 15 CIFAR-10-C corruptions and the 4 held-out ones, at CIFAR-10-C's parameters.

Severity parameters are CIFAR-10-C's (Hendrycks & Dietterich 2019, ``make_cifar_c.py`` of
hendrycks/robustness), not ImageNet-C's. Every function takes (N, C, H, W) floats in [0, 1]
and returns the same shape in [0, 1]; randomness comes only from a ``torch.Generator`` (the
numpy-based ones draw a numpy seed from it), so :func:`corrupt` is deterministic per seed.
:func:`corrupt` floors the result to the uint8 grid, as the reference does when it saves the
released files (``np.uint8(corruption(img))``); glass blur also floors between its two blurs,
as the reference does.

Where the code comes from:
- ``imagecorruptions`` (the maintained ``imagecorruptions-imaug`` package) supplies what the
  reference needs assets or ImageMagick for: the frost images and its port of ImageMagick's
  motion-blur kernel (used by motion blur and snow). Its public functions use ImageNet-C's
  parameters, so only these two parts are taken from it; the corruptions themselves are
  written here with the CIFAR parameters.
- The rest is written here on batched tensors (noise, blurs, fog, brightness, contrast,
  elastic, pixelate, JPEG through torchvision's libjpeg) or per image with the reference's own
  libraries (snow, frost, spatter with OpenCV/scipy; saturate with scikit-image's HSV).

Differences from the released files, kept small on purpose:
- motion blur and snow use imagecorruptions' port of ImageMagick's MotionBlurImage instead of
  ImageMagick itself (same kernel width 2*radius+1 and one-sided Gaussian weights);
- zoom blur resamples with bilinear ``align_corners=True`` (scipy ``zoom(order=1)``'s grid);
- pixelate uses area resampling both ways (PIL's BOX filter up to partial-pixel weights);
- the random numbers differ (torch instead of numpy's global state), so no image equals its
  released counterpart pixel for pixel; read the released files with
  :mod:`normapps.data.released` for that.
- greyscale inputs (C == 1) are handled channel-wise, or as grey RGB for the colour-based ones
  (snow, frost, spatter, saturate), averaged back to one channel.
The size-dependent corruptions (elastic, glass, fog, pixelate, frost, snow) scale their
geometry with the image as the reference does with its ``IMSIZE``; CIFAR's size is 32.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# CIFAR-10-C's 15, in the order of the benchmark (and of a continual stream over ``all``).
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
# The four held out for validation in the paper (``data.target.corruption=extra``).
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS

# CIFAR-10-C severity parameters, severity 1..5.
PARAMS: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    # (radius, sigma) of ImageMagick's motion blur; angle uniform in [-45, 45]
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # zooms np.arange(1, this, 0.01)
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    # (image weight, frost weight)
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    # fractions of the image size: (alpha, sigma, affine jitter)
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
    # (loc, scale, sigma, threshold, intensity, mud?) - 0: water drops, 1: mud
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    # (saturation scale, saturation shift)
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
}

CIFAR_SIZE = 32


# ----------------------------------------------------------------------------- helpers


def _gaussian_kernel1d(sigma: float, truncate: float, dtype=torch.float32) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def _pad_mode(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    # reflect padding needs pad < size; fall back to replicate for tiny images.
    if mode == "reflect" and pad >= min(x.shape[-2:]):
        mode = "replicate"
    return F.pad(x, (pad, pad, pad, pad), mode=mode)


def gaussian_filter(x: torch.Tensor, sigma: float, *, truncate: float = 4.0,
                    mode: str = "replicate") -> torch.Tensor:
    """skimage.filters.gaussian on each channel (default mode 'nearest' == replicate)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, truncate, x.dtype).to(x.device)
    r = (len(k) - 1) // 2
    n, c, h, w = x.shape
    y = _pad_mode(x.reshape(n * c, 1, h, w), r, mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _numpy_rng(g: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from ``g``: the per-image corruptions stay deterministic per seed."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))


def _to_hwc_rgb(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) float32 numpy (grey replicated)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _from_hwc_rgb(arr: np.ndarray, channels: int) -> torch.Tensor:
    out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    return (out.mean(dim=1, keepdim=True) if channels == 1 else out).clamp(0, 1)


# ----------------------------------------------------------------------------- noise


def gaussian_noise(x, severity, g):
    c = PARAMS["gaussian_noise"][severity - 1]
    return (x + torch.randn(x.shape, generator=g) * c).clamp(0, 1)


def shot_noise(x, severity, g):
    c = PARAMS["shot_noise"][severity - 1]
    return (torch.poisson(x * c, generator=g) / c).clamp(0, 1)


def impulse_noise(x, severity, g):
    # skimage random_noise(mode='s&p', amount=c): a fraction c of the values, half salt.
    c = PARAMS["impulse_noise"][severity - 1]
    hit = torch.rand(x.shape, generator=g) < c
    salt = (torch.rand(x.shape, generator=g) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def speckle_noise(x, severity, g):
    c = PARAMS["speckle_noise"][severity - 1]
    return (x + x * torch.randn(x.shape, generator=g) * c).clamp(0, 1)


# ----------------------------------------------------------------------------- blur


def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    # Aliased disk on a 17x17 grid, normalized, then cv2.GaussianBlur(ksize=3, sigma).
    ax = torch.arange(-8, 9, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).double()
    disk = disk / disk.sum()
    g = torch.exp(-0.5 * (torch.arange(-1, 2, dtype=torch.float64) / alias_blur) ** 2)
    g = g / g.sum()
    # cv2's default border is BORDER_REFLECT_101 == torch 'reflect'.
    d = F.pad(disk[None, None], (1, 1, 1, 1), mode="reflect")
    d = F.conv2d(F.conv2d(d, g.view(1, 1, 1, 3)), g.view(1, 1, 3, 1))
    return d[0, 0].float()


def defocus_blur(x, severity, g):
    radius, alias = PARAMS["defocus_blur"][severity - 1]
    k = _disk_kernel(radius, alias).to(x)
    n, c, h, w = x.shape
    y = _pad_mode(x.reshape(n * c, 1, h, w), 8, "reflect")
    return F.conv2d(y, k[None, None]).reshape(n, c, h, w).clamp(0, 1)


def gaussian_blur(x, severity, g):
    return gaussian_filter(x, PARAMS["gaussian_blur"][severity - 1]).clamp(0, 1)


def glass_shuffle(y: torch.Tensor, offsets: torch.Tensor, delta: int) -> torch.Tensor:
    """The reference's local pixel shuffle, with its copy semantics, on (N, C, H, W).

    The reference visits (h, w) from (H - delta, W - delta) down to (delta + 1, delta + 1),
    row by row, and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) array.
    Both right-hand items are numpy views, so the first assignment overwrites x[h, w] with
    x[h', w'] and the second writes that same value back (numpy#14428): each visited pixel
    is *replaced* by its neighbour's value, nothing is swapped. ``offsets`` (N, 2, P) holds
    (dx, dy) per visited pixel in visiting order, P = (H - 2*delta) * (W - 2*delta).

    With delta = 1 (all CIFAR severities) every offset is -1 or 0, so each read hits a pixel
    that is visited later or not at all: the sequential loop equals one gather, done here
    for the whole batch at once. Other deltas run the loop (reads can chain).
    """
    n, c, h, w = y.shape
    hs = torch.arange(h - delta, delta, -1)
    ws = torch.arange(w - delta, delta, -1)
    hh = hs.repeat_interleave(len(ws))
    ww = ws.repeat(len(hs))
    src_h = (hh + offsets[:, 1]).clamp(0, h - 1)  # numpy would wrap negatives; never happens
    src_w = (ww + offsets[:, 0]).clamp(0, w - 1)  # for delta <= (size - 1) / 2
    flat = y.reshape(n, c, h * w)
    dst = (hh * w + ww).expand(n, -1)
    src = src_h * w + src_w
    if delta == 1:
        values = flat.gather(2, src[:, None].expand(-1, c, -1))
        return flat.scatter(2, dst[:, None].expand(-1, c, -1), values).reshape(n, c, h, w)
    flat = flat.clone()
    batch = torch.arange(n)
    for p in range(dst.shape[1]):
        flat[batch, :, dst[:, p]] = flat[batch, :, src[:, p]]
    return flat.reshape(n, c, h, w)


def glass_blur(x, severity, g):
    sigma, delta, iterations = PARAMS["glass_blur"][severity - 1]
    # The reference quantizes to uint8 (np.uint8: floor) between the two blurs.
    y = (gaussian_filter(x, sigma) * 255).floor().clamp(0, 255) / 255
    n, _, h, w = y.shape
    positions = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    for _ in range(iterations):
        # randint(-d, d) excludes +d, as numpy's does.
        offsets = torch.randint(-delta, delta, (n, 2, positions), generator=g)
        y = glass_shuffle(y, offsets, delta)
    return gaussian_filter(y, sigma).clamp(0, 1)


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h = x.shape[-1]
    ch = int(math.ceil(h / zoom))
    top = (h - ch) // 2
    crop = x[..., top:top + ch, top:top + ch]
    size = int(round(ch * zoom))
    z = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True)
    trim = (size - h) // 2
    return z[..., trim:trim + h, trim:trim + h]


def zoom_blur(x, severity, g):
    stop = PARAMS["zoom_blur"][severity - 1]
    zooms = torch.arange(1, stop, 0.01, dtype=torch.float64).tolist()
    out = torch.zeros_like(x)
    for z in zooms:
        out += _clipped_zoom(x, z)
    return ((x + out) / (len(zooms) + 1)).clamp(0, 1)


def _motion_blur_hwc(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    # imagecorruptions' port of ImageMagick's MotionBlurImage (what the reference calls through
    # Wand); the port's own parameters are ImageNet-C's, so it is called with CIFAR's here.
    from imagecorruptions.corruptions import _motion_blur

    return _motion_blur(img, radius=radius, sigma=sigma, angle=angle)


def motion_blur(x, severity, g):
    radius, sigma = PARAMS["motion_blur"][severity - 1]
    rng = _numpy_rng(g)
    n, c = x.shape[:2]
    # The reference blurs the uint8 image and decodes a uint8 image again (rounded).
    u8 = (x * 255).round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    out = np.empty(u8.shape, dtype=np.float32)
    for i in range(n):
        out[i] = np.asarray(_motion_blur_hwc(u8[i], radius, sigma, rng.uniform(-45, 45))).reshape(u8[i].shape)
    out = np.clip(np.round(out), 0, 255) / 255
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().contiguous()


# ----------------------------------------------------------------------------- weather


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, g: torch.Generator) -> torch.Tensor:
    """Diamond-square height maps (n, mapsize, mapsize) in [0, 1], one per image."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(a):
        return a / 4 + wibble * (torch.rand(a.shape, generator=g, dtype=torch.float64) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, dims=1)
        sq = sq + sq.roll(-1, dims=2)
        m[:, half::step, half::step] = wibbled_mean(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + dr.roll(1, dims=1) + ul + ul.roll(-1, dims=2)
        m[:, 0::step, half::step] = wibbled_mean(lt)
        tt = dr + dr.roll(1, dims=2) + ul + ul.roll(-1, dims=1)
        m[:, half::step, 0::step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True)).float()


def fog(x, severity, g):
    strength, decay = PARAMS["fog"][severity - 1]
    n, _, h, w = x.shape
    size = max(32, 1 << (max(h, w) - 1).bit_length())
    frac = plasma_fractal(n, size, decay, g)[:, None, :h, :w].to(x)
    # The reference scales by the max over the whole image (all channels).
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + strength * frac) * max_val / (max_val + strength)).clamp(0, 1)


def _scipy_clipped_zoom(img: np.ndarray, zoom: float) -> np.ndarray:
    # The reference's clipped_zoom (scipy zoom, order 1) on an (H, W, 1) array.
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / zoom))
    top = (h - ch) // 2
    out = scizoom(img[top:top + ch, top:top + ch], (zoom, zoom, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim:trim + h, trim:trim + h]


def snow(x, severity, g):
    import cv2

    loc, scale, zoom, thresh, radius, sigma, blend = PARAMS["snow"][severity - 1]
    rng = _numpy_rng(g)
    imgs = _to_hwc_rgb(x)
    n, h, w, _ = imgs.shape
    # The blur radius is in CIFAR pixels; scale it with the image.
    radius = max(1, int(round(radius * h / CIFAR_SIZE)))
    out = np.empty_like(imgs)
    for i in range(n):
        layer = rng.normal(size=(h, w), loc=loc, scale=scale)
        layer = _scipy_clipped_zoom(layer[..., None], zoom)
        layer[layer < thresh] = 0
        # The reference round-trips the layer through a uint8 PNG before and after the blur.
        layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)
        layer = _motion_blur_hwc(layer, radius, sigma, rng.uniform(-135, -45))
        layer = (np.clip(np.round(layer), 0, 255).astype(np.uint8) / 255.0)[..., None]
        img = imgs[i]
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
        img = blend * img + (1 - blend) * np.maximum(img, grey * 1.5 + 0.5)
        out[i] = np.clip(img + layer + np.rot90(layer, k=2), 0, 1)
    return _from_hwc_rgb(out, x.shape[1])


@lru_cache(maxsize=8)
def _frost_image(index: int) -> np.ndarray:
    """Frost picture ``index`` (0-based) shipped with imagecorruptions, BGR uint8 as cv2 reads it."""
    import importlib.resources

    import cv2

    name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"][index]
    ref = importlib.resources.files("imagecorruptions") / "frost" / name
    with importlib.resources.as_file(ref) as path:
        img = cv2.imread(str(path))
    if img is None:
        raise FileNotFoundError(f"frost image {name} missing from the imagecorruptions package")
    return img


def frost(x, severity, g):
    import cv2

    weight_x, weight_frost = PARAMS["frost"][severity - 1]
    rng = _numpy_rng(g)
    imgs = _to_hwc_rgb(x) * 255
    n, h, w, _ = imgs.shape
    # CIFAR: frost pictures shrunk to 0.2 and cropped at 32x32; scaled with the image here.
    factor = 0.2 * max(h, w) / CIFAR_SIZE
    out = np.empty_like(imgs)
    for i in range(n):
        # randint(5): the reference never picks the sixth picture for CIFAR.
        pic = _frost_image(int(rng.integers(5)))
        f = max(factor, (max(h, w) + 1) / min(pic.shape[:2]))
        pic = cv2.resize(pic, (0, 0), fx=f, fy=f)
        top = rng.integers(0, pic.shape[0] - h)
        left = rng.integers(0, pic.shape[1] - w)
        crop = pic[top:top + h, left:left + w][..., [2, 1, 0]].astype(np.float32)
        out[i] = np.clip(weight_x * imgs[i] + weight_frost * crop, 0, 255)
    return _from_hwc_rgb(out / 255, x.shape[1])


def brightness(x, severity, g):
    # HSV value + c with hue and saturation fixed: RGB scales by V'/V (black maps to grey V').
    c = PARAMS["brightness"][severity - 1]
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    scaled = x * (v2 / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v2.expand_as(x)).clamp(0, 1)


def contrast(x, severity, g):
    c = PARAMS["contrast"][severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def saturate(x, severity, g):
    from skimage.color import hsv2rgb, rgb2hsv

    scale, shift = PARAMS["saturate"][severity - 1]
    hsv = rgb2hsv(_to_hwc_rgb(x).astype(np.float64), channel_axis=-1)
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return _from_hwc_rgb(np.clip(hsv2rgb(hsv, channel_axis=-1), 0, 1), x.shape[1])


def spatter(x, severity, g):
    import cv2
    from skimage.filters import gaussian

    loc, scale, sigma, thresh, intensity, mud = PARAMS["spatter"][severity - 1]
    rng = _numpy_rng(g)
    imgs = _to_hwc_rgb(x)
    n, h, w, _ = imgs.shape
    out = np.empty_like(imgs)
    for i in range(n):
        img = imgs[i].copy()
        liquid = gaussian(rng.normal(size=(h, w), loc=loc, scale=scale), sigma=sigma)
        liquid[liquid < thresh] = 0
        if not mud:  # water drops: pale turquoise where the liquid layer has edges
            layer = (liquid * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(layer, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = (layer * dist).astype(np.float32)
            peak = m.max()
            # The reference divides by the peak; with no liquid at all it would be 0/0 (NaN).
            m = m / peak * intensity if peak > 0 else m
            colour = np.array([175, 238, 238], dtype=np.float32) / 255
            out[i] = np.clip(img + m[..., None] * colour, 0, 1)
        else:  # mud: brown blotches replace the image where the layer is high
            m = np.where(liquid > thresh, 1, 0)
            m = gaussian(m.astype(np.float32), sigma=intensity)
            m[m < 0.8] = 0
            colour = np.array([63, 42, 20], dtype=np.float32) / 255 * m[..., None]
            out[i] = np.clip(img * (1 - m[..., None]) + colour, 0, 1)
    return _from_hwc_rgb(out, x.shape[1])


# ----------------------------------------------------------------------------- digital


def _pixel_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    return yy, xx


def _sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bilinear sample at pixel coordinates (N, H, W) with reflected borders."""
    h, w = x.shape[-2:]
    grid = torch.stack((2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1), dim=-1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection",
                         align_corners=True)


def elastic_transform(x, severity, g):
    n, c, h, w = x.shape
    size = h
    alpha, sigma, jitter = (v * size for v in PARAMS["elastic_transform"][severity - 1])
    # Random affine: three points around the centre moved by up to +-jitter pixels (cv2
    # getAffineTransform + warpAffine, reflect border); coordinates are (x, y).
    cs = torch.tensor([w // 2, h // 2], dtype=torch.float64)
    sq = min(h, w) // 3
    pts1 = torch.stack([cs + sq, torch.stack([cs[0] + sq, cs[1] - sq]), cs - sq])
    pts2 = pts1 + (torch.rand((n, 3, 2), generator=g, dtype=torch.float64) * 2 - 1) * jitter
    # Solve dst = M @ [src, 1]; warpAffine samples src at M^-1 applied to each dst pixel.
    src_h = torch.cat([pts1, torch.ones(3, 1, dtype=torch.float64)], 1).expand(n, 3, 3)
    m = torch.linalg.solve(src_h, pts2).transpose(1, 2)  # (n, 2, 3)
    full = torch.cat([m, torch.tensor([0, 0, 1.0], dtype=torch.float64).expand(n, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]
    yy, xx = _pixel_grid(h, w)
    pix = torch.stack([xx, yy, torch.ones_like(xx)], 0).double().view(3, -1)
    src = (inv @ pix).view(n, 2, h, w).float()
    x = _sample(x, src[:, 1], src[:, 0])
    # Smooth random displacement field (scipy map_coordinates, reflect).
    d = torch.rand((n, 2, h, w), generator=g) * 2 - 1
    d = gaussian_filter(d, sigma, truncate=3, mode="reflect") * alpha if sigma > 0 else d * alpha
    return _sample(x, yy + d[:, 1], xx + d[:, 0]).clamp(0, 1)


def pixelate(x, severity, g):
    c = PARAMS["pixelate"][severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="area").clamp(0, 1)


def jpeg_compression(x, severity, g):
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = PARAMS["jpeg_compression"][severity - 1]
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    if u8.shape[1] not in (1, 3):
        raise ValueError(f"jpeg_compression needs 1 or 3 channels, got {u8.shape[1]}")
    # torchvision encodes/decodes a list of images in one call (libjpeg, same quality scale as PIL).
    decoded = decode_jpeg(encode_jpeg(list(u8), quality=quality))
    return torch.stack(decoded).float().div_(255)


FUNCTIONS: dict[str, Callable] = {name: globals()[name] for name in ALL_CORRUPTIONS}


def resolve_corruptions(spec: str | list | tuple | None) -> list[str]:
    """``all`` (the 15), ``extra`` (the 4 held out), one name or a list (kept in its order)."""
    if spec is None:
        return []
    if spec == "all":
        return list(CORRUPTIONS)
    if spec == "extra":
        return list(EXTRA_CORRUPTIONS)
    names = [spec] if isinstance(spec, str) else list(spec)
    bad = [n for n in names if n not in FUNCTIONS]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; choose from all (the 15), extra "
                         f"({', '.join(EXTRA_CORRUPTIONS)}) or names: {', '.join(ALL_CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"data.target.corruption lists a corruption twice: {names}")
    return names


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= int(severity) <= 5:
        raise ValueError(f"corruption severity must be an integer 1..5, got {severity!r}")
    return int(severity)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Floor to the uint8 grid, as ``np.uint8`` does to the reference's float output."""
    return (x.double() * 255).floor().clamp(0, 255).div(255).float()


@torch.no_grad()
def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int = 0,
            chunk_size: int = 2048, quantize: bool = True) -> torch.Tensor:
    """Corrupt a batch (N, C, H, W) in [0, 1]; the same seed gives the same result.

    Processed in chunks of ``chunk_size`` images so a whole test set fits in memory. With
    ``quantize`` (default) the output is floored to uint8 values, as in the released files.
    """
    (name,) = resolve_corruptions(name)
    severity = check_severity(severity)
    if images.dim() != 4:
        raise ValueError(f"corrupt expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    fn = FUNCTIONS[name]
    # One generator per (seed, corruption, severity): changing one never shifts the others.
    g = torch.Generator().manual_seed(seed * 1000 + ALL_CORRUPTIONS.index(name) * 10 + severity)
    x = images.detach().float().cpu().clamp(0, 1)
    out = torch.cat([fn(chunk.clone(), severity, g) for chunk in x.split(chunk_size)])
    return quantize_uint8(out) if quantize else out
