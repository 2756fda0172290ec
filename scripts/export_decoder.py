"""Export the decoder of an AdaIN training checkpoint as a small standalone decoder file.

    python scripts/export_decoder.py <run>/checkpoints/last.ckpt decoder.pt
    python infer.py task=style_transfer decoder_weights=decoder.pt content=... style=...

The file holds the decoder in fp16 (about 7 MB) and the record of its encoder (registry entry,
sha256, layout, activation-normalization scales), so it needs only the encoder's source (e.g.
the packaged VGG-16) to run, and refuses any other encoder. This is how
``normapps/weights/files/adain_decoder_bundled.pt`` was made from ``experiment=adain_bundled``.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from normapps.platform.checkpoint import load_module, safe_load
from normapps.tasks.style_transfer.decoder_file import save_decoder_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (twice the size)")
    args = parser.parse_args(argv)
    module = load_module(args.checkpoint, expected_task="style_transfer")
    ckpt = safe_load(args.checkpoint)
    hp = dict(module.hparams)
    recipe = {"checkpoint": args.checkpoint.name, "global_step": int(ckpt.get("global_step", 0)),
              "lr": hp.get("lr"), "style_weight": hp.get("style_weight"),
              "content_weight": hp.get("content_weight")}
    import torch

    path = save_decoder_file(args.out, module.decoder, module.encoder.info,
                             unbiased=bool(hp.get("unbiased", True)), eps=float(hp.get("eps", 1e-5)),
                             dtype=torch.float32 if args.fp32 else torch.float16, recipe=recipe)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), sha256 {digest}, "
          f"encoder {module.encoder.info.describe()}, step {recipe['global_step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
