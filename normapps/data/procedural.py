"""Procedural style images: brush strokes, coloured noise and cell patterns from random palettes.

Style-transfer training wants many styles; offline there are only a handful of bundled
textures. These cheap, seeded generators add colour and texture variety (stroke direction and
size, smooth and sharp structures, flat and busy regions) so a decoder sees more than six
styles. They are deterministic given the seed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("strokes", "noise", "cells", "stripes")


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """k colours around a random hue scheme (analogous, complementary or free), in 0-255."""
    import colorsys

    base = rng.random()
    scheme = rng.integers(3)
    hues = {0: base + rng.normal(0, 0.06, k),  # analogous
            1: base + 0.5 * rng.integers(0, 2, k) + rng.normal(0, 0.03, k),  # complementary
            2: rng.random(k)}[int(scheme)]
    sat = np.clip(rng.normal(0.65, 0.25, k), 0.05, 1.0)
    val = np.clip(rng.normal(0.65, 0.25, k), 0.08, 1.0)
    return np.array([colorsys.hsv_to_rgb(h % 1.0, s, v) for h, s, v in zip(hues, sat, val)]) * 255


def strokes(size: int, rng: np.random.Generator) -> Image.Image:
    pal = _palette(rng, int(rng.integers(3, 7)))
    img = Image.new("RGB", (size, size), tuple(int(c) for c in pal[0]))
    draw = ImageDraw.Draw(img)
    angle0 = rng.random() * np.pi
    length = size * rng.uniform(0.03, 0.2)
    width = max(1, int(length * rng.uniform(0.1, 0.5)))
    for _ in range(int(rng.integers(300, 1500))):
        x, y = rng.random(2) * size
        a = angle0 + rng.normal(0, rng.uniform(0.1, 1.5))
        dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
        colour = pal[rng.integers(len(pal))] + rng.normal(0, 12, 3)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)],
                  fill=tuple(int(c) for c in np.clip(colour, 0, 255)), width=width)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def noise(size: int, rng: np.random.Generator) -> Image.Image:
    """Multi-octave value noise mapped through a palette."""
    field = np.zeros((size, size))
    for octave in range(int(rng.integers(2, 6))):
        cells = 2 ** (octave + int(rng.integers(1, 3)))
        grid = rng.random((cells + 1, cells + 1))
        up = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                        dtype=np.float64) / 255
        field += up / (octave + 1) ** rng.uniform(0.5, 1.5)
    field = (field - field.min()) / max(np.ptp(field), 1e-8)
    pal = _palette(rng, int(rng.integers(2, 6)))
    pos = np.linspace(0, 1, len(pal))
    rgb = np.stack([np.interp(field, pos, pal[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def cells(size: int, rng: np.random.Generator) -> Image.Image:
    """Voronoi cells in palette colours with dark or light borders (stained glass, mosaics)."""
    n = int(rng.integers(8, 200))
    pts = rng.random((n, 2)) * size
    yy, xx = np.mgrid[0:size, 0:size]
    d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    order = np.argsort(d, axis=-1)
    nearest, second = order[..., 0], order[..., 1]
    d_sorted = np.take_along_axis(d, order[..., :2], axis=-1)
    pal = _palette(rng, int(rng.integers(3, 8)))
    colours = pal[rng.integers(len(pal), size=n)]
    rgb = colours[nearest]
    border = np.sqrt(d_sorted[..., 1]) - np.sqrt(d_sorted[..., 0]) < rng.uniform(1, 4)
    rgb[border] = rng.choice([20.0, 235.0])
    del second
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def stripes(size: int, rng: np.random.Generator) -> Image.Image:
    pal = _palette(rng, int(rng.integers(2, 5)))
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = rng.random() * np.pi
    freq = rng.uniform(3, 30)
    wobble = rng.uniform(0, 0.2) * np.sin(2 * np.pi * rng.uniform(1, 4) * yy)
    phase = (np.cos(a) * xx + np.sin(a) * yy + wobble) * freq
    idx = np.floor(phase).astype(int) % len(pal)
    img = Image.fromarray(pal[idx].astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


_MAKERS = {"strokes": strokes, "noise": noise, "cells": cells, "stripes": stripes}


def procedural_styles(n: int, size: int = 256, *, seed: int = 0) -> list[Image.Image]:
    """``n`` style images of ``size`` x ``size``, cycling through the kinds; seeded."""
    rng = np.random.default_rng(seed)
    return [_MAKERS[KINDS[i % len(KINDS)]](size, rng) for i in range(n)]
