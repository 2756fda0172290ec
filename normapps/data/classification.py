"""Image classification data: bundled digits by default; torchvision sets and folders on demand.

Images are float tensors in [0, 1] with ``channels`` channels at ``image_size``; corruptions and
shifts (domain adaptation) are applied on top of these, so no input normalization happens here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from normapps.data.bundled import load_digits_tensors
from normapps.data.samplers import EpochSeededRandomSampler, ResumableDataLoader
from normapps.platform.options import OptionError, apply_checks, as_choice, as_float, as_int

NUM_CLASSES = {"digits": 10, "mnist": 10, "usps": 10, "svhn": 10, "cifar10": 10}
TORCHVISION_SETS = ("mnist", "usps", "svhn", "cifar10")


def resize_batch(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Resize (N, C, H, W) images in one call and match the channel count."""
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    elif images.shape[1] == 3 and channels == 1:
        images = images.mean(dim=1, keepdim=True)
    return images


def _torchvision_split(name: str, train: bool, root: str | Path, download: bool):
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "usps": tvd.USPS, "svhn": tvd.SVHN, "cifar10": tvd.CIFAR10}[name]
    kwargs = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
    try:
        return cls(root=str(root), download=download, **kwargs)
    except (RuntimeError, FileNotFoundError) as err:  # USPS raises FileNotFoundError
        raise FileNotFoundError(
            f"{name} not found under {root}: put it there or pass data.download=true "
            f"(needs internet) — {err}"
        ) from err


def _to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a torchvision dataset once into tensors (these sets fit in memory)."""
    import numpy as np

    data = ds.data
    data = torch.as_tensor(np.asarray(data))
    if data.ndim == 3:  # (N, H, W) greyscale
        data = data.unsqueeze(1)
    elif data.shape[-1] in (1, 3):  # (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    images = data.float() / (255.0 if data.dtype == torch.uint8 or data.max() > 1 else 1.0)
    labels = torch.as_tensor(np.asarray(getattr(ds, "targets", getattr(ds, "labels", None))))
    return images, labels.long()


def load_arrays(name: str, *, train: bool, root: str | Path = "data", download: bool = False,
                image_size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, channels, size, size) in [0, 1] and labels for one split of a dataset.

    For the bundled digits ``train=True`` returns all 1797 images; the datamodule splits them.
    """
    if name == "digits":
        images, labels = load_digits_tensors()
    elif name in TORCHVISION_SETS:
        images, labels = _to_tensors(_torchvision_split(name, train, root, download))
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from digits, {', '.join(TORCHVISION_SETS)}")
    return resize_batch(images, image_size, channels), labels


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[list, list, list]:
    """A fixed (train, val, test) split of ``range(n)`` by seed."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = int(round(n * fractions[0])), int(round(n * fractions[1]))
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


class ClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        *,
        dataset: str = "digits",
        root: str = "data",
        download: bool = False,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.check_args(dict(dataset=dataset, image_size=image_size, channels=channels,
                             batch_size=batch_size, eval_batch_size=eval_batch_size,
                             num_workers=num_workers, val_fraction=val_fraction,
                             test_fraction=test_fraction, seed=seed, num_classes=num_classes))
        self.dataset_name = dataset
        self.root, self.download = root, download
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.fractions = (val_fraction, test_fraction)
        self.seed = seed
        self.num_classes = num_classes or NUM_CLASSES[dataset]
        self.train_set: Dataset | None = None

    @classmethod
    def check_args(cls, args: Mapping[str, Any], *, prefix: str = "data") -> None:
        """Ranges and choices of the options in ``args`` (any subset), named ``<prefix>.<key>``."""
        checks = {
            "dataset": lambda k, v: as_choice(k, v, tuple(NUM_CLASSES)),
            "image_size": lambda k, v: as_int(k, v, min=1),
            "channels": lambda k, v: as_choice(k, v, (1, 3)),
            "batch_size": lambda k, v: as_int(k, v, min=1),
            "eval_batch_size": lambda k, v: as_int(k, v, min=1),
            "num_workers": lambda k, v: as_int(k, v, min=0),
            "val_fraction": lambda k, v: as_float(k, v, min=0.0, max=0.9),
            "test_fraction": lambda k, v: as_float(k, v, min=0.0, max=0.9),
            "seed": lambda k, v: as_int(k, v, min=0, max=2**32 - 1),
            "num_classes": lambda k, v: as_int(k, v, min=2, allow_none=True),
        }
        apply_checks(checks, args, prefix=prefix)
        fractions = [args.get("val_fraction", 0.15), args.get("test_fraction", 0.15)]
        if all(isinstance(f, (int, float)) for f in fractions) and sum(fractions) >= 0.9:
            raise OptionError(f"{prefix}.val_fraction + {prefix}.test_fraction = {sum(fractions):g}: "
                              "must leave at least 10% of the data for training")

    @property
    def in_channels(self) -> int:
        return self.channels

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        kw = dict(root=self.root, download=self.download, image_size=self.image_size,
                  channels=self.channels)
        x, y = load_arrays(self.dataset_name, train=True, **kw)
        if self.dataset_name == "digits":
            full = TensorDataset(x, y)
            tr, va, te = split_indices(len(full), self.fractions, self.seed)
            self.train_set, self.val_set, self.test_set = Subset(full, tr), Subset(full, va), Subset(full, te)
        else:
            full = TensorDataset(x, y)
            tr, va, _ = split_indices(len(full), (self.fractions[0], 0.0), self.seed)
            self.train_set, self.val_set = Subset(full, tr), Subset(full, va)
            self.test_set = TensorDataset(*load_arrays(self.dataset_name, train=False, **kw))

    def _loader(self, ds: Dataset, *, train: bool) -> DataLoader:
        if train:
            return ResumableDataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers,
                              sampler=EpochSeededRandomSampler(len(ds), seed=self.seed),
                              drop_last=len(ds) >= self.batch_size)
        return DataLoader(ds, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
