"""infer.py for task=quantization: run the saved int8 model on an image folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from normapps.data.image_io import check_image_input
from normapps.data.labelled_folder import load_image_folder
from normapps.platform.checkpoint import safe_load
from normapps.platform.predict import image_infer_options, predict_batches, write_predictions

log = logging.getLogger(__name__)


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    from normapps.tasks.quantization.artifact import load_quantized, quantized_meta

    opts = image_infer_options(cfg, ckpt_hint="the quantized.pt written by train.py task=quantization")
    ckpt_path, spec, batch_size = opts.ckpt_path, opts.input, opts.batch_size
    quantized_meta(safe_load(ckpt_path), ckpt_path)  # refuse a bad or foreign file before listing images
    check_image_input(spec, option="input")  # a missing or unreadable input fails before the rebuild
    if device.type != "cpu":
        log.warning("int8 x86 kernels run on the CPU; device=%s ignored", device)
    model, meta = load_quantized(ckpt_path)
    size, channels = int(meta["image_size"]), int(meta["arch"].get("in_channels", 3))
    images, paths, labels, _ = load_image_folder(spec, image_size=size, channels=channels)
    probs = predict_batches(model, images, batch_size=batch_size, device=torch.device("cpu"))
    # The platform's one predictions.csv schema (path, prediction, confidence[, label]).
    result: dict[str, Any] = {**write_predictions(output_dir, paths, probs, labels), "recipe": meta["recipe"]}
    log.info("%d images -> %s%s", result["num_images"], result["predictions"],
             f" (accuracy {result['accuracy']:.4f})" if "accuracy" in result else "")
    return result
