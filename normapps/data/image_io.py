"""The one image reader: any PIL mode to RGB, EXIF orientation applied, bad files named.

A single bad file given directly is an error; inside a folder it is skipped with one warning, so
a long run never dies on one corrupt JPEG.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / int / float greyscale: scale to 8 bits from the image's own range, since a
        # plain convert("L") clips everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white rather than dropping alpha, which exposes arbitrary hidden colours.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` fully as an RGB PIL image, or raise ImageReadError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            return _to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ImageReadError(
            f"{path}: refused, larger than the decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels ({err})"
        ) from err
    except Exception as err:  # PIL raises many types for truncated or non-image files
        raise ImageReadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(spec: str | Path | Sequence[str | Path], *, recursive: bool = True) -> list[Path]:
    """Resolve a file, a folder (recursively) or a glob, or a list of these, to image paths.

    Raises FileNotFoundError naming the path when nothing exists there, and ValueError naming
    the folder and the accepted extensions when it holds no images.
    """
    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in list_images(s, recursive=recursive)]
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(p for p in path.glob(pattern) if _is_image(p))
        if not found:
            raise ValueError(
                f"no images in folder {path} (accepted extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
        return found
    if any(ch in text for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_image(Path(p)))
        if not found:
            raise ValueError(
                f"no images match {text} (accepted extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
        return found
    raise FileNotFoundError(f"no such file or folder: {path}")


def readable_images(paths: Iterable[Path]) -> list[Path]:
    """Keep the paths whose header PIL can parse; warn once per file that it skips."""
    kept = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - parsing the header is the check
            kept.append(path)
        except Exception as err:
            log.warning("skipping unreadable image %s: %s: %s", path, type(err).__name__, err)
    return kept


def check_image_input(spec: str | Path, *, option: str) -> list[Path]:
    """Early check of an image option (a file, a folder or a glob): the images it names, or an
    error naming ``option``. A single file must be readable; folders keep skipping bad files."""
    if str(spec).strip() == "":
        raise ValueError(f"{option}=: expected an image file, folder or glob")
    try:
        paths = list_images(spec)
        if Path(str(spec)).expanduser().is_file():
            load_image(paths[0])
        elif not readable_images(paths):
            raise ValueError(f"no readable images in {spec}")
    except ImageReadError as err:
        raise ImageReadError(f"{option}: {err}") from None
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{option}: {err}") from None
    return paths


class ImageFolderDataset(Dataset):
    """Images under one or more folders/globs, recursively; bad files skipped with a warning.

    With ``with_labels=True`` the first folder level below ``root`` names the class
    (torchvision's ImageFolder layout), and items are ``(image, label)``.
    """

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        *,
        transform: Callable | None = None,
        with_labels: bool = False,
    ) -> None:
        self.transform = transform
        self.paths = readable_images(list_images(root))
        if not self.paths:
            raise ValueError(f"no readable images under {root}")
        self.with_labels = with_labels
        if with_labels:
            base = Path(root if isinstance(root, (str, Path)) else root[0])
            self.classes = sorted({p.relative_to(base).parts[0] for p in self.paths if p.parent != base})
            if not self.classes:
                raise ValueError(f"{base}: labelled layout needs one sub-folder per class")
            index = {c: i for i, c in enumerate(self.classes)}
            self.labels = [index.get(p.relative_to(base).parts[0], -1) for p in self.paths]
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # A file whose header parsed may still be truncated; skip to the next good one.
        for offset in range(len(self.paths)):
            j = (i + offset) % len(self.paths)
            if j in self._bad:
                continue
            try:
                img = load_image(self.paths[j])
            except ImageReadError as err:
                self._bad.add(j)
                log.warning("skipping %s", err)
                continue
            if self.transform is not None:
                img = self.transform(img)
            return (img, self.labels[j]) if self.with_labels else img
        raise RuntimeError("every image in the dataset failed to load")
