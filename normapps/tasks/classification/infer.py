"""``python infer.py task=classification ckpt_path=<ckpt> input=<image folder> output_dir=<dir>``."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from normapps.data.image_io import list_images
from normapps.platform.checkpoint import load_module
from normapps.tasks.classification.predict import classify_folder


def run(cfg: DictConfig, *, device, output_dir: Path) -> dict:
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=<checkpoint of task=classification> is required")
    if not cfg.get("input"):
        raise ValueError("input=<image file, folder or glob> is required")
    list_images(cfg.input)  # fail on a missing/empty input before loading the model
    module = load_module(cfg.ckpt_path, expected_task="classification")
    size = cfg.get("image_size") or 32
    return classify_folder(module.net, cfg.input, image_size=size,
                           channels=module.hparams.in_channels, output_dir=output_dir,
                           device=device, batch_size=cfg.batch_size)
