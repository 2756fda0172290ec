"""GAN training data: [0, 1] images (the module maps them to [-1, 1]) and labels.

``dataset``: ``digits`` (scikit-learn's bundled digits upsampled, the default), ``faces``
(scikit-image's bundled LFW face crops), ``folder`` (any image folder, with ``folder=<path>``;
``folder_labels=true`` reads classes from sub-folders), ``cifar10`` / ``mnist`` (torchvision,
from ``root``). Unlabelled sets have ``num_classes=0``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from normapps.data.classification import load_arrays, resize_batch
from normapps.data.samplers import EpochSeededRandomSampler, ResumableDataLoader
from normapps.platform.options import OptionError, apply_checks, as_choice, as_int, as_text

log = logging.getLogger(__name__)

DATASETS = ("digits", "faces", "folder", "cifar10", "mnist")


class _FolderTensors(Dataset):
    """ImageFolderDataset items as (C, S, S) tensors in [0, 1] plus a label (0 if unlabelled)."""

    def __init__(self, root: str, *, image_size: int, channels: int, with_labels: bool) -> None:
        from torchvision import transforms

        from normapps.data.image_io import ImageFolderDataset

        tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                 transforms.ToTensor()])
        self.ds = ImageFolderDataset(root, transform=tf, with_labels=with_labels)
        self.channels = channels
        self.with_labels = with_labels

    @property
    def num_classes(self) -> int:
        return len(self.ds.classes) if self.with_labels else 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        item = self.ds[i]
        img, label = item if self.with_labels else (item, 0)
        img = img.mean(0, keepdim=True) if self.channels == 1 else img
        return img, label


class GANDataModule(pl.LightningDataModule):
    def __init__(
        self,
        *,
        dataset: str = "digits",
        root: str = "data",
        download: bool = False,
        folder: str | None = None,
        folder_labels: bool = False,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_eval_real: int = 2000,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if dataset == "folder" and not folder:
            raise ValueError("data.dataset=folder needs data.folder=<path to an image folder>")
        if image_size not in (32, 64):
            raise ValueError(f"data.image_size must be 32 or 64 for the GAN task, got {image_size}")
        if batch_size < 2:
            raise ValueError(f"data.batch_size must be >= 2 (batch statistics), got {batch_size}")
        self.dataset_name, self.root, self.download = dataset, root, download
        self.folder, self.folder_labels = folder, folder_labels
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_eval_real, self.num_workers, self.seed = num_eval_real, num_workers, seed
        self.num_classes = num_classes
        self.train_set: Dataset | None = None

    @classmethod
    def check_args(cls, args: Mapping[str, Any], *, prefix: str = "data") -> None:
        """Ranges and choices of ``args`` (any subset), named ``<prefix>.<key>``; train.py's
        preflight calls it before anything is built."""
        checks = {
            "dataset": lambda k, v: as_choice(k, v, DATASETS),
            "image_size": lambda k, v: as_choice(k, v, (32, 64)),
            "channels": lambda k, v: as_int(k, v, min=1),
            "batch_size": lambda k, v: as_int(k, v, min=2),
            "eval_batch_size": lambda k, v: as_int(k, v, min=1),
            "num_eval_real": lambda k, v: as_int(k, v, min=2),
            "num_classes": lambda k, v: as_int(k, v, min=0),
        }
        apply_checks(checks, args, prefix=prefix)
        folder = args.get("folder")
        if folder is not None:
            path = Path(as_text(f"{prefix}.folder", folder))
            if not path.is_dir():
                raise NotADirectoryError(f"{prefix}.folder={folder}: no such image folder")
        elif args.get("dataset") == "folder":
            raise OptionError(f"{prefix}.dataset=folder needs {prefix}.folder=<path to an image folder>")

    def _load(self) -> Dataset:
        kw = dict(image_size=self.image_size, channels=self.channels)
        if self.dataset_name == "folder":
            ds = _FolderTensors(self.folder, with_labels=self.folder_labels, **kw)
            self.num_classes = ds.num_classes
            return ds
        if self.dataset_name == "faces":
            from normapps.data.bundled import load_lfw_subset

            images, labels = load_lfw_subset()
            images = resize_batch(images[labels == 1], self.image_size, self.channels)
            self.num_classes = 0
            return TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
        images, labels = load_arrays(self.dataset_name, train=True, root=self.root,
                                     download=self.download, **kw)
        return TensorDataset(images, labels)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._load()
        n = len(self.train_set)
        # FID's real statistics: a fixed random subset of the training images (the usual
        # practice for unconditional CIFAR-10; the bundled sets are used whole).
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        self.eval_set = Subset(self.train_set, perm[: min(self.num_eval_real, n)].tolist())

    def real_tensors(self, max_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images and labels as tensors (for training the local feature network)."""
        self.setup()
        ds = self.train_set
        if isinstance(ds, TensorDataset):
            x, y = ds.tensors
        else:
            loader = DataLoader(ds, batch_size=self.eval_batch_size, num_workers=self.num_workers)
            xs, ys = zip(*loader)
            x, y = torch.cat(xs), torch.cat(ys)
        if max_items is not None and len(x) > max_items:
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[:max_items]
            x, y = x[idx], y[idx]
        return x, y

    def train_dataloader(self) -> DataLoader:
        ds = self.train_set
        # Resumable: a resumed run continues mid-epoch on the batches it had not seen.
        return ResumableDataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers,
                          sampler=EpochSeededRandomSampler(len(ds), seed=self.seed),
                          drop_last=len(ds) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.eval_set, batch_size=self.eval_batch_size, num_workers=self.num_workers)
