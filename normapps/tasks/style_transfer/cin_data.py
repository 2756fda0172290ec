"""Data of an N-style CIN network: contents as for AdaIN (a folder, or the bundled photos), and a
fixed set of N styles, one per image of ``style_dir`` (sorted by path: the style index), or the
bundled textures. Training items are (content crop, style index); validation pairs every
held-out content with the styles. All N styles are trained (none is held out): a CIN network
only knows the styles it was trained on."""
from __future__ import annotations

import logging

import torch
from PIL import Image
from torch.utils.data import Dataset

from normapps.data.bundled import skimage_image
from normapps.data.image_io import list_images, load_image, readable_images
from normapps.tasks.style_transfer.data import (
    BUNDLED_CONTENT_TRAIN,
    BUNDLED_CONTENT_VAL,
    BUNDLED_STYLE_TRAIN,
    BUNDLED_STYLE_VAL,
    PILListDataset,
    StyleDataModule,
    image_transform,
)

log = logging.getLogger(__name__)

BUNDLED_STYLES = BUNDLED_STYLE_TRAIN + BUNDLED_STYLE_VAL


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
    """``StyleDataModule``'s options and contents; ``style_dir`` holds the N styles."""

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        t_train = image_transform(self.load_size, self.crop_size, train=True)
        t_eval = image_transform(self.load_size, self.crop_size, train=False)
        if self.bundled:
            log.info("style_transfer cin data: bundled photos and %d bundled textures as styles "
                     "(%d px crops); set data.content_dir and data.style_dir for real training",
                     len(BUNDLED_STYLES), self.crop_size)
            content_train = PILListDataset([skimage_image(n) for n in BUNDLED_CONTENT_TRAIN], t_train)
            content_val = PILListDataset([skimage_image(n) for n in BUNDLED_CONTENT_VAL], t_eval)
            styles, names = [skimage_image(n) for n in BUNDLED_STYLES], list(BUNDLED_STYLES)
        else:
            content_train, content_val = self._folder(hp.content_dir, t_train, t_eval, hp.seed)
            paths = readable_images(sorted(list_images(hp.style_dir)))
            if not paths:
                raise ValueError(f"data.style_dir={hp.style_dir}: no readable style images")
            styles, names = [load_image(p) for p in paths], [p.stem for p in paths]
        self.styles: list[Image.Image] = styles
        self.style_names: list[str] = names
        self.train_set = IndexedPairs(content_train, len(styles), hp.samples_per_epoch)
        self.val_set = FixedIndexedPairs(content_val, len(styles), hp.val_pairs)

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
