"""Pictures of the CIN methods for docs/tasks/style_transfer.md, made with the project's own
pipelines and the packaged pretrained networks (no onnxruntime involved).

    python scripts/cin_figures.py --out docs/images

- ``cin_26_styles.png``: the 26 styles of the packaged network on a bundled photo.
- ``cin_interpolation.png``: mixing two of them by style_weights, and a two-style mask.
- ``arbitrary_cin_pairs.png``: arbitrary CIN on bundled (content, style) pairs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw

from normapps.data.bundled import bundled_image
from normapps.tasks.style_transfer.cin_data import bundled_styles
from normapps.tasks.style_transfer.cin_stylize import ArbitraryCINStylizer, CINStylizer
from normapps.tasks.style_transfer.onnx_ports import load_magenta, load_multistyle26


def tensor(img: Image.Image, size: int, square: bool = True) -> torch.Tensor:
    img = TF.resize(img, size, antialias=True)
    if square:
        img = TF.center_crop(img, size)
    return TF.to_tensor(img).unsqueeze(0)


def pil(t: torch.Tensor) -> Image.Image:
    return TF.to_pil_image(t[0].clamp(0, 1))


def labelled_sheet(tiles: list[tuple[str, Image.Image]], columns: int, pad: int = 4, label: int = 14) -> Image.Image:
    w, h = tiles[0][1].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (text, im) in enumerate(tiles):
        r, c = divmod(n, columns)
        x, y = pad + c * (w + pad), pad + r * (h + label + pad)
        sheet.paste(im, (x, y + label))
        draw.text((x + 2, y + 1), text, fill="black")
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/images")
    p.add_argument("--tile", type=int, default=160)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    cin = CINStylizer(load_multistyle26(), precision="fp32", tile_size=0)
    photo = tensor(bundled_image("chelsea"), args.tile)
    tiles = [("content (chelsea)", pil(photo))]
    for k in range(cin.num_styles):
        tiles.append((f"style_index={k}", pil(cin.stylize(photo, cin.mixture([k])))))
    labelled_sheet(tiles, columns=9).save(out / "cin_26_styles.png")

    content = tensor(bundled_image("astronaut"), args.tile)
    a, b = 7, 18
    row = [("content", pil(content))]
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        row.append((f"[{a},{b}] weights [{1 - w:g},{w:g}]", pil(cin.stylize(content, cin.mixture([a, b], [1 - w, w])))))
    mask = torch.zeros(1, 1, args.tile, args.tile)
    mask[..., : args.tile // 2] = 1
    row.append((f"mask: left {a}, right {b}", pil(cin.stylize(content, cin.mixture([a]), mask=mask,
                                                               mixture_b=cin.mixture([b])))))
    labelled_sheet(row, columns=len(row)).save(out / "cin_interpolation.png")

    arb = ArbitraryCINStylizer(load_magenta(), precision="fp32", tile_size=0)
    procedural = dict(zip(("immunohistochemistry", "strokes", "cells", "stripes"), bundled_styles()))
    pairs = [("chelsea", "immunohistochemistry"), ("coffee", "strokes"), ("astronaut", "cells"),
             ("rocket", "hubble_deep_field"), ("china", "stripes"), ("motorcycle", "gravel")]
    tiles = []
    for c_name, s_name in pairs:
        c = tensor(bundled_image(c_name), args.tile)
        s_img = procedural.get(s_name) or bundled_image(s_name)
        s = tensor(s_img, args.tile)
        emb = arb.encode_style(TF.to_tensor(s_img).unsqueeze(0))
        tiles += [(f"content: {c_name}", pil(c)), (f"style: {s_name}", pil(s)),
                  ("arbitrary_cin", pil(arb.stylize(c, emb)))]
    labelled_sheet(tiles, columns=6).save(out / "arbitrary_cin_pairs.png")
    print("wrote", *(out / n for n in ("cin_26_styles.png", "cin_interpolation.png", "arbitrary_cin_pairs.png")))


if __name__ == "__main__":
    main()
