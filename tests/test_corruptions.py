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


def test_names_and_order():
    assert C.CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression")
    assert C.EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert C.resolve_corruptions("extra") == list(C.EXTRA_CORRUPTIONS)
    assert C.resolve_corruptions(["fog", "contrast", "frost"]) == ["fog", "contrast", "frost"]
    with pytest.raises(ValueError, match="twice"):
        C.resolve_corruptions(["fog", "fog"])


@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_changes_image_keeps_range_and_is_deterministic(digits, name):
    out = C.corrupt(digits, name, 3, seed=7)
    assert out.shape == digits.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert _dist(out, digits) > 1e-3
    assert torch.equal(out, C.corrupt(digits, name, 3, seed=7))
    # uint8 values, floored from the unquantized output as np.uint8 does in the reference
    assert torch.equal(out * 255, (out * 255).round())
    raw = C.corrupt(digits, name, 3, seed=7, quantize=False)
    assert torch.equal(out, C.quantize_uint8(raw))
    assert torch.equal(digits, load_arrays("digits", train=True)[0][:24])  # input untouched


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur",
                                  "motion_blur", "snow", "frost", "fog", "elastic_transform",
                                  "speckle_noise", "spatter"])
def test_random_corruptions_depend_on_seed(digits, name):
    assert not torch.equal(C.corrupt(digits, name, 5, seed=0), C.corrupt(digits, name, 5, seed=1))


# Pixel distance to the clean image grows with severity for these. Not for: glass blur and
# elastic (see below), spatter (water drops at 1-3, mud at 4-5), saturate (desaturates at 1-2,
# saturates at 3-5), and motion blur / frost, whose random angle / frost crop outweigh a step.
MONOTONE = [n for n in C.ALL_CORRUPTIONS if n not in (
    "glass_blur", "elastic_transform", "spatter", "saturate", "motion_blur", "frost")]


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
    d = [np.mean([_dist(C.corrupt(photos, "elastic_transform", s, seed=k, quantize=False), photos)
                  for k in range(3)]) for s in range(1, 6)]
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
    ours = C.corrupt(x, "brightness", 5, quantize=False)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    # contrast
    m = hwc.mean(axis=(0, 1), keepdims=True)
    ref = np.clip((hwc - m) * 0.15 + m, 0, 1)
    ours = C.corrupt(x, "contrast", 5, quantize=False)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-6
    # the blur inside glass blur is skimage's gaussian (mode nearest, truncate 4)
    ref = gaussian(hwc, sigma=0.7, channel_axis=-1)
    ours = C.gaussian_filter(x.double(), 0.7)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-6
    # gaussian_blur (held out): skimage's gaussian at sigma 1
    ref = np.clip(gaussian(hwc, sigma=1, channel_axis=-1), 0, 1)
    ours = C.corrupt(x, "gaussian_blur", 5, quantize=False)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    # saturate (held out): skimage HSV, S * 2.5 + 0.2
    hsv = rgb2hsv(hwc)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5 + 0.2, 0, 1)
    ref = np.clip(hsv2rgb(hsv), 0, 1)
    ours = C.corrupt(x, "saturate", 5, quantize=False)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    # JPEG at the same quality as PIL: same libjpeg, nearly identical pixels
    u8 = (hwc * 255).round().astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=40)
    ref = np.asarray(Image.open(buf), dtype=np.float64) / 255
    ours = C.corrupt(x, "jpeg_compression", 5)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).mean() < 0.01


def _reference_shuffle(x, offsets, delta):
    """hendrycks' loop, literally, on an (H, W, 3) uint8 array: the tuple assignment copies."""
    x = x.copy()
    h, w = x.shape[:2]
    p = 0
    for hh in range(h - delta, delta, -1):
        for ww in range(w - delta, delta, -1):
            dx, dy = offsets[:, p]
            p += 1
            h_prime, w_prime = hh + dy, ww + dx
            x[hh, ww], x[h_prime, w_prime] = x[h_prime, w_prime], x[hh, ww]
    return x


