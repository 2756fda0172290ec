"""``python infer.py task=classification ckpt_path=<ckpt> input=<image folder> output_dir=<dir>``."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from omegaconf import DictConfig

from normapps.data.image_io import check_image_input
from normapps.platform.checkpoint import load_module
from normapps.platform.predict import classify_folder, image_infer_options

log = logging.getLogger(__name__)

# Checkpoints written before they recorded their input size were trained at this size.
DEFAULT_IMAGE_SIZE = 32


def trained_image_size(module) -> int | None:
    size = (getattr(module, "checkpoint_info", None) or {}).get("data", {}).get("image_size")
    return int(size) if size else None


def pick_image_size(requested: int | None, trained: int | None) -> int:
    """The checkpoint's training size by default; an explicit other size is honoured, warned."""
    if requested is None:
        if trained is None:
            message = (f"the checkpoint does not record its training image size (written before "
                       f"checkpoints did); using image_size={DEFAULT_IMAGE_SIZE}, pass image_size=N if it differs")
            log.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        return trained or DEFAULT_IMAGE_SIZE
    if trained is not None and requested != trained:
        message = f"image_size={requested} differs from the {trained} px the model was trained at"
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return requested


def run(cfg: DictConfig, *, device, output_dir: Path) -> dict:
    opts = image_infer_options(
        cfg, ckpt_hint="a checkpoint holding a classifier (task=classification, slimming, domain_adaptation)")
    ckpt_path, spec, batch_size, requested = opts.ckpt_path, opts.input, opts.batch_size, opts.image_size
    check_image_input(spec, option="input")  # a missing or unreadable input fails before the model loads
    module = load_module(ckpt_path, expected_network="classifier")
    size = pick_image_size(requested, trained_image_size(module))
    result = classify_folder(module.net, spec, image_size=size,
                             channels=module.hparams.in_channels, output_dir=output_dir,
                             device=device, batch_size=batch_size)
    return {**result, "image_size": size}
