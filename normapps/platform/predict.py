"""Batched prediction for any classifier: softmax probabilities in batches, predictions.csv (one
schema: path, prediction, confidence[, label]) plus accuracy when labels are known, top-1
accuracy over labelled batches, and an image folder classified end to end. The classification,
slimming, quantization and domain-adaptation runners and infers all write their predictions and
measure their accuracy through here."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from normapps.data.labelled_folder import load_image_folder
from normapps.platform.inference import require_finite
from normapps.platform.options import TaskOptions, int_option, text_option


@dataclass(frozen=True)
class ImageInferOptions(TaskOptions):
    """The options of an infer run over images (classification, slimming, quantization),
    checked together before anything loads."""
    ckpt_path: str
    input: str
    batch_size: int
    # None: the size the model was trained at (tasks that let the user resize)
    image_size: int | None = None


def image_infer_options(cfg, *, ckpt_hint: str) -> ImageInferOptions:
    """The checked :class:`ImageInferOptions` of ``cfg``; ``ckpt_hint`` says which file
    ``ckpt_path`` should be."""
    if not cfg.get("ckpt_path"):
        raise ValueError(f"ckpt_path is required: {ckpt_hint}")
    ckpt_path = text_option(cfg, "ckpt_path")
    if cfg.get("input") is None:
        raise ValueError("input is required: an image file, folder or glob")
    image_size = int_option(cfg, "image_size", min=1, allow_none=True) if "image_size" in cfg else None
    return ImageInferOptions(ckpt_path=ckpt_path, input=text_option(cfg, "input"),
                             batch_size=int_option(cfg, "batch_size", min=1), image_size=image_size)


@torch.inference_mode()
def predict_batches(model: nn.Module, images: torch.Tensor, *, batch_size: int,
                    device: torch.device) -> torch.Tensor:
    """Softmax probabilities for ``images``, batched."""
    model.eval().to(device)
    probs = [model(chunk.to(device)).float().softmax(1).cpu() for chunk in images.split(batch_size)]
    return torch.cat(probs)


@torch.inference_mode()
def accuracy(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], batches: Iterable, *,
             device: torch.device | str | None = None, eval_mode: bool = True) -> float:
    """Top-1 accuracy of ``model`` over ``(images, labels, ...)`` batches. A module runs in eval
    mode and gets its mode back after (``eval_mode=False`` runs it as given: exported PT2E
    graphs refuse ``.eval()``); ``device`` moves each batch there."""
    is_module = isinstance(model, nn.Module) and eval_mode
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    correct = total = 0
    try:
        for batch in batches:
            x, y = batch[0], batch[1]
            if device is not None:
                x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    finally:
        if is_module:
            model.train(was_training)
    if total == 0:
        raise ValueError("accuracy needs at least one labelled batch (the evaluation data is empty)")
    return correct / total


def write_predictions(output_dir: Path, paths: list[Path], probs: torch.Tensor,
                      labels: torch.Tensor | None) -> dict[str, Any]:
    """predictions.csv with one row per image; accuracy when labels are known."""
    require_finite(probs, "class probabilities")  # NaN would argmax to class 0, silently
    conf, pred = probs.max(1)
    out = Path(output_dir) / "predictions.csv"
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prediction", "confidence"] + (["label"] if labels is not None else []))
        for i, path in enumerate(paths):
            row = [str(path), int(pred[i]), f"{float(conf[i]):.4f}"]
            writer.writerow(row + ([int(labels[i])] if labels is not None else []))
    result: dict[str, Any] = {"num_images": len(paths), "predictions": str(out)}
    if labels is not None:
        result["accuracy"] = float((pred == labels).float().mean())
    return result


def classify_folder(model: nn.Module, folder: str | Path, *, image_size: int, channels: int,
                    output_dir: Path, device: torch.device, batch_size: int = 256) -> dict[str, Any]:
    images, paths, labels, _ = load_image_folder(folder, image_size=image_size, channels=channels)
    probs = predict_batches(model, images, batch_size=batch_size, device=device)
    return write_predictions(output_dir, paths, probs, labels)
