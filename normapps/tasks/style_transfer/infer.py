"""infer.py's style-transfer runner: validate everything, then load weights and stylize."""
from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from normapps.data.image_io import ImageReadError, list_images, load_image, readable_images
from normapps.platform.checkpoint import load_module, safe_load
from normapps.platform.inference import require_finite
from normapps.platform.measure import Duration, duration
from normapps.platform.options import (TaskOptions, as_float, as_text, bool_option, float_option,
                                       int_option, text_option)
from normapps.tasks.style_transfer.decoder import Decoder, load_public_decoder
from normapps.tasks.style_transfer.decoder_file import (SHIPPED_DECODER, is_decoder_file,
                                                        load_decoder_file)
from normapps.tasks.style_transfer import network_cache
from normapps.tasks.style_transfer.network_cache import file_key
from normapps.tasks.style_transfer.stylize import METHODS, Stylizer, check_precision
from normapps.tasks.style_transfer.vgg import (ENCODER_STRIDE, EncoderInfo, VGGEncoder, build_encoder,
                                               check_pairing, load_public_encoder)
from normapps.weights import WeightError, get_entry, locate, sha256_of, status

log = logging.getLogger(__name__)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (ListConfig, list, tuple)):
        return [v for v in (OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)]
    return [value]


# The encoder halves the image three times before relu4_1 and reflection-pads every level: a
# shorter side under this fails inside torch's padding.
MIN_SIDE = 16


def _side_check(img: Image.Image, name: str, size_key: str, size: int) -> None:
    if size == 0 and min(img.size) < MIN_SIDE:
        raise ValueError(f"{name} is {img.size[0]}x{img.size[1]} px: at its original size ({size_key}=0) "
                         f"the shorter side must be >= {MIN_SIDE}; pass {size_key}=N (N >= {MIN_SIDE})")


def _header_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


@dataclass(frozen=True)
class StylizeOptions(TaskOptions):
    """What every style-transfer method's inference takes: how it runs and what it stylizes.
    Each method family adds its own fields (:class:`StyleInferOptions`, ``CINInferOptions``)."""
    method: str
    device: torch.device | None
    precision: str
    compile: bool
    channels_last: bool
    tile_size: int
    batch_size: int
    content_size: int
    alpha: float
    preserve_color: bool
    weights: list[float] | None
    mask: Image.Image | None
    contents: list[Path]
    skipped: list[str]


@dataclass(frozen=True)
class StyleInferOptions(StylizeOptions):
    """method=adain / wct: every option and input, checked together before any weights load
    (the precision against the device it will run on, the tile size against the encoder's
    stride, the weight files against each other)."""
    style_size: int
    # null: the checkpoint's own setting
    unbiased: bool | None
    styles: list[str]
    style_images: list[Image.Image]
    content: str
    plan: "WeightsPlan"


