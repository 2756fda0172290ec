"""GAN data: image folders (bad files skipped, optional labels), bundled faces, option checks."""
import numpy as np
import pytest
import torch
from PIL import Image

from normapps.tasks.gan.data import GANDataModule


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
    return tmp_path


def test_folder_with_labels_skips_bad_files(tmp_path, caplog):
    dm = GANDataModule(dataset="folder", folder=str(_folder(tmp_path)), folder_labels=True, batch_size=2,
                       num_eval_real=4, num_classes=0)
    dm.setup("fit")
    assert "broken.png" in caplog.text  # skipped with a warning naming it
    assert dm.num_classes == 2 and len(dm.train_set) == 6
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    xs, ys = dm.real_tensors()
    assert xs.shape == (6, 3, 32, 32) and set(ys.tolist()) == {0, 1}


def test_faces_and_digits():
    faces = GANDataModule(dataset="faces", image_size=64, batch_size=4, num_classes=0)
    faces.setup("fit")
    assert len(faces.train_set) == 100 and faces.num_classes == 0
    assert faces.train_set[0][0].shape == (3, 64, 64)
    digits = GANDataModule(dataset="digits", batch_size=4, num_eval_real=50)
    digits.setup("fit")
    assert len(digits.train_set) == 1797 and len(digits.eval_set) == 50
    x, y = next(iter(digits.val_dataloader()))
    assert x.shape[1:] == (3, 32, 32) and y.dtype == torch.long


def test_bad_options_named():
    with pytest.raises(ValueError, match="data.folder"):
        GANDataModule(dataset="folder")
    with pytest.raises(ValueError, match="image_size"):
        GANDataModule(image_size=48)
    with pytest.raises(ValueError, match="data.dataset"):
        GANDataModule(dataset="imagenet")


def _fake_cifar10(root, n_per_batch=4):
    """CIFAR-10 in torchvision's on-disk layout (pickled batches), with random pixels."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_cifar10_through_torchvision_loader(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    _fake_cifar10(tmp_path)
    # The real files are md5-checked; the generated ones cannot match the published sums.
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda path, md5=None: True)
    dm = GANDataModule(dataset="cifar10", root=str(tmp_path), image_size=64, batch_size=4,
                       num_eval_real=8)
    x, y = dm.real_tensors()
    assert x.shape == (20, 3, 64, 64) and y.shape == (20,)  # 5 training batches, resized
    assert 0.0 <= x.min() and x.max() <= 1.0 and y.max() < 10
    assert len(dm.eval_set) == 8


def test_missing_torchvision_data_is_named(tmp_path):
    dm = GANDataModule(dataset="cifar10", root=str(tmp_path / "nowhere"), batch_size=4)
    with pytest.raises(FileNotFoundError, match="cifar10 not found under .*nowhere"):
        dm.setup()