@pytest.mark.parametrize("delta", [1, 2])
def test_glass_shuffle_has_the_reference_copy_semantics(delta):
    g = torch.Generator().manual_seed(3)
    img = torch.randint(0, 256, (2, 3, 12, 12), generator=g).to(torch.uint8)
    positions = (12 - 2 * delta) ** 2
    offsets = torch.randint(-delta, delta, (2, 2, positions), generator=g)
    ours = C.glass_shuffle(img.float(), offsets, delta)
    for i in range(2):
        ref = _reference_shuffle(img[i].permute(1, 2, 0).numpy(), offsets[i].numpy(), delta)
        assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), ref.astype(np.float32))
    # copies, not swaps: some values are duplicated and others lost (a swap keeps the multiset)
    flat = img[0].reshape(3, -1)
    shuffled = ours[0].reshape(3, -1).to(torch.uint8)
    assert not torch.equal(flat.sort(dim=1).values, shuffled.sort(dim=1).values)


def test_glass_blur_equals_the_reference_pipeline(photos):
    from skimage.filters import gaussian

    x = (photos[:2] * 255).round() / 255  # the reference starts from uint8 images
    ours = C.corrupt(x, "glass_blur", 5, seed=4)
    sigma, delta, iterations = C.PARAMS["glass_blur"][4]
    # the same offsets corrupt() draws: its generator, one draw per iteration
    g = torch.Generator().manual_seed(4 * 1000 + C.ALL_CORRUPTIONS.index("glass_blur") * 10 + 5)
    draws = [torch.randint(-delta, delta, (2, 2, 30 * 30), generator=g) for _ in range(iterations)]
    for i in range(2):
        hwc = x[i].permute(1, 2, 0).double().numpy()
        y = np.uint8(gaussian(hwc, sigma=sigma, channel_axis=-1) * 255)
        for d in draws:
            y = _reference_shuffle(y, d[i].numpy(), delta)
        ref = np.uint8(np.clip(gaussian(y / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255)
        got = (ours[i].permute(1, 2, 0).double().numpy() * 255).round()
        # float32 vs float64 blur: at most one grey level apart where a value sits on a step
        assert np.abs(got - ref).max() <= 1 and (got != ref).mean() < 0.01


def test_noise_statistics():
    x = torch.full((4, 3, 32, 32), 0.5)
    out = C.corrupt(x, "speckle_noise", 5, seed=0, quantize=False)
    # x + x * N(0, c): relative residual std c
    assert abs(float(((out - x) / x).std()) - C.PARAMS["speckle_noise"][4]) < 0.01
    out = C.corrupt(x, "gaussian_noise", 5, seed=0, quantize=False)
    assert abs(float((out - x).std()) - C.PARAMS["gaussian_noise"][4]) < 0.005


def test_frost_snow_spatter_add_their_layers():
    black = torch.zeros(6, 3, 32, 32)
    frost = C.corrupt(black, "frost", 5, seed=0, quantize=False)
    w_frost = C.PARAMS["frost"][4][1]
    assert float(frost.max()) <= w_frost + 1e-6 and float(frost.mean()) > 0.05  # a frost crop, weighted
    white_snow = C.corrupt(black, "snow", 5, seed=0)
    assert float(white_snow.mean()) > 0.1  # snow brightens black images
    mud = C.corrupt(torch.full((6, 3, 32, 32), 0.9), "spatter", 5, seed=0)
    assert float(mud.min()) < 0.5  # mud blotches darken a light image


def test_any_size_and_greyscale():
    x = torch.rand(3, 1, 28, 28)
    for name in C.ALL_CORRUPTIONS:
        out = C.corrupt(x, name, 5, seed=0)
        assert out.shape == x.shape, name


def test_bad_names_and_severities():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(x, "snowstorm", 1)
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match="severity"):
            C.corrupt(x, "contrast", bad)