def validate(cfg: DictConfig, *, device: torch.device | None = None) -> StyleInferOptions:
    """Check every option and input file; return them as one :class:`StyleInferOptions`. Cheap,
    runs first: the precision is checked with the device it will run on, before any weights load."""
    alpha = float_option(cfg, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    if cfg.method not in METHODS:
        raise ValueError(f"method={cfg.method!r}: expected one of {METHODS}")
    compile_ = bool_option(cfg, "compile")
    check_precision(cfg.precision, compile=compile_, device=device)
    flags = {key: bool_option(cfg, key) for key in ("preserve_color", "channels_last")}
    unbiased = bool_option(cfg, "unbiased", allow_none=True)
    styles = [as_text("style", s) for s in _as_list(cfg.style)]
    if not styles:
        raise ValueError("style=<file> or style=[a.jpg,b.jpg] is required")
    weights = [as_float(f"style_weights[{i}]", w, min=0.0)
               for i, w in enumerate(_as_list(cfg.style_weights))] or None
    if weights is not None:
        if len(weights) != len(styles):
            raise ValueError(f"style_weights has {len(weights)} values for {len(styles)} styles")
        if sum(weights) <= 0:
            raise ValueError(f"style_weights={weights}: need non-negative values with a positive sum")
    mask_path = text_option(cfg, "mask", allow_none=True)
    if mask_path is not None:
        if len(styles) != 2:
            raise ValueError(f"mask needs exactly two styles (style=[a,b]), got {len(styles)}")
        if weights is not None:
            raise ValueError("style_weights cannot be combined with mask (the mask decides the mix)")
    sizes = {key: int_option(cfg, key, min=0) for key in ("content_size", "style_size")}
    for key, size in sizes.items():
        if 0 < size < MIN_SIDE:
            raise ValueError(f"{key}={size}: must be 0 (original size) or >= {MIN_SIDE}")
    batch_size = int_option(cfg, "batch_size", min=1)
    tile = int_option(cfg, "tile_size", min=0)
    if tile and (tile < 64 or tile % ENCODER_STRIDE):  # the Stylizer's rule, checked before loading
        raise ValueError(f"tile_size={tile}: use 0 (no tiling) or a multiple of {ENCODER_STRIDE} >= 64")

    for key in ("ckpt_path", "encoder_weights", "decoder_weights"):
        text_option(cfg, key, allow_none=True)  # an empty value is no file (it was ignored)
    plan = plan_weights(cfg)

    # Inputs: a single bad file is an error naming it; bad files in folders/globs are skipped.
    content_spec = text_option(cfg, "content")
    contents = list_images(content_spec)
    skipped: list[str] = []
    if Path(content_spec).is_file():
        _side_check(load_image(contents[0]), f"content={contents[0]}", "content_size", sizes["content_size"])
    else:
        found, contents = contents, readable_images(contents)
        skipped = [str(p) for p in found if p not in set(contents)]
        if sizes["content_size"] == 0:  # too small to encode at their original size: skipped
            small = [p for p in contents if min(_header_size(p)) < MIN_SIDE]
            for p in small:
                warnings.warn(f"skipping {p}: shorter side under {MIN_SIDE} px at content_size=0")
            skipped += [str(p) for p in small]
            contents = [p for p in contents if p not in set(small)]
        if not contents:
            raise ValueError(f"content={content_spec}: no readable images")
    style_images = [load_image(s) for s in styles]
    for path, img in zip(styles, style_images):
        _side_check(img, f"style={path}", "style_size", sizes["style_size"])
    mask = load_image(mask_path).convert("L") if mask_path is not None else None
    return StyleInferOptions(
        method=str(cfg.method), device=device, precision=str(cfg.precision), compile=compile_,
        channels_last=flags["channels_last"], tile_size=tile, batch_size=batch_size,
        content_size=sizes["content_size"], style_size=sizes["style_size"], alpha=alpha,
        preserve_color=flags["preserve_color"], unbiased=unbiased, styles=styles,
        style_images=style_images, weights=weights, mask=mask, content=content_spec,
        contents=contents, skipped=skipped, plan=plan)


@dataclass
class WeightsPlan:
    """Which networks infer.py will load, decided (and the files checked) before any work."""
    kind: str  # checkpoint | decoder_file | public | shipped
    decoder: Path | None = None
    encoder: Path | None = None
    label: str = ""


def plan_weights(cfg: DictConfig) -> WeightsPlan:
    """ckpt_path, or decoder_weights (+ encoder_weights), or the shipped decoder; each file
    must exist, and a decoder file of this project must pair with the encoder given."""
    if cfg.ckpt_path and (cfg.encoder_weights or cfg.decoder_weights):
        raise ValueError("give either ckpt_path or encoder_weights+decoder_weights, not both")
    for key in ("ckpt_path", "encoder_weights", "decoder_weights"):
        if cfg[key] and not Path(cfg[key]).is_file():
            raise FileNotFoundError(f"{key}: no such file {cfg[key]}")
    if cfg.ckpt_path:
        return WeightsPlan("checkpoint", decoder=Path(cfg.ckpt_path),
                           label=f"checkpoint {cfg.ckpt_path}")
    if cfg.encoder_weights and not cfg.decoder_weights:
        raise ValueError("encoder_weights needs decoder_weights=<a decoder trained with that "
                         "encoder> (or give neither to use the shipped decoder)")
    if cfg.decoder_weights:
        path = Path(cfg.decoder_weights)
        payload = safe_load(path)
        if is_decoder_file(payload):
            _, needs, _ = load_decoder_file(path, payload)
            if cfg.encoder_weights:
                given = public_encoder_info(Path(cfg.encoder_weights))
                check_pairing(needs, given, what=f"decoder_weights={path}")
            else:
                check_encoder_source(needs, what=f"decoder_weights={path}")
            return WeightsPlan("decoder_file", decoder=path,
                               encoder=Path(cfg.encoder_weights) if cfg.encoder_weights else None,
                               label=f"decoder file {path}")
        if not cfg.encoder_weights:
            raise ValueError(f"decoder_weights={path} is a plain decoder state dict (e.g. the "
                             f"public decoder.pth): give its encoder too, encoder_weights=<vgg_normalised.pth>")
        return WeightsPlan("public", decoder=path, encoder=Path(cfg.encoder_weights),
                           label=f"public release files {cfg.encoder_weights} + {path}")
    try:
        path = locate(SHIPPED_DECODER)
    except (WeightError, KeyError) as err:
        raise ValueError(f"weights needed: ckpt_path=<checkpoint of this project>, "
                         f"decoder_weights=<decoder file>, or the shipped decoder ({err})") from err
    _, needs, _ = load_decoder_file(path)
    check_encoder_source(needs, what=f"the shipped decoder {SHIPPED_DECODER}")
    return WeightsPlan("shipped", decoder=path,
                       label=f"shipped decoder {SHIPPED_DECODER} ({get_entry(SHIPPED_DECODER).description})")


def public_encoder_info(path: Path) -> EncoderInfo:
    return EncoderInfo(arch="vgg19", source="public", entry="vgg19_normalised",
                       sha256=sha256_of(path), padding="reflect", actnorm=False)


def check_encoder_source(needs: EncoderInfo, *, what: str) -> None:
    """The encoder a decoder file needs must be on this machine, with the recorded checksum."""
    if needs.entry is None:
        return
    if get_entry(needs.entry).kind == "user":
        raise ValueError(f"{what} needs the encoder file of {needs.entry}: pass "
                         f"encoder_weights=<{get_entry(needs.entry).filename}>")
    ok, where = status(needs.entry)
    if not ok:
        raise ValueError(f"{what} needs the encoder {needs.entry}, which is not available: {where}")
    actual = sha256_of(Path(where))
    if needs.sha256 and actual != needs.sha256:
        raise ValueError(f"{what} was trained with {needs.entry} of sha256 {needs.sha256[:12]}, "
                         f"but {where} has sha256 {actual[:12]}")


def load_shipped_networks() -> tuple[VGGEncoder, Decoder, bool]:
    """The shipped decoder with the encoder it was trained with (what ``infer.py`` uses without
    ``ckpt_path`` or weight files); ``ValueError`` naming what is missing when not installed."""
    return load_networks(OmegaConf.create({"ckpt_path": None, "encoder_weights": None,
                                           "decoder_weights": None}))


def load_networks(cfg: DictConfig, plan: WeightsPlan | None = None) -> tuple[VGGEncoder, Decoder, bool]:
    plan = plan or plan_weights(cfg)
    key = ("adain", plan.kind, file_key(plan.decoder), file_key(plan.encoder))
    return network_cache.cached(key, lambda: _load_networks(plan))


def _load_networks(plan: WeightsPlan) -> tuple[VGGEncoder, Decoder, bool]:
    if plan.kind == "checkpoint":
        module = load_module(plan.decoder, expected_task="style_transfer")
        unbiased = bool(module.hparams.get("unbiased", True))
        return module.encoder, module.decoder, unbiased
    if plan.kind == "public":
        encoder, decoder = VGGEncoder(), Decoder()
        load_public_encoder(encoder, plan.encoder)
        load_public_decoder(decoder, plan.decoder)
        encoder.info = public_encoder_info(plan.encoder)
        return encoder, decoder, True
    decoder, needs, extra = load_decoder_file(plan.decoder)
    if plan.encoder is not None:
        encoder, _ = build_encoder(weights="public", path=str(plan.encoder), actnorm=False)
    else:
        encoder, _ = build_encoder(info=needs.to_dict(), download=False)
    check_pairing(needs, encoder.info, what=plan.label)
    return encoder, decoder, bool(extra.get("unbiased", True))


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    if size <= 0 or min(img.size) == size:
        return img
    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).float().div_(255)
    return t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)


