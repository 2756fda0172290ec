"""``python infer.py task=domain_adaptation ckpt_path=<ckpt> adapt=<method> target=<folder>
output_dir=<dir>``: adapt a trained classifier to an unlabelled image folder and predict it.

Writes ``predictions.csv`` (path, prediction, confidence[, label]); with one sub-folder per
class the folder's labels are read for the accuracy only, never for adapting.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from normapps.data.classification import load_arrays
from normapps.data.image_io import list_images
from normapps.data.labelled_folder import load_image_folder
from normapps.platform.checkpoint import load_module
from normapps.platform.options import TaskOptions
from normapps.platform.predict import write_predictions
from normapps.tasks.domain_adaptation.methods import (
    METHODS, adapt_and_predict, method_options, validate_options,
)


@dataclass(frozen=True)
class AdaptInferOptions(TaskOptions):
    """infer.py task=domain_adaptation's options, checked together before the model loads."""
    ckpt_path: str
    target: str
    method: str
    # the method's predict options (adapt.<method>.*)
    options: dict[str, Any]
    batch_size: int
    image_size: int
    seed: int
    # labelled source data (adapt=dsbn trains on it, adapt=eata measures its Fisher on it)
    source: dict[str, Any]


def validate(cfg: DictConfig) -> AdaptInferOptions:
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=<classifier checkpoint (task=classification or domain_adaptation)> is required")
    if not cfg.get("target"):
        raise ValueError("target=<image file, folder or glob of the target domain> is required")
    adapt_cfg = OmegaConf.to_container(cfg.adapt, resolve=True)
    method = adapt_cfg.get("method")
    if method not in METHODS:
        raise ValueError(f"infer adapts with one method: adapt=<{'|'.join(METHODS)}>, got {method!r}")
    validate_options([method], adapt_cfg)
    batch_size = int(cfg.get("batch_size", 128))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from normapps.platform.options import as_int

    size = as_int("image_size", cfg.get("image_size"), min=4, allow_none=True) or 32
    list_images(cfg.target)  # a missing or empty folder fails before the model loads
    return AdaptInferOptions(ckpt_path=str(cfg.ckpt_path), target=str(cfg.target), method=method,
                             options=method_options(method, adapt_cfg), batch_size=batch_size,
                             image_size=size, seed=int(cfg.get("seed", 0)),
                             source=OmegaConf.to_container(cfg.source, resolve=True))


def run(cfg: DictConfig, *, device, output_dir: Path) -> dict:
    opts = validate(cfg)
    method, batch_size, size = opts.method, opts.batch_size, opts.image_size
    module = load_module(opts.ckpt_path, expected_network="classifier")
    channels = int(module.hparams.get("in_channels", 3))
    images, paths, labels, _ = load_image_folder(opts.target, image_size=size, channels=channels)
    sources = None
    if method in ("dsbn", "eata"):  # dsbn trains on it; eata measures its Fisher information on it
        src = opts.source
        sources = [load_arrays(src["dataset"], train=True, root=src["root"], download=src["download"],
                               image_size=size, channels=channels)]
    logits = adapt_and_predict(method, module.net, images, batch_size=batch_size,
                               options=opts.options, sources=sources, seed=opts.seed, device=device)
    result = write_predictions(output_dir, paths, logits.softmax(1), labels)
    result.update({"adapt": method, "target": opts.target})
    if "accuracy" in result:
        result["error"] = 1.0 - result["accuracy"]
    return result
