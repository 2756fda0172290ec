"""End to end through the CLIs: train.py (source + every method on a target) and infer.py."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from normapps.data.bundled import load_digits_tensors
from tests.helpers import assert_figure, infer, run_cli, train
from tests.test_da_released import write_cifar_c

METHODS = ["none", "test_bn", "prior_bn", "adabn", "tent", "eata", "sar", "dsbn"]


def _digit_folder(root, n=24):
    x, y = load_digits_tensors()
    for i in range(n):
        d = root / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - x[i, 0].numpy() * 255).astype(np.uint8)).resize((32, 32)).save(d / f"{i}.png")
    (root / "broken.png").write_text("not an image")
    return root


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_all_methods_with_wandb_then_infer(tmp_path):
    # The default W&B logger (offline): a single corruption used to crash at the very end when
    # the W&B table got a number and an empty string in one column (issue 12).
    run = tmp_path / "run"
    summary = train(run, "task=domain_adaptation", "trainer=debug",
                    "data.target.corruption=contrast", "data.target.severity=5",
                    "data.target.shift=inverted", "data.target.batch_size=64",
                    "adapt.dsbn.stage1_epochs=1", "adapt.stage2_epochs=0",  # a deprecated flat name
                    "adapt.adabn.alpha=0.9", "adapt.eata.fisher_size=64")
    assert set(summary["target_error"]) == set(METHODS)
    for m in METHODS:
        assert 0.0 <= summary["metrics"][f"target/{m}/error"] <= 1.0
        assert summary["metrics"][f"target/{m}/batch/error"] == summary["metrics"][f"target/{m}/error"]
    assert summary["targets"] == ["contrast-5", "inverted"]
    assert summary["stream"] == "reset" and summary["batch_size"] == 64
    rows = _rows(run / "da_results.csv")
    assert [(r["method"], r["norm"]) for r in rows] == [(m, "batch") for m in METHODS]
    assert [r["protocol"] for r in rows] == ["source", "online", "online", "offline", "online",
                                             "online", "online", "offline"]
    assert all(r[c] != "" for r in rows for c in ("contrast-5", "inverted", "mean"))
    assert {r["stream"] for r in rows} == {"reset"} and {r["batch_size"] for r in rows} == {"64"}
    md = (run / "da_results.md").read_text()
    assert "stream=reset, batch size 64" in md and "| method | norm | protocol |" in md
    assert (run / "da_results.png").stat().st_size > 10_000
    assert_figure(run / "da_results.png")
    assert not (run / "da_stream.png").exists()  # reset: one stream per target, no stream curve
    assert summary["results_table"]["stream_plot"] is None
    # the W&B run holds the table and the plot
    media = list((run / "wandb").glob("offline-run-*/files/media/**/*"))
    assert any(p.name.startswith("da_results") and p.suffix == ".json" for p in media), media
    assert any(p.suffix == ".png" for p in media), media
    ckpt = summary["best_checkpoint"]

    out = tmp_path / "pred"
    infer(out, "task=domain_adaptation", f"ckpt_path={ckpt}", "adapt=sar", "adapt.sar.lr=1e-3",
          f"target={_digit_folder(tmp_path / 'target')}", "batch_size=1")
    result = json.loads((out / "inference.json").read_text())
    assert result["adapt"] == "sar" and result["num_images"] == 24
    assert 0.0 <= result["accuracy"] <= 1.0
    assert len(_rows(out / "predictions.csv")) == 24
    # the one predictions.csv schema every classifier infer writes (platform.predict)
    assert list(_rows(out / "predictions.csv")[0]) == ["path", "prediction", "confidence", "label"]


def test_released_data_continual_stream_on_bn_and_gn_models(tmp_path):
    released = write_cifar_c(tmp_path / "CIFAR-10-C", corruptions=("fog", "contrast", "frost"), n=12)
    run = tmp_path / "run"
    summary = train(run, "task=domain_adaptation", "trainer=debug", "logger=csv",
                    "model.norm=[batch,group]", "adapt.method=[none,test_bn,prior_bn,tent,sar,dsbn]",
                    "adapt.tent.norms=[batch,group]", "adapt.dsbn.stage1_epochs=1",
                    "adapt.dsbn.stage2_epochs=0",
                    f"data.target.released_dir={released}", "data.target.corruption=[fog,contrast,frost]",
                    "data.target.n_examples=10", "data.target.stream=continual", "data.target.batch_size=2")
    assert summary["targets"] == ["fog-5", "contrast-5", "frost-5"]  # the stream order
    assert summary["stream"] == "continual" and summary["batch_size"] == 2
    rows = _rows(run / "da_results.csv")
    assert [(r["method"], r["norm"]) for r in rows] == [
        (m, n) for n in ("batch", "group") for m in ("none", "test_bn", "prior_bn", "tent", "sar", "dsbn")]
    gn = {r["method"]: r for r in rows if r["norm"] == "group"}
    assert gn["dsbn"]["mean"] == ""  # DSBN needs BN: n/a on the GN model
    assert gn["test_bn"]["mean"] == gn["none"]["mean"]  # no BN to re-normalize
    assert "n/a" in (run / "da_results.md").read_text()
    assert_figure(run / "da_results.png")
    assert_figure(run / "da_stream.png", min_height=400)  # error along the stream, one panel per norm
    assert summary["results_table"]["stream_plot"] == str(run / "da_stream.png")
    for n in ("batch", "group"):
        assert 0 <= summary["metrics"][f"target/sar/{n}/error"] <= 1
        assert (run / "checkpoints" / n).is_dir()
    # error cells are the released images' errors: 10 images each -> multiples of 0.1
    assert all(abs(float(r["fog-5"]) * 10 - round(float(r["fog-5"]) * 10)) < 1e-6 for r in rows if r["fog-5"])


def test_bad_option_fails_before_training(tmp_path):
    # One through the CLI (a deprecated alias, checked under its new name); the other checks
    # are unit-tested in test_da_methods.py::test_run_level_checks.
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path}", "task=domain_adaptation", "logger=none",
                   "adapt=tent", "adapt.mode=sometimes", check=False)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "adapt.tent.mode must be one of" in out and "adapt.mode is deprecated" in out
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_default_run(tmp_path):
    """`python train.py task=domain_adaptation` as a new user runs it (W&B offline)."""
    summary = train(tmp_path / "run", "task=domain_adaptation", timeout=1800)
    assert len(summary["targets"]) == 15
    assert summary["target_error"]["test_bn"] < summary["target_error"]["none"]
