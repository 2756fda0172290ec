import numpy as np
import pytest
import torch

from normapps.data import corruptions as C
from normapps.data.classification import load_arrays


@pytest.fixture(scope="module")
def digits():
    x, _ = load_arrays("digits", train=True, image_size=32, channels=3)
    return x[:24]


@pytest.fixture(scope="module")
def photos():
    # Smooth natural images: blur-type corruptions are measured better on them than on digits.
    import torch.nn.functional as F
    from torchvision.transforms.functional import pil_to_tensor

    from normapps.data.bundled import skimage_image

    imgs = [pil_to_tensor(skimage_image(n)).float()[None] / 255 for n in ("astronaut", "coffee", "chelsea")]
    return torch.cat([F.interpolate(i, size=(32, 32), mode="area") for i in imgs])


def _dist(a, b):
    return float((a - b).abs().mean())


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_changes_image_keeps_range_and_is_deterministic(digits, name):
    out = C.corrupt(digits, name, 3, seed=7)
    assert out.shape == digits.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert _dist(out, digits) > 1e-3
    assert torch.equal(out, C.corrupt(digits, name, 3, seed=7))
    assert torch.equal(digits, load_arrays("digits", train=True)[0][:24])  # input untouched


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur",
                                  "fog", "elastic_transform"])
def test_random_corruptions_depend_on_seed(digits, name):
    assert not torch.equal(C.corrupt(digits, name, 5, seed=0), C.corrupt(digits, name, 5, seed=1))


# Pixel distance to the clean image grows with severity for these ten.
MONOTONE = [n for n in C.CORRUPTIONS if n not in ("glass_blur", "elastic_transform")]


@pytest.mark.parametrize("name", MONOTONE)
def test_grows_with_severity(photos, name):
    d = [np.mean([_dist(C.corrupt(photos, name, s, seed=k), photos) for k in range(3)])
         for s in range(1, 6)]
    assert all(b > a for a, b in zip(d, d[1:])), (name, d)


def test_glass_blur_grows_with_iterations_and_sigma(photos):
    # The published (sigma, delta, iterations) are not monotone in pixel distance (severity 1
    # has no blur to hide its swaps); at equal sigma more shuffling is more distortion, and the
    # blur grows from 1 to 3 (smoother: lower total variation).
    d = {s: np.mean([_dist(C.corrupt(photos, "glass_blur", s, seed=k), photos) for k in range(3)])
         for s in (2, 3, 4, 5)}
    assert d[4] > d[2] and d[5] > d[3]

    def tv(x):
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean())

    assert tv(C.corrupt(photos, "glass_blur", 3)) < tv(C.corrupt(photos, "glass_blur", 1))


def test_elastic_local_displacement_grows(photos, monkeypatch):
    # The published affine jitter shrinks with severity while the elastic field grows; with the
    # affine part switched off, the distortion grows with severity.
    params = [(a, s, 0.0) for a, s, _ in C.PARAMS["elastic_transform"]]
    monkeypatch.setitem(C.PARAMS, "elastic_transform", params)
    d = [np.mean([_dist(C.corrupt(photos, "elastic_transform", s, seed=k), photos) for k in range(3)])
         for s in range(1, 6)]
    assert d[0] < 1e-3  # severity 1: no elastic field at all
    assert all(b > a for a, b in zip(d, d[1:])), d


def test_matches_reference_formulas(photos):
    from io import BytesIO

    from PIL import Image
    from skimage.color import hsv2rgb, rgb2hsv
    from skimage.filters import gaussian

    x = photos[:1]
    hwc = x[0].permute(1, 2, 0).double().numpy()
    # brightness: skimage HSV round trip as in make_cifar_c.py
    hsv = rgb2hsv(hwc)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    ref = np.clip(hsv2rgb(hsv), 0, 1)
    ours = C.corrupt(x, "brightness", 5)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    # contrast
    m = hwc.mean(axis=(0, 1), keepdims=True)
    ref = np.clip((hwc - m) * 0.15 + m, 0, 1)
    ours = C.corrupt(x, "contrast", 5)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-6
    # the blur inside glass blur is skimage's gaussian (mode nearest, truncate 4)
    ref = gaussian(hwc, sigma=0.7, channel_axis=-1)
    ours = C.gaussian_blur(x.double(), 0.7)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-6
    # JPEG at the same quality as PIL: same libjpeg, nearly identical pixels
    u8 = (hwc * 255).round().astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=40)
    ref = np.asarray(Image.open(buf), dtype=np.float64) / 255
    ours = C.corrupt(x, "jpeg_compression", 5)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).mean() < 0.01


def test_any_size_and_greyscale():
    x = torch.rand(3, 1, 28, 28)
    for name in C.CORRUPTIONS:
        out = C.corrupt(x, name, 5, seed=0)
        assert out.shape == x.shape, name


def test_bad_names_and_severities():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(x, "snowstorm", 1)
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match="severity"):
            C.corrupt(x, "contrast", bad)
    assert C.resolve_corruptions("all") == list(C.CORRUPTIONS)
