"""The one image reader: every mode to RGB, EXIF orientation, bad files named or skipped."""
import io

import numpy as np
import pytest
from PIL import Image

from normapps.data.image_io import ImageFolderDataset, ImageReadError, list_images, load_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(120).reshape(12, 10) * 500).astype(np.uint16))
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    ext = "tiff" if mode in ("F", "I", "CMYK") else "png"
    out = load_image(_save(img, tmp_path / f"x.{ext}"))
    assert out.mode == "RGB" and out.size == (10, 12)


def test_16_bit_png_keeps_its_range(tmp_path):
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "deep.png")
    out = np.asarray(load_image(path))
    assert out.min() == 0 and out.max() == 255  # a plain convert("L") would clip to white
    assert out[..., 0].std() > 50


def test_transparent_pixels_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out = np.asarray(load_image(_save(rgba, tmp_path / "a.png")))
    assert (out == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (10, 20)


def test_missing_and_non_image_files_are_named(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(ImageReadError, match="bad.png"):
        load_image(bad)


def test_truncated_file_is_an_error_alone(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 100x100 is > 2x the limit
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        load_image(path)


def test_folder_skips_bad_files_with_one_warning_each(tmp_path, caplog):
    (tmp_path / "sub").mkdir()
    for i in range(3):
        _save(Image.new("RGB", (8, 8), (i, i, i)), tmp_path / "sub" / f"{i}.png")
    (tmp_path / "sub" / "junk.jpg").write_bytes(b"junk")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "PNG")
    (tmp_path / "sub" / "trunc.png").write_bytes(buf.getvalue()[:60])
    with caplog.at_level("WARNING"):
        ds = ImageFolderDataset(tmp_path)
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("junk.jpg" in m for m in messages) == 1
    assert sum("trunc.png" in m for m in messages) == 1
    assert all(im.mode == "RGB" for im in items)
    assert len({id(im) for im in items}) == len(items)


def test_empty_folder_names_folder_and_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError) as err:
        list_images(tmp_path)
    assert str(tmp_path) in str(err.value) and ".png" in str(err.value)


def test_globs_and_recursion(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    _save(Image.new("RGB", (4, 4)), tmp_path / "a" / "b" / "deep.png")
    _save(Image.new("RGB", (4, 4)), tmp_path / "top.jpg")
    assert len(list_images(tmp_path)) == 2
    assert [p.name for p in list_images(str(tmp_path / "*.jpg"))] == ["top.jpg"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
