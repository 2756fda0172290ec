"""infer.py for task=quantization: run the saved int8 model on an image folder."""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from normapps.data.classification import resize_batch
from normapps.data.image_io import ImageFolderDataset, list_images
from normapps.platform.checkpoint import safe_load

log = logging.getLogger(__name__)


def _to_tensor(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _labelled(root: Path) -> bool:
    """One sub-folder per class: every image sits below a first-level folder of ``root``."""
    return root.is_dir() and all(p.parent != root for p in list_images(root))


def _label_index(classes: list[str]) -> list[int]:
    # Folders named 0..9 mean those class indices; other names are taken in sorted order.
    if all(c.isdigit() for c in classes):
        return [int(c) for c in classes]
    return list(range(len(classes)))


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    from normapps.tasks.quantization.artifact import load_quantized

    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path is required: the quantized.pt written by train.py task=quantization")
    if not cfg.get("input"):
        raise ValueError("input is required: an image file, folder or glob")
    if int(cfg.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    safe_load(cfg.ckpt_path)  # refuse a bad file before listing images
    root = Path(str(cfg.input))
    labelled = _labelled(root)
    ds = ImageFolderDataset(str(cfg.input), transform=_to_tensor, with_labels=labelled)
    if device.type != "cpu":
        log.warning("int8 x86 kernels run on the CPU; device=%s ignored", device)
    model, meta = load_quantized(cfg.ckpt_path)
    size, channels = int(meta["image_size"]), int(meta["arch"].get("in_channels", 3))
    label_of = _label_index(ds.classes) if labelled else None
    rows, correct = [], 0
    bs = int(cfg.batch_size)
    with torch.inference_mode():
        for start in range(0, len(ds), bs):
            items = [ds[i] for i in range(start, min(start + bs, len(ds)))]
            imgs = [it[0] if labelled else it for it in items]
            x = torch.cat([resize_batch(im.unsqueeze(0), size, channels) for im in imgs])
            probs = model(x).float().softmax(1)
            conf, pred = probs.max(1)
            for j, i in enumerate(range(start, start + len(items))):
                row = {"path": str(ds.paths[i]), "pred": int(pred[j]), "confidence": float(conf[j])}
                if labelled:
                    row["label"] = label_of[ds.labels[i]] if ds.labels[i] >= 0 else -1
                    correct += int(row["label"] == row["pred"])
                rows.append(row)
    csv_path = output_dir / "predictions.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result: dict[str, Any] = {"predictions": str(csv_path), "num_images": len(rows),
                              "recipe": meta["recipe"]}
    if labelled:
        result["accuracy"] = correct / len(rows)
    log.info("%d images -> %s%s", len(rows), csv_path,
             f" (accuracy {result['accuracy']:.4f})" if labelled else "")
    return result
