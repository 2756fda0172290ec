"""The released corruption benchmarks, read from a user's folder in their published layout.

- CIFAR-10-C / CIFAR-100-C (and any data saved the same way): ``<dir>/<corruption>.npy`` of
  shape (5*N, H, W, 3) uint8 with severities 1..5 stacked (N images each, the same images in
  the same order), and ``<dir>/labels.npy`` of shape (5*N,).
- ImageNet-C: ``<dir>/<corruption>/<severity>/<class folder>/<image>``; classes are the sorted
  folder names (the ImageNet class order for wnids).

Evaluation uses the first N images of each severity (``n_examples``), RobustBench's convention
for the CIFAR files. For ImageNet-C the first N by file name: the ImageNet validation names
are in random class order, so the first N cover the classes (RobustBench uses its own fixed
list of 5000 ids instead).

RobustBench's loaders are not used: they download from Zenodo when the folder is missing,
assume N = 10000, and the package pins timm and autoattack versions this project does not need.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from normapps.data.classification import resize_batch

WHERE_TO_GET = (
    "CIFAR-10-C: https://zenodo.org/record/2535967 (CIFAR-10-C.tar), "
    "CIFAR-100-C: https://zenodo.org/record/3555552 (CIFAR-100-C.tar), "
    "ImageNet-C: https://zenodo.org/record/2235448 (one .tar per corruption group); "
    "unpack so that <corruption>.npy and labels.npy (CIFAR) or <corruption>/<severity>/<class>/ "
    "(ImageNet-C) sit directly in the folder"
)

SEVERITIES = 5


def released_layout(root: str | Path, corruption: str) -> str:
    """``"npy"`` (CIFAR-C files) or ``"folders"`` (ImageNet-C); a clear error when neither."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.target.released_dir={root} is not a folder. {WHERE_TO_GET}")
    npy = root / f"{corruption}.npy"
    if npy.is_file():
        return "npy"
    if (root / corruption).is_dir():
        return "folders"
    raise FileNotFoundError(
        f"released data for {corruption!r} not found: expected {npy} (CIFAR-10-C / CIFAR-100-C "
        f"layout) or the folder {root / corruption}/<severity>/<class>/ (ImageNet-C layout). "
        f"{WHERE_TO_GET}")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npy array ({err}). {WHERE_TO_GET}") from err


def check_released(root: str | Path, corruptions: list[str]) -> None:
    """Every file the run will read exists and has the released shape: checked before training."""
    root = Path(root)
    layouts = {c: released_layout(root, c) for c in corruptions}
    if "npy" in layouts.values():
        labels_path = root / "labels.npy"
        if not labels_path.is_file():
            raise FileNotFoundError(f"{labels_path} is missing (the labels of the CIFAR-C files). {WHERE_TO_GET}")
        labels = _load_npy(labels_path)
        for c, layout in layouts.items():
            if layout == "npy":
                images = _load_npy(root / f"{c}.npy")
                _check_npy_shapes(root / f"{c}.npy", images, labels)
    for c, layout in layouts.items():
        if layout == "folders":
            for s in range(1, SEVERITIES + 1):
                if not (root / c / str(s)).is_dir():
                    raise FileNotFoundError(f"{root / c / str(s)} is missing (ImageNet-C layout "
                                            f"<corruption>/<severity 1..5>/<class>/). {WHERE_TO_GET}")


def _check_npy_shapes(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: expected (5*N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if images.shape[0] % SEVERITIES:
        raise ValueError(f"{path}: {images.shape[0]} images is not 5 severities of N images")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{path.parent / 'labels.npy'}: shape {labels.shape} does not match "
                         f"{path.name}'s {images.shape[0]} images")


def load_released(root: str | Path, corruption: str, severity: int, *,
                  n_examples: int | None = None, image_size: int | None = None,
                  channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, channels, H, W) in [0, 1], labels) of one corruption and severity.

    ``n_examples``: the first N images of that severity (all when None). ``image_size``:
    npy images must already have it (a different size means another dataset: refused);
    ImageNet-C images are resized to it.
    """
    if not 1 <= int(severity) <= SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    root = Path(root)
    if released_layout(root, corruption) == "npy":
        path = root / f"{corruption}.npy"
        images, labels = _load_npy(path), _load_npy(root / "labels.npy")
        _check_npy_shapes(path, images, labels)
        per = images.shape[0] // SEVERITIES
        n = per if n_examples is None else min(int(n_examples), per)
        start = (int(severity) - 1) * per
        x = torch.from_numpy(np.array(images[start:start + n])).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.asarray(labels[start:start + n]).astype(np.int64))
        if image_size is not None and x.shape[-1] != image_size:
            raise ValueError(f"{path} holds {x.shape[-2]}x{x.shape[-1]} images but the source "
                             f"model sees {image_size}x{image_size} (data.image_size): "
                             f"released data must match the source data's size")
        x = x.float().div_(255)
        return resize_batch(x, x.shape[-1], channels), y
    return _load_folders(root / corruption / str(int(severity)), n_examples=n_examples,
                         image_size=image_size, channels=channels)


def _load_folders(folder: Path, *, n_examples, image_size, channels):
    from torchvision.transforms.functional import pil_to_tensor

    from normapps.data.image_io import list_images, load_image

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing (ImageNet-C layout). {WHERE_TO_GET}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders (ImageNet-C layout "
                                f"<corruption>/<severity>/<class>/<image>). {WHERE_TO_GET}")
    index = {c: i for i, c in enumerate(classes)}
    paths = sorted(list_images(folder), key=lambda p: (p.name, p.parent.name))
    if n_examples is not None:
        paths = paths[:int(n_examples)]
    images, labels = [], []
    for path in paths:
        t = pil_to_tensor(load_image(path)).float().div_(255).unsqueeze(0)
        images.append(resize_batch(t, image_size or t.shape[-1], channels)[0])
        labels.append(index[path.relative_to(folder).parts[0]])
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)
