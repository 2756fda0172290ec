"""Image folders for classifiers: any layout, labelled when it has one sub-folder per class."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchvision.transforms.functional import pil_to_tensor

from normapps.data.classification import resize_batch
from normapps.data.image_io import ImageReadError, list_images, load_image, readable_images

log = logging.getLogger(__name__)


def _label_of(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else None


def load_image_folder(spec: str | Path, *, image_size: int, channels: int = 3
                      ) -> tuple[torch.Tensor, list[Path], torch.Tensor | None, list[str]]:
    """Read every image under ``spec`` into (N, channels, size, size) floats in [0, 1].

    Returns (images, paths, labels, class_names); labels is None unless every image sits in a
    class sub-folder. Class names that are integers ("0".."9") map to those integers, so a
    folder of digits lines up with the digit classifier's outputs; others map in sorted order.
    Unreadable files are skipped with a warning.
    """
    root = Path(spec)
    paths = readable_images(list_images(spec))
    tensors, kept = [], []
    for path in paths:
        try:
            img = load_image(path)
        except ImageReadError as err:
            log.warning("skipping %s", err)
            continue
        t = pil_to_tensor(img).float().div_(255).unsqueeze(0)
        tensors.append(resize_batch(t, image_size, channels)[0])
        kept.append(path)
    if not kept:
        raise ValueError(f"no readable images in {spec}")
    images = torch.stack(tensors)
    names = [_label_of(p, root) for p in kept] if root.is_dir() else [None] * len(kept)
    if any(n is None for n in names):
        return images, kept, None, []
    classes = sorted(set(names), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    if all(c.isdigit() for c in classes):
        labels = torch.tensor([int(n) for n in names])
    else:
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[n] for n in names])
    return images, kept, labels, classes
