"""Score style-transfer methods on held-out bundled pairs with no VGG of ours.

    python scripts/eval_style.py --out docs/results/style_eval            # shipped decoder, WCT, Magenta
    python scripts/eval_style.py --ckpt default=<run>/checkpoints/last.ckpt --out /tmp/eval

For every (content, style) pair of bundled images none of the methods trained on (the two
held-out photos; held-out styles: two of the packaged network's 26 styles painted on other
photos, held-out procedural images, two textures), each method
stylizes the content at 384x384 and ``normapps.tasks.style_transfer.evaluation`` scores it:
``style_shift`` (Magenta style-predictor embedding: 0 = content's style, 1 = the style's) and
``structure`` (edge correlation with the content). Writes ``style_eval.csv|md`` (means per
method and per pair) and ``style_eval.png`` (content | style | one column per method).

Methods: ``adain`` (the shipped decoder), ``wct`` (the shipped decoder with WCT), each
``--ckpt label=path`` (a training checkpoint or a decoder file), ``arbitrary_cin`` (our port of
Magenta's networks), ``magenta_ort`` (Magenta's original int8 graphs run by onnxruntime, the
reference), ``content`` (the content itself: the (0, 1) corner).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

from normapps.data.bundled import bundled_image
from normapps.platform.summary import write_table
from normapps.tasks.style_transfer.bundled_styles import bundled_styles
from normapps.tasks.style_transfer.evaluation import StyleEmbedder
from normapps.tasks.style_transfer.infer import load_networks, plan_weights
from normapps.tasks.style_transfer.stylize import Stylizer

SIZE = 384
HELD_OUT_CONTENTS = ("coffee", "rocket")
DEFAULT_METHODS = ("content", "adain", "wct", "arbitrary_cin", "magenta_ort")


def to_tensor(img, size: int = SIZE) -> torch.Tensor:
    return center_crop(pil_to_tensor(resize(img, size, antialias=True)), [size, size]).float().div(255)


def held_out_pairs(max_styles: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    contents = [to_tensor(bundled_image(n)) for n in HELD_OUT_CONTENTS]
    styles = bundled_styles(["cin26", "procedural", "textures"], train=False)
    return contents, [to_tensor(s) for s in styles[:max_styles]]


def infer_cfg(**over):
    base = {"ckpt_path": None, "encoder_weights": None, "decoder_weights": None}
    return OmegaConf.create({**base, **over})


def adain_method(plan_cfg, *, method: str = "adain", threads_note: str = ""):
    encoder, decoder, unbiased = load_networks(plan_cfg, plan_weights(plan_cfg))
    st = Stylizer(encoder, decoder, precision="fp32", channels_last=True, unbiased=unbiased,
                  tile_size=0, method=method)

    def run(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return st.stylize(content[None], [st.encode_style(style[None])])[0]

    return run


def arbitrary_cin_method():
    from normapps.tasks.style_transfer.onnx_ports import load_magenta

    net = load_magenta()

    @torch.no_grad()
    def run(content, style):
        from normapps.tasks.style_transfer.cin_stylize import square_style

        return net(content[None], square_style(style[None])).clamp(0, 1)[0]

    return run


def magenta_ort_method():
    import numpy as np
    import onnxruntime as ort

    from normapps.tasks.style_transfer.cin_stylize import square_style
    from normapps.weights import locate

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    pred = ort.InferenceSession(str(locate("magenta_style_predict")), opts, providers=["CPUExecutionProvider"])
    trans = ort.InferenceSession(str(locate("magenta_style_transform")), opts, providers=["CPUExecutionProvider"])

    def run(content, style):
        s = square_style(style[None]).permute(0, 2, 3, 1).numpy().astype(np.float32)
        emb = pred.run(None, {pred.get_inputs()[0].name: s})[0]
        c = F.interpolate(content[None], size=(384, 384), mode="bilinear", antialias=True,
                          align_corners=False).permute(0, 2, 3, 1).numpy().astype(np.float32)
        names = [i.name for i in trans.get_inputs()]
        out = trans.run(None, {names[0]: c, names[1]: emb})[0]
        return torch.from_numpy(out).permute(0, 3, 1, 2)[0].clamp(0, 1)

    return run


def build_methods(names, ckpts: dict[str, str]):
    methods = {}
    for name in names:
        if name == "content":
            methods[name] = lambda c, s: c
        elif name in ("adain", "wct"):
            methods[name] = adain_method(infer_cfg(), method=name)
        elif name == "arbitrary_cin":
            methods[name] = arbitrary_cin_method()
        elif name == "magenta_ort":
            methods[name] = magenta_ort_method()
        else:
            raise SystemExit(f"unknown method {name!r}; expected {DEFAULT_METHODS} or --ckpt")
    for label, path in ckpts.items():
        is_ckpt = path.endswith(".ckpt")
        cfg = infer_cfg(ckpt_path=path) if is_ckpt else infer_cfg(decoder_weights=path)
        methods[label] = adain_method(cfg)
    return methods


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS))
    parser.add_argument("--ckpt", action="append", default=[], metavar="LABEL=PATH",
                        help="an AdaIN training checkpoint (.ckpt) or decoder file to score too")
    parser.add_argument("--max-styles", type=int, default=6)
    parser.add_argument("--grid-pairs", type=int, default=6, help="pairs shown in the figure")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ckpts = dict(item.split("=", 1) for item in args.ckpt)
    args.out.mkdir(parents=True, exist_ok=True)

    embedder = StyleEmbedder()
    contents, styles = held_out_pairs(args.max_styles)
    pairs = [(ci, si) for si in range(len(styles)) for ci in range(len(contents))]
    methods = build_methods(args.methods, ckpts)
    rows, per_method, images = [], {m: [] for m in methods}, {m: [] for m in methods}
    for ci, si in pairs:
        c, s = contents[ci], styles[si]
        for name, fn in methods.items():
            with torch.no_grad():
                out = fn(c, s).float().clamp(0, 1)
            score = embedder.score(out[None], c[None], s[None])[0]
            per_method[name].append(score)
            images[name].append(out)
            rows.append({"method": name, "content": HELD_OUT_CONTENTS[ci], "style": si,
                         "style_shift": round(score.style_shift, 4), "structure": round(score.structure, 4)})
    summary = [{"method": name,
                "style_shift": round(statistics.mean(s.style_shift for s in scores), 3),
                "structure": round(statistics.mean(s.structure for s in scores), 3),
                "pairs": len(scores)} for name, scores in per_method.items()]
    write_table(args.out, "style_eval", summary)
    write_table(args.out, "style_eval_pairs", rows)
    print((args.out / "style_eval.md").read_text())

    from torchvision.utils import save_image

    shown = pairs[: args.grid_pairs]
    tiles = []
    for k, (ci, si) in enumerate(shown):
        idx = pairs.index((ci, si))
        tiles += [contents[ci], styles[si]] + [images[m][idx] for m in methods]
    thumbs = [F.interpolate(t[None], size=(192, 192), mode="bilinear", antialias=True,
                            align_corners=False)[0] for t in tiles]
    save_image(thumbs, args.out / "style_eval.png", nrow=2 + len(methods), padding=2, pad_value=1.0)
    (args.out / "style_eval_columns.txt").write_text(" | ".join(["content", "style", *methods]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
