"""Real data that ships with installed packages, so every default run works offline."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

# scikit-image sample images that are photographs or textures (RGB or greyscale).
SKIMAGE_CONTENT = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
SKIMAGE_STYLE = ("immunohistochemistry", "colorwheel", "brick", "grass", "gravel")


@lru_cache(maxsize=1)
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits as (N, 1, 8, 8) floats in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(digits.target.astype(np.int64))


def skimage_image(name: str) -> Image.Image:
    """One scikit-image sample image as RGB PIL (greyscale ones replicated)."""
    import skimage.data

    if name in EXTRA_PHOTOS:
        return bundled_image(name)
    if not hasattr(skimage.data, name):
        raise ValueError(f"unknown scikit-image sample {name!r}")
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype != np.uint8:
        arr = (255 * (arr - arr.min()) / max(float(np.ptp(arr)), 1e-8)).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3]).convert("RGB")


# Photos bundled with scikit-learn (load_sample_images) and scikit-image's stereo pair.
SKLEARN_PHOTOS = ("china", "flower")
EXTRA_PHOTOS = SKLEARN_PHOTOS + ("motorcycle",)


def bundled_image(name: str) -> Image.Image:
    """Any bundled picture by name: a scikit-image sample, ``motorcycle`` (the left view of
    scikit-image's stereo pair) or scikit-learn's ``china`` / ``flower`` photos, as RGB."""
    if name == "motorcycle":
        import skimage.data

        return Image.fromarray(np.asarray(skimage.data.stereo_motorcycle()[0])).convert("RGB")
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg")).convert("RGB")
    if name not in EXTRA_PHOTOS:
        return skimage_image(name)
    raise AssertionError(name)  # pragma: no cover


@lru_cache(maxsize=1)
def load_lfw_subset() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's 200 small crops (100 faces, 100 non-faces) as (N, 1, 25, 25) in [0, 1]."""
    import skimage.data

    images = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
