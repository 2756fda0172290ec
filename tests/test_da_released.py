"""The released-data loader on files generated in exactly the released layouts."""
import numpy as np
import pytest
import torch
from PIL import Image

from normapps.data.released import check_released, load_released


def write_cifar_c(root, corruptions=("fog", "contrast"), n=7, size=32, classes=10, seed=0):
    """CIFAR-10-C's layout: <corruption>.npy (5*N, H, W, 3) uint8, labels.npy (5*N,)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(rng.integers(0, classes, n), 5).astype(np.uint8)
    for c in corruptions:
        imgs = rng.integers(0, 256, (5 * n, size, size, 3)).astype(np.uint8)
        for s in range(5):  # mark each severity block so the test can tell them apart
            imgs[s * n:(s + 1) * n, 0, 0, 0] = s + 1
        np.save(root / f"{c}.npy", imgs)
    np.save(root / "labels.npy", labels)
    return root


def test_cifar_layout_first_n_per_severity(tmp_path):
    root = write_cifar_c(tmp_path / "CIFAR-10-C")
    raw = np.load(root / "fog.npy")
    labels = np.load(root / "labels.npy")
    x, y = load_released(root, "fog", 3, n_examples=4, image_size=32)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    expected = torch.from_numpy(raw[14:18]).permute(0, 3, 1, 2).float() / 255  # severity 3 = block 2
    assert torch.equal(x, expected)
    assert torch.equal(y, torch.from_numpy(labels[14:18].astype(np.int64)))
    assert (x[:, 0, 0, 0] * 255).round().eq(3).all()
    x_all, _ = load_released(root, "fog", 5)
    assert len(x_all) == 7 and (x_all[:, 0, 0, 0] * 255).round().eq(5).all()
    grey, _ = load_released(root, "fog", 1, channels=1)
    assert grey.shape == (7, 1, 32, 32)


def test_missing_and_malformed_files_are_named(tmp_path):
    root = write_cifar_c(tmp_path / "c10c")
    with pytest.raises(FileNotFoundError, match=r"snow\.npy.*zenodo"):
        check_released(root, ["fog", "snow"])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        check_released(tmp_path / "nowhere", ["fog"])
    (root / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.npy is missing"):
        check_released(root, ["fog"])
    bad = write_cifar_c(tmp_path / "bad", n=3)
    np.save(bad / "fog.npy", np.zeros((14, 32, 32, 3), np.uint8))  # not 5 severities
    with pytest.raises(ValueError, match="5 severities"):
        check_released(bad, ["fog"])
    with pytest.raises(ValueError, match="data.image_size"):
        load_released(write_cifar_c(tmp_path / "small", size=16), "fog", 1, image_size=32)


def test_imagenet_c_folders(tmp_path):
    root = tmp_path / "ImageNet-C"
    rng = np.random.default_rng(0)
    names = {}
    for s in range(1, 6):
        for k, wnid in enumerate(["n01440764", "n01443537"]):
            d = root / "fog" / str(s) / wnid
            d.mkdir(parents=True)
            for i in range(3):
                # validation-style names, interleaved across classes
                name = f"ILSVRC2012_val_{2 * i + k + 1:08d}.JPEG"
                Image.fromarray(rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)).save(d / name, "PNG")
                names[(s, name)] = k
    check_released(root, ["fog"])
    x, y = load_released(root, "fog", 2, n_examples=4, image_size=24)
    assert x.shape == (4, 3, 24, 24)
    # the first N by file name: 00000001 (class 0), 00000002 (class 1), ...
    assert y.tolist() == [0, 1, 0, 1]
    with pytest.raises(FileNotFoundError, match="ImageNet-C layout"):
        import shutil

        shutil.rmtree(root / "fog" / "4")
        check_released(root, ["fog"])
