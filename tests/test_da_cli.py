"""End to end through the CLIs: train.py (source + every method on a target) and infer.py."""
import csv
import json

import numpy as np
from PIL import Image

from normapps.data.bundled import load_digits_tensors
from tests.helpers import infer, run_cli, train

METHODS = ["none", "test_bn", "adabn", "tent", "dsbn"]


def _digit_folder(root, n=24):
    x, y = load_digits_tensors()
    for i in range(n):
        d = root / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - x[i, 0].numpy() * 255).astype(np.uint8)).resize((32, 32)).save(d / f"{i}.png")
    (root / "broken.png").write_text("not an image")
    return root


def test_train_all_methods_then_infer(tmp_path):
    run = tmp_path / "run"
    summary = train(run, "task=domain_adaptation", "trainer=debug", "logger=csv",
                    "data.target.corruption=contrast", "data.target.severity=5",
                    "data.target.shift=inverted", "data.target.batch_size=64",
                    "adapt.stage1_epochs=1", "adapt.stage2_epochs=0",
                    "adapt.alpha=0.9")
    assert set(summary["target_error"]) == set(METHODS)
    for m in METHODS:
        assert 0.0 <= summary["metrics"][f"target/{m}/error"] <= 1.0
    assert summary["targets"] == ["contrast-5", "inverted"]
    with open(run / "da_results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["target"] for r in rows] == ["contrast-5", "inverted", "mean"]
    assert all(r[m] != "" for r in rows for m in METHODS)
    assert "| target |" in (run / "da_results.md").read_text()
    ckpt = summary["best_checkpoint"]

    out = tmp_path / "pred"
    infer(out, "task=domain_adaptation", f"ckpt_path={ckpt}", "adapt=tent", "adapt.mode=reset",
          "adapt.reset_every=1", f"target={_digit_folder(tmp_path / 'target')}", "batch_size=8")
    result = json.loads((out / "inference.json").read_text())
    assert result["adapt"] == "tent" and result["num_images"] == 24
    assert 0.0 <= result["accuracy"] <= 1.0
    with open(out / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 24


def test_bad_option_fails_before_training(tmp_path):
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path}", "task=domain_adaptation", "adapt=tent",
                   "adapt.mode=sometimes", "logger=none", check=False)
    assert proc.returncode != 0
    assert "adapt.mode must be one of" in proc.stderr + proc.stdout
    assert not (tmp_path / "checkpoints").exists()
