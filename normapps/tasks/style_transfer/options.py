"""Range, choice and file checks of the AdaIN module's and the style datamodule's options,
called by train.py's preflight (``check_args``) before any encoder, decoder or image loads."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from normapps.platform.options import (OptionError, apply_checks, as_bool, as_choice, as_float, as_int,
                                       as_text)

ENCODER_WEIGHTS = ("auto", "public", "imagenet", "packaged", "random")
ENCODER_ARCHS = ("auto", "vgg16", "vgg19")
ENCODER_PADDINGS = ("reflect", "zeros")
DECODER_INIT_NAMES = ("auto", "shipped", "adain_decoder_bundled")


def _existing_file(key: str, value: Any) -> str:
    path = as_text(key, value)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{key}={value}: no such file")
    return path


def check_encoder(key: str, encoder: Any) -> None:
    if encoder is None:
        return
    if not isinstance(encoder, Mapping):
        raise OptionError(f"{key}={encoder!r}: expected a mapping of encoder options")
    unknown = sorted(set(encoder) - {"weights", "path", "arch", "padding", "actnorm", "download", "info"})
    if unknown:
        raise OptionError(f"{key}: unknown options {unknown}; expected weights, path, arch, padding, "
                          f"actnorm, download")
    # "checkpoint" is set internally when a checkpoint rebuilds its own encoder.
    weights = encoder.get("weights", "auto")
    if weights != "checkpoint":
        as_choice(f"{key}.weights", weights, ENCODER_WEIGHTS)
    if encoder.get("path") is not None:
        _existing_file(f"{key}.path", encoder["path"])
    elif weights == "public":
        raise OptionError(f"{key}.weights=public needs {key}.path=<vgg_normalised.pth>")
    as_choice(f"{key}.arch", encoder.get("arch", "auto"), ENCODER_ARCHS)
    as_choice(f"{key}.padding", encoder.get("padding", "reflect"), ENCODER_PADDINGS)
    as_bool(f"{key}.actnorm", encoder.get("actnorm", True))
    as_bool(f"{key}.download", encoder.get("download", True))


def check_adain_args(args: Mapping[str, Any], *, prefix: str = "model") -> None:
    checks = {
        "encoder": check_encoder,
        "content_weight": lambda k, v: as_float(k, v, min=0.0),
        "style_weight": lambda k, v: as_float(k, v, min=0.0),
        "identity_weight": lambda k, v: as_float(k, v, min=0.0),
        "lr": lambda k, v: as_float(k, v, min=0.0, min_open=True),
        "lr_decay": lambda k, v: as_float(k, v, min=0.0),
        "eps": lambda k, v: as_float(k, v, min=0.0, min_open=True),
        "max_logged_samples": lambda k, v: as_int(k, v, min=0),
        "unbiased": as_bool,
        "channels_last": as_bool,
        "decoder_init": check_decoder_init,
    }
    apply_checks(checks, args, prefix=prefix)


def check_decoder_init(key: str, value: Any) -> None:
    if value is None:
        return
    text = as_text(key, value)
    if text not in DECODER_INIT_NAMES and not Path(text).is_file():
        raise FileNotFoundError(f"{key}={value}: expected auto, shipped, null or a decoder file "
                                f"(scripts/export_decoder.py), and no such file exists")


def _existing_dirs(key: str, value: Any) -> None:
    if value is None:
        return
    for one in value if isinstance(value, (list, tuple)) else [value]:
        path = as_text(key, one)
        if not Path(path).is_dir():
            raise NotADirectoryError(f"{key}={one}: no such image folder")


def check_style_data_args(args: Mapping[str, Any], *, prefix: str = "data") -> None:
    from normapps.tasks.style_transfer.bundled_styles import KINDS

    sizes = ("load_size", "crop_size", "bundled_load_size", "bundled_crop_size")
    checks = {
        "content_dir": _existing_dirs,
        "style_dir": _existing_dirs,
        **{k: (lambda key, v: as_int(key, v, min=8)) for k in sizes},
        "batch_size": lambda k, v: as_int(k, v, min=1),
        "procedural_styles": lambda k, v: as_int(k, v, min=0),
        "samples_per_epoch": lambda k, v: as_int(k, v, min=1),
        "val_images": lambda k, v: as_int(k, v, min=1),
        "val_pairs": lambda k, v: as_int(k, v, min=1),
        "val_crop_size": lambda k, v: as_int(k, v, min=8, allow_none=True),
        "num_workers": lambda k, v: as_int(k, v, min=0),
    }
    apply_checks(checks, args, prefix=prefix)
    kinds = args.get("bundled_styles")
    if kinds is not None:
        bad = [k for k in (kinds if isinstance(kinds, (list, tuple)) else [kinds]) if k not in KINDS]
        if bad or isinstance(kinds, str):
            raise OptionError(f"{prefix}.bundled_styles={kinds!r}: expected a list of {', '.join(KINDS)}")