def save_png(image: torch.Tensor, path: Path) -> None:
    # a NaN output would be written as a black picture: refuse it, naming the file
    require_finite(image, f"the stylization {path.name}")
    arr = image.mul(255).round_().clamp_(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def output_name(content: Path, styles: list[str]) -> str:
    return f"{content.stem}_stylized_{'_'.join(Path(s).stem for s in styles)}.png"


def output_path(output_dir: Path, content: Path, root: Path, styles: list[str]) -> Path:
    """``output_dir`` mirrors the contents' sub-folders below their common ``root``, so two
    contents with the same name in different sub-folders do not overwrite each other."""
    return output_dir / content.parent.relative_to(root) / output_name(content, styles)


def batch_mask(mask: Image.Image | None, content: torch.Tensor) -> torch.Tensor | None:
    """The greyscale two-style mask resized to the batch's images, (1, 1, H, W)."""
    if mask is None:
        return None
    return to_tensor(mask.resize((content.shape[-1], content.shape[-2]), Image.BILINEAR)).unsqueeze(0)


def save_stylized(images: torch.Tensor, paths: list, *, output_dir: Path, root: Path,
                  labels: list[str]) -> list[str]:
    """Write one PNG per stylized content where :func:`output_path` puts it; the paths written."""
    written = []
    for path, image in zip(paths, images):
        target = output_path(output_dir, Path(path).resolve(), root, labels)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_png(image, target)
        written.append(str(target))
    return written


def common_root(contents: list[Path]) -> Path:
    return Path(os.path.commonpath([str(Path(p).resolve().parent) for p in contents]))


def _batches(paths: list[Path], size: int, batch_size: int, skipped: list[str]):
    """Read, resize and group same-shaped contents into batches (bad files warned and skipped)."""
    pending: dict[tuple[int, int], list] = defaultdict(list)
    for path in paths:
        try:
            img = resize_shorter(load_image(path), size)
        except ImageReadError as err:
            warnings.warn(f"skipping {err}")
            skipped.append(str(path))
            continue
        group = pending[(img.height, img.width)]
        group.append((path, to_tensor(img)))
        if len(group) == batch_size:
            yield group
            pending[(img.height, img.width)] = []
    for group in pending.values():
        if group:
            yield group


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    from normapps.tasks.style_transfer import cin_infer

    if cfg.method in cin_infer.CIN_METHODS:  # method=cin / arbitrary_cin: their own pipelines
        return cin_infer.run(cfg, device=device, output_dir=output_dir)
    opts = validate(cfg, device=device)
    cin_infer.refuse_cin_checkpoint_for_adain(cfg)
    plan = opts.plan
    log.info("style_transfer weights: %s", plan.label)
    encoder, decoder, unbiased = load_networks(cfg, plan)
    if opts.unbiased is not None:
        unbiased = opts.unbiased
    stylizer = Stylizer(encoder, decoder, device=device, precision=opts.precision,
                        channels_last=opts.channels_last, unbiased=unbiased,
                        tile_size=opts.tile_size, method=opts.method, compile=opts.compile)
    # Each style is encoded once for every content.
    codes = [stylizer.encode_style(to_tensor(resize_shorter(img, opts.style_size)).unsqueeze(0))
             for img in opts.style_images]
    outputs, skipped = [], list(opts.skipped)
    groups = _batches(opts.contents, opts.content_size, opts.batch_size, skipped)
    calibration_s = None
    if stylizer.int8:
        # The encoder's calibration is style-free (cached on disk after the first run); the
        # decoder is calibrated for this run's styles on bundled photos, never on its contents,
        # so an image stylizes the same whatever else the run holds.
        with duration() as calibration:
            stylizer.calibrate_int8(codes)
        calibration_s = round(calibration.seconds, 3)
        log.info("int8 (%s): encoder %s, decoder calibrated for the run's styles; %.1f s",
                 "precision=auto on a VNNI CPU" if opts.precision == "auto" else "precision=int8",
                 stylizer.int8_source, calibration_s)
    root = common_root(opts.contents)
    run_time, n_images = Duration.started(device=device), 0
    for group in groups:
        paths = [p for p, _ in group]
        content = torch.stack([t for _, t in group])
        mask = batch_mask(opts.mask, content)
        if mask is not None:
            mask = mask.expand(len(group), -1, -1, -1)
        out = stylizer.stylize(content, codes, weights=opts.weights, mask=mask,
                               alpha=opts.alpha, preserve_color=opts.preserve_color)
        outputs += save_stylized(out, paths, output_dir=output_dir, root=root, labels=opts.styles)
        n_images += len(group)
    seconds = run_time.stop()
    log.info("stylized %d image(s) in %.2f s into %s", n_images, seconds, output_dir)
    return {
        "outputs": outputs,
        "num_images": n_images,
        "skipped": skipped,
        "method": opts.method,
        "weights": plan.label,
        "encoder": encoder.info.describe() if hasattr(encoder, "info") else None,
        "precision": stylizer.precision_name,
        "int8_calibration_s": calibration_s,
        "seconds": round(seconds, 3),
        "images_per_s": run_time.rate(n_images),
    }
