"""``python infer.py task=slimming ckpt_path=<pruned ckpt> input=<image folder> output_dir=<dir>``.

The pruned network is rebuilt from the checkpoint alone (its recorded BN widths), then images are
classified exactly as the classification task does.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from normapps.data.image_io import check_image_input
from normapps.platform.checkpoint import load_module
from normapps.platform.profiling import count_flops, count_parameters
from normapps.platform.predict import classify_folder, image_infer_options
from normapps.tasks.slimming.prune import bn_widths


def run(cfg: DictConfig, *, device, output_dir: Path) -> dict:
    opts = image_infer_options(cfg, ckpt_hint="a checkpoint written by task=slimming")
    ckpt_path, spec, batch_size, requested = opts.ckpt_path, opts.input, opts.batch_size, opts.image_size
    check_image_input(spec, option="input")  # a missing or unreadable input fails before the model loads
    module = load_module(ckpt_path, expected_task="slimming")
    size = requested or int(module.image_size)
    result = classify_folder(module.net, spec, image_size=size,
                             channels=module.hparams.in_channels, output_dir=output_dir,
                             device=device, batch_size=batch_size)
    net = module.net.cpu()
    result.update({
        "stage": module.stage, "arch": module.hparams.arch, "image_size": size,
        "params": count_parameters(net),
        "flops": count_flops(net, module.example_input().cpu()),
        "bn_widths": bn_widths(net),
    })
    return result
