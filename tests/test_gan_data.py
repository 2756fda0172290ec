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
