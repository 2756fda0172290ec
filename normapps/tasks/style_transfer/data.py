"""Content/style pairs: any two image folders (e.g. MS-COCO + WikiArt), or bundled samples.

Training items: a content image (cycled) and a random style image, each resized so the shorter
side is ``load_size`` and randomly cropped to ``crop_size``. Validation/test: a fixed held-out
set of (content, style) pairs, centre-cropped, never seen in training.
"""
from __future__ import annotations

import copy
import logging
from typing import Sequence

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from normapps.data.bundled import bundled_image
from normapps.data.image_io import ImageFolderDataset
from normapps.data.samplers import EpochSeededRandomSampler
from normapps.tasks.style_transfer.bundled_styles import TEXTURES_TRAIN, TEXTURES_VAL, bundled_styles
from normapps.tasks.style_transfer.options import check_style_data_args

log = logging.getLogger(__name__)

# scikit-image samples (no network): photographs as content, textures/art-like images as style.
BUNDLED_CONTENT_TRAIN = ("astronaut", "chelsea", "retina", "camera", "coins", "clock", "moon",
                         "motorcycle", "china", "flower")
BUNDLED_CONTENT_VAL = ("coffee", "rocket")
# The bundled texture styles (data.bundled_styles=[textures]); kept under their old names.
BUNDLED_STYLE_TRAIN = TEXTURES_TRAIN
BUNDLED_STYLE_VAL = TEXTURES_VAL


def image_transform(load_size: int, crop_size: int, *, train: bool) -> transforms.Compose:
    crop = transforms.RandomCrop(crop_size) if train else transforms.CenterCrop(crop_size)
    return transforms.Compose([
        transforms.Resize(load_size, antialias=True),  # shorter side, aspect kept
        crop,
        transforms.ToTensor(),
    ])


class PILListDataset(Dataset):
    """Images already in memory (the bundled samples)."""

    def __init__(self, images: Sequence[Image.Image], transform) -> None:
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


class TrainPairs(Dataset):
    """``length`` items; content ``i`` cycles, the style is drawn at random (seeded per worker)."""

    def __init__(self, content: Dataset, style: Dataset, length: int) -> None:
        self.content, self.style, self.length = content, style, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        j = int(torch.randint(len(self.style), ()).item())
        return self.content[i % len(self.content)], self.style[j]


class FixedPairs(Dataset):
    """(content, style) combinations of the held-out images in a fixed order that spreads the
    first pairs over contents and styles (diagonals of the content x style grid)."""

    def __init__(self, content: Dataset, style: Dataset, max_pairs: int) -> None:
        nc, ns = len(content), len(style)
        pairs = sorted(((c, s) for c in range(nc) for s in range(ns)),
                       key=lambda cs: ((cs[1] - cs[0]) % ns, cs[0]))
        self.pairs = pairs[:max_pairs]
        self.content, self.style = content, style

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        c, s = self.pairs[i]
        return self.content[c], self.style[s]


def _split(n: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    if n <= n_val:
        raise ValueError(f"need more than {n_val} images to hold {n_val} out for validation, found {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class StyleDataModule(pl.LightningDataModule):
    # train.py's preflight: ranges and folders checked before any image loads
    check_args = classmethod(lambda cls, args, *, prefix="data": check_style_data_args(args, prefix=prefix))

    def __init__(
        self,
        *,
        content_dir: str | list[str] | None = None,
        style_dir: str | list[str] | None = None,
        load_size: int = 512,
        crop_size: int = 256,
        batch_size: int = 8,
        bundled_load_size: int = 160,
        bundled_crop_size: int = 128,
        bundled_styles: Sequence[str] = ("textures",),
        procedural_styles: int = 48,
        samples_per_epoch: int = 10000,
        val_images: int = 2,
        val_pairs: int = 4,
        val_crop_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if (content_dir is None) != (style_dir is None):
            raise ValueError("give both data.content_dir and data.style_dir, or neither (bundled samples)")
        if crop_size > load_size or bundled_crop_size > bundled_load_size:
            raise ValueError("crop_size must not exceed load_size")
        self.save_hyperparameters()
        self.bundled = content_dir is None
        self.load_size = bundled_load_size if self.bundled else load_size
        self.crop_size = bundled_crop_size if self.bundled else crop_size
        # Held-out pairs may be shown larger than the training crops (the decoder is fully
        # convolutional): at 128 px relu4_1 is 16x16, too coarse to judge the content's structure.
        self.val_crop_size = val_crop_size or self.crop_size
        self.val_load_size = round(self.load_size * self.val_crop_size / self.crop_size)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        t_train = image_transform(self.load_size, self.crop_size, train=True)
        t_eval = image_transform(self.val_load_size, self.val_crop_size, train=False)
        if self.bundled:
            log.info("style_transfer data: bundled scikit-image samples (%d px crops); set "
                     "data.content_dir and data.style_dir for real training", self.crop_size)
            load = lambda names: [bundled_image(n) for n in names]  # noqa: E731
            c_train, c_val = load(BUNDLED_CONTENT_TRAIN), load(BUNDLED_CONTENT_VAL)
            kinds = list(hp.bundled_styles)
            s_train = bundled_styles(kinds, train=True, procedural=hp.procedural_styles, seed=hp.seed)
            s_val = bundled_styles(kinds, train=False, procedural=hp.procedural_styles, seed=hp.seed)
            log.info("style_transfer data: %d bundled content photos, %d style images (%s)",
                     len(c_train), len(s_train), ", ".join(kinds))
            content_train, content_val = PILListDataset(c_train, t_train), PILListDataset(c_val, t_eval)
            style_train, style_val = PILListDataset(s_train, t_train), PILListDataset(s_val, t_eval)
        else:
            content_train, content_val = self._folder(hp.content_dir, t_train, t_eval, hp.seed)
            style_train, style_val = self._folder(hp.style_dir, t_train, t_eval, hp.seed + 1)
        self.train_set = TrainPairs(content_train, style_train, hp.samples_per_epoch)
        self.val_set = FixedPairs(content_val, style_val, hp.val_pairs)

    def _folder(self, root, t_train, t_eval, seed):
        hp = self.hparams
        # Two views of the same file list: random crops for training, centre crops held out.
        train_ds = ImageFolderDataset(root, transform=t_train)
        eval_ds = copy.copy(train_ds)
        eval_ds.transform = t_eval
        train_idx, val_idx = _split(len(train_ds), hp.val_images, seed)
        return Subset(train_ds, train_idx), Subset(eval_ds, val_idx)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return DataLoader(self.train_set, batch_size=hp.batch_size, drop_last=True,
                          sampler=EpochSeededRandomSampler(len(self.train_set), seed=hp.seed),
                          num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def _eval_loader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()
