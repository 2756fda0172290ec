"""Data of an N-style CIN network: contents as for AdaIN (a folder, or the bundled photos), and a
fixed set of N styles, one per image of ``style_dir`` (sorted by path: the style index), or the
bundled styles. Training items are (content crop, style index); validation pairs every
held-out content with the styles. All N styles are trained (none is held out): a CIN network
only knows the styles it was trained on."""
from __future__ import annotations

import logging

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from normapps.data.bundled import skimage_image
from normapps.data.image_io import list_images, load_image, readable_images
from normapps.data.procedural import procedural_styles
from normapps.tasks.style_transfer.data import (
    BUNDLED_CONTENT_TRAIN,
    BUNDLED_CONTENT_VAL,
    PILListDataset,
    StyleDataModule,
    image_transform,
)

log = logging.getLogger(__name__)

# The bundled default's styles: four distinct colour schemes and textures (a stained tissue
# photograph and three procedural images: brush strokes, cells, wavy stripes), so a short CPU
# run shows the network telling its styles apart.
BUNDLED_STYLES = ("immunohistochemistry", "strokes", "cells", "stripes")
_PROCEDURAL = {"strokes": 0, "cells": 2, "stripes": 3}  # indices in procedural_styles(4, seed=0)


def bundled_styles(size: int = 256) -> list[Image.Image]:
    made = procedural_styles(4, size, seed=0)
    return [made[_PROCEDURAL[n]] if n in _PROCEDURAL else skimage_image(n) for n in BUNDLED_STYLES]


class IndexedPairs(Dataset):
    """``length`` items of (content ``i`` cycled, a random style index, seeded per worker)."""

    def __init__(self, content: Dataset, num_styles: int, length: int) -> None:
        self.content, self.num_styles, self.length = content, num_styles, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        j = int(torch.randint(self.num_styles, ()).item())
        return self.content[i % len(self.content)], j


class FixedIndexedPairs(Dataset):
    """Held-out contents with every style, style-major so a short list still shows every content."""

    def __init__(self, content: Dataset, num_styles: int, max_pairs: int) -> None:
        pairs = [(c, s) for s in range(num_styles) for c in range(len(content))]
        self.pairs, self.content = pairs[:max_pairs], content

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        c, s = self.pairs[i]
        return self.content[c], s


class StyleSetDataModule(StyleDataModule):
    """``StyleDataModule``'s options and contents; ``style_dir`` holds the N styles. Either
    folder may be given alone: contents default to the bundled photos (at the bundled sizes),
    styles to the bundled styles."""

    def __init__(self, *, content_dir: str | list[str] | None = None,
                 style_dir: str | list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hparams["content_dir"], self.hparams["style_dir"] = content_dir, style_dir
        self.bundled = content_dir is None
        if not self.bundled:
            self.load_size, self.crop_size = self.hparams.load_size, self.hparams.crop_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        t_train = image_transform(self.load_size, self.crop_size, train=True)
        t_eval = image_transform(self.load_size, self.crop_size, train=False)
        if self.bundled:
            content_train = PILListDataset([skimage_image(n) for n in BUNDLED_CONTENT_TRAIN], t_train)
            content_val = PILListDataset([skimage_image(n) for n in BUNDLED_CONTENT_VAL], t_eval)
        else:
            content_train, content_val = self._folder(hp.content_dir, t_train, t_eval, hp.seed)
        if hp.style_dir is None:
            log.info("style_transfer cin data: %d bundled styles (%s), %d px crops; set "
                     "data.style_dir=<folder of N styles> (and data.content_dir) for your own",
                     len(BUNDLED_STYLES), ", ".join(BUNDLED_STYLES), self.crop_size)
            styles, names = bundled_styles(), list(BUNDLED_STYLES)
        else:
            paths = readable_images(sorted(list_images(hp.style_dir)))
            if not paths:
                raise ValueError(f"data.style_dir={hp.style_dir}: no readable style images")
            styles, names = [load_image(p) for p in paths], [p.stem for p in paths]
        self.styles: list[Image.Image] = styles
        self.style_names: list[str] = names
        self.train_set = IndexedPairs(content_train, len(styles), hp.samples_per_epoch)
        self.val_set = FixedIndexedPairs(content_val, len(styles), hp.val_pairs)

    def _eval_loader(self) -> DataLoader:
        # All held-out pairs (every style) in one batch, so the logged grid shows every style.
        size = max(self.hparams.batch_size, min(len(self.val_set), 16))
        return DataLoader(self.val_set, batch_size=size, shuffle=False, num_workers=self.hparams.num_workers)

    @property
    def num_styles(self) -> int:
        self.setup()
        return len(self.styles)

    def style_tensors(self, size: int | None = None) -> list[torch.Tensor]:
        """Each style as (3, h, w) in [0, 1], shorter side resized to ``size`` (default: the
        training load size, so style and content textures are at the same scale)."""
        from torchvision.transforms import functional as TF

        self.setup()
        size = size or self.load_size
        return [TF.to_tensor(TF.resize(img, size, antialias=True)) for img in self.styles]
