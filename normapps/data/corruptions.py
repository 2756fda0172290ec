"""The 12 CIFAR-10-C corruptions that need no external assets, on batches of tensors.

Severity parameters are the published CIFAR-10-C ones (Hendrycks & Dietterich 2019,
``make_cifar_c.py`` of hendrycks/robustness). Every function takes (N, C, H, W) floats in
[0, 1] and returns the same shape in [0, 1]; randomness comes only from a ``torch.Generator``,
so :func:`corrupt` is deterministic per seed. They work on any square-ish image size: the
size-dependent ones (elastic, glass, fog, pixelate) scale their geometry with the image as
the reference code does with its ``IMSIZE``.

Differences from the reference (numpy/cv2/scipy per image), kept small on purpose:
- zoom blur resamples with bilinear ``align_corners=True`` (scipy ``zoom(order=1)``'s grid);
- pixelate uses area resampling both ways (PIL's BOX filter up to partial-pixel weights);
- glass blur keeps the reference's sequential pixel swaps (the swaps chain, so they cannot be
  done at once) but runs each swap for the whole batch in one tensor op;
- greyscale inputs (C == 1) are handled channel-wise (brightness uses V = the grey value).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "zoom_blur",
    "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)

# CIFAR-10-C severity parameters, severity 1..5.
PARAMS: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # zooms np.arange(1, this, 0.01)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    # fractions of the image size: (alpha, sigma, affine jitter)
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}


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


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0,
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


def _uniform(shape, lo, hi, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo


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


def glass_blur(x, severity, g):
    sigma, delta, iterations = PARAMS["glass_blur"][severity - 1]
    # The reference quantizes to uint8 between the two blurs.
    y = (gaussian_blur(x, sigma) * 255).floor().clamp(0, 255) / 255
    n, _, h, w = y.shape
    batch = torch.arange(n)
    for _ in range(iterations):
        # Same visiting order and offsets range as the reference: randint(-d, d) excludes +d.
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                d = torch.randint(-delta, delta, (2, n), generator=g)
                h2 = (hh + d[1]).clamp(0, h - 1)
                w2 = (ww + d[0]).clamp(0, w - 1)
                a = y[:, :, hh, ww].clone()
                b = y[batch, :, h2, w2]
                y[:, :, hh, ww] = b
                y[batch, :, h2, w2] = a
    return gaussian_blur(y, sigma).clamp(0, 1)


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
    d = gaussian_blur(d, sigma, truncate=3, mode="reflect") * alpha if sigma > 0 else d * alpha
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


FUNCTIONS: dict[str, Callable] = {name: globals()[name] for name in CORRUPTIONS}


def resolve_corruptions(spec: str | list | tuple | None) -> list[str]:
    """``all``, one name or a list of names -> validated list of corruption names."""
    if spec is None:
        return []
    names = list(CORRUPTIONS) if spec == "all" else [spec] if isinstance(spec, str) else list(spec)
    bad = [n for n in names if n not in FUNCTIONS]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; choose from all, {', '.join(CORRUPTIONS)}")
    return names


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= int(severity) <= 5:
        raise ValueError(f"corruption severity must be an integer 1..5, got {severity!r}")
    return int(severity)


@torch.no_grad()
def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int = 0,
            chunk_size: int = 2048) -> torch.Tensor:
    """Corrupt a batch (N, C, H, W) in [0, 1]; the same seed gives the same result.

    Processed in chunks of ``chunk_size`` images so a whole test set fits in memory.
    """
    (name,) = resolve_corruptions(name)
    severity = check_severity(severity)
    if images.dim() != 4:
        raise ValueError(f"corrupt expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    fn = FUNCTIONS[name]
    # One generator per (seed, corruption, severity): changing one never shifts the others.
    g = torch.Generator().manual_seed(seed * 1000 + CORRUPTIONS.index(name) * 10 + severity)
    x = images.detach().float().cpu().clamp(0, 1)
    return torch.cat([fn(chunk.clone(), severity, g) for chunk in x.split(chunk_size)])
