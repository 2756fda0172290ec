"""Style transfer through the real CLIs (train.py / infer.py) and infer's input validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from normapps.data.image_io import ImageReadError
from normapps.tasks.style_transfer.infer import validate
from tests.helpers import infer, train

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, h: int, w: int, seed: int, hi: int = 255) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, hi, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("style_inputs")
    folder = d / "contents"
    folder.mkdir()
    _save(folder / "a.png", 64, 64, 0)
    _save(folder / "b.jpg", 48, 80, 1)
    (folder / "broken.png").write_bytes(b"not an image")
    mask = np.zeros((30, 30), np.uint8)
    mask[:, :15] = 255
    Image.fromarray(mask).save(d / "mask.png")
    (d / "bad_style.jpg").write_bytes(b"\x00\x01garbage")
    return {"folder": folder, "s1": _save(d / "s1.png", 70, 60, 2),
            "s2": _save(d / "s2.png", 50, 50, 3, hi=120), "mask": d / "mask.png",
            "bad_style": d / "bad_style.jpg", "dir": d}


def test_train_two_steps_then_infer_a_folder_with_a_mask(tmp_path, inputs):
    run = tmp_path / "run"
    summary = train(run, "task=style_transfer", "trainer=debug", "logger=csv",
                    "model.encoder.weights=random", "model.encoder.actnorm=false",
                    "data.bundled_load_size=64", "data.bundled_crop_size=64", "data.val_crop_size=80",
                    "data.batch_size=2")
    assert summary["task"] == "style_transfer"
    for key in ("val/content_loss", "val/style_loss", "test/content_loss"):
        assert np.isfinite(summary["metrics"][key])
    grids = sorted((run / "images").glob("val_samples_step*.png"))
    assert grids, "no content|style|output grid"
    # held-out pairs at data.val_crop_size (80), not the 64 px training crops: 3 tiles a row
    assert Image.open(grids[0]).size[0] == 3 * 80
    ckpt = summary["last_checkpoint"]

    out = tmp_path / "out"
    infer(out, "task=style_transfer", f"ckpt_path={ckpt}", f"content={inputs['folder']}",
          f"style=[{inputs['s1']},{inputs['s2']}]", f"mask={inputs['mask']}", "content_size=0",
          "precision=int8")
    result = json.loads((out / "inference.json").read_text())
    assert result["num_images"] == 2
    assert result["precision"] == "int8" and result["int8_calibration_s"] > 0
    assert result["skipped"] == [str(inputs["folder"] / "broken.png")]
    for name, size in (("a_stylized_s1_s2.png", (64, 64)), ("b_stylized_s1_s2.png", (80, 48))):
        img = Image.open(out / name)
        assert img.size == size and img.mode == "RGB"


def test_infer_public_weights_wct_interpolation_preserve_color(tmp_path, inputs):
    from tests.test_style_model import he_init, public_decoder, public_vgg

    torch.save(he_init(public_vgg(), 0).state_dict(), tmp_path / "vgg_normalised.pth")
    torch.save(he_init(public_decoder(), 1).state_dict(), tmp_path / "decoder.pth")
    out = tmp_path / "out"
    infer(out, "task=style_transfer", f"encoder_weights={tmp_path / 'vgg_normalised.pth'}",
          f"decoder_weights={tmp_path / 'decoder.pth'}", f"content={inputs['folder'] / 'a.png'}",
          f"style=[{inputs['s1']},{inputs['s2']}]", "style_weights=[0.3,0.7]", "method=wct",
          "preserve_color=true", "alpha=0.8", "content_size=48", "style_size=0")
    result = json.loads((out / "inference.json").read_text())
    assert result["method"] == "wct" and result["num_images"] == 1
    img = np.asarray(Image.open(out / "a_stylized_s1_s2.png"), dtype=np.float64) / 255
    assert img.shape == (48, 48, 3)
    content = np.asarray(Image.open(inputs["folder"] / "a.png").resize((48, 48), Image.BICUBIC),
                         dtype=np.float64) / 255
    # colour preserved: per-channel means follow the content's (up to clamping and rounding)
    assert np.abs(img.mean((0, 1)) - content.mean((0, 1))).max() < 0.05


# --- bad input, rejected before any work (in-process: no model is built) ----------------------
def _cfg(inputs, tmp_path, **over):
    base = OmegaConf.load(ROOT / "conf/task/infer/style_transfer.yaml")
    ckpt = tmp_path / "fake.ckpt"
    ckpt.write_bytes(b"x")
    cfg = OmegaConf.merge(base, {"ckpt_path": str(ckpt), "output_dir": str(tmp_path / "o"),
                                 "content": str(inputs["folder"] / "a.png"),
                                 "style": str(inputs["s1"])}, over)
    return cfg


@pytest.mark.parametrize("over, match", [
    ({"alpha": 1.5}, "alpha=1.5 is outside"),
    ({"alpha": -0.1}, "outside"),
    ({"style_weights": [0.5, 0.5]}, "2 values for 1 styles"),
    ({"mask": "MASK"}, "exactly two styles"),
    ({"method": "gatys"}, "method"),
    ({"precision": "int4"}, "precision='int4'"),
    ({"precision": "int8", "compile": True}, "do not combine"),
    ({"encoder_weights": "x.pth"}, "not both"),
    ({"content": "CONTENT_BAD"}, "not an image|cannot read image"),
    ({"style": "BAD_STYLE"}, "bad_style.jpg"),
    ({"content": "/nonexistent/dir"}, "no such file or folder"),
])
def test_bad_inputs_are_named_before_any_work(inputs, tmp_path, over, match):
    over = {k: (str(inputs["mask"]) if v == "MASK" else
                str(inputs["folder"] / "broken.png") if v == "CONTENT_BAD" else
                str(inputs["bad_style"]) if v == "BAD_STYLE" else v) for k, v in over.items()}
    with pytest.raises((ValueError, FileNotFoundError, ImageReadError), match=match):
        validate(_cfg(inputs, tmp_path, **over))


def test_int8_on_a_gpu_is_refused_with_the_other_options_before_weights_load(inputs, tmp_path, monkeypatch):
    """precision, device, tile size and method are checked together, before any network loads."""
    import torch

    from normapps.tasks.style_transfer import infer as style_infer

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the options were checked")

    monkeypatch.setattr(style_infer, "load_networks", no_weights)
    with pytest.raises(ValueError, match="CPU only"):
        style_infer.run(_cfg(inputs, tmp_path, precision="int8"), device=torch.device("cuda"),
                        output_dir=tmp_path)


def test_folder_with_a_bad_file_warns_and_skips(inputs, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        opts = validate(_cfg(inputs, tmp_path, content=str(inputs["folder"])))
    assert "broken.png" in caplog.text
    assert [p.name for p in opts["contents"]] == ["a.png", "b.jpg"]
    assert opts["skipped"] == [str(inputs["folder"] / "broken.png")]


def test_same_named_contents_in_sub_folders_get_separate_outputs(tmp_path):
    from normapps.tasks.style_transfer.infer import common_root, output_path

    contents = [tmp_path / "photos" / "a.png", tmp_path / "photos" / "trip" / "a.png"]
    root = common_root(contents)
    assert root == (tmp_path / "photos").resolve()
    out = [output_path(tmp_path / "out", p.resolve(), root, ["x.jpg"]) for p in contents]
    assert out == [tmp_path / "out" / "a_stylized_x.png", tmp_path / "out" / "trip" / "a_stylized_x.png"]


@pytest.mark.parametrize("value, match", [(4, "data.val_crop_size must be >= 8"),
                                          ("big", "data.val_crop_size='big'")])
def test_bad_val_crop_size_is_refused_by_the_preflight(value, match):
    from normapps.platform.options import OptionError
    from normapps.tasks.style_transfer.options import check_style_data_args

    with pytest.raises(OptionError, match=match):
        check_style_data_args({"val_crop_size": value})
    check_style_data_args({"val_crop_size": None})  # null: the training crop size
