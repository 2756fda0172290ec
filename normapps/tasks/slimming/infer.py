"""``python infer.py task=slimming ckpt_path=<pruned ckpt> input=<image folder> output_dir=<dir>``.

The pruned network is rebuilt from the checkpoint alone (its recorded BN widths), then images are
classified exactly as the classification task does.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from normapps.data.image_io import list_images
from normapps.platform.checkpoint import load_module
from normapps.platform.profiling import count_flops, count_parameters
from normapps.tasks.classification.predict import classify_folder
from normapps.tasks.slimming.prune import bn_widths


def run(cfg: DictConfig, *, device, output_dir: Path) -> dict:
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=<checkpoint written by task=slimming> is required")
    if not cfg.get("input"):
        raise ValueError("input=<image file, folder or glob> is required")
    if int(cfg.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    list_images(cfg.input)  # fail on a missing/empty input before loading the model
    module = load_module(cfg.ckpt_path, expected_task="slimming")
    size = int(cfg.get("image_size") or module.image_size)
    if size < 1:
        raise ValueError(f"image_size must be >= 1, got {size}")
    result = classify_folder(module.net, cfg.input, image_size=size,
                             channels=module.hparams.in_channels, output_dir=output_dir,
                             device=device, batch_size=int(cfg.batch_size))
    net = module.net.cpu()
    result.update({
        "stage": module.stage, "arch": module.hparams.arch, "image_size": size,
        "params": count_parameters(net),
        "flops": count_flops(net, module.example_input().cpu()),
        "bn_widths": bn_widths(net),
    })
    return result
