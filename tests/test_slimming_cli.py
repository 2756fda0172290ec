"""End to end: train.py task=slimming through all four stages, then infer.py on the pruned
checkpoint alone."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, infer, train

TINY = ("task=slimming", "trainer=debug", "logger=csv", "model.width_mult=0.125",
        "data.image_size=16", "slimming.latency_batch_sizes=[1,4]", "slimming.latency_rounds=1",
        "slimming.latency_repeats=1", "slimming.recalibrate_batches=2")


def _digit_folder(root, n_per_class=3):
    from normapps.data.bundled import load_digits_tensors

    images, labels = load_digits_tensors()
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        for i, idx in enumerate((labels == c).nonzero().flatten()[:n_per_class].tolist()):
            arr = (images[idx, 0].numpy() * 255).astype(np.uint8)
            Image.fromarray(arr).resize((16, 16)).save(root / str(c) / f"{i}.png")
    (root / "0" / "broken.png").write_bytes(b"not a png")
    return root


def test_train_then_infer_pruned_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # The default W&B logger (offline): the stage table and the figure reach its run.
    summary = train(run_dir, *[o for o in TINY if o != "logger=csv"])
    stages = [r["stage"] for r in summary["stages"]]
    assert stages == ["trained", "sparsified", "pruned", "finetuned"]
    rows = {r["stage"]: r for r in summary["stages"]}
    assert rows["pruned"]["params"] < rows["trained"]["params"]
    assert rows["pruned"]["flops"] < rows["trained"]["flops"]
    assert rows["finetuned"]["params"] == rows["pruned"]["params"]
    for r in rows.values():
        assert r["latency_ms_bs1"] > 0 and r["latency_ms_bs4"] > 0 and 0 <= r["test_acc"] <= 1
    assert summary["metrics"]["pruning/mask_max_abs_diff"] < 1e-4
    assert 0 <= summary["metrics"]["pruned/test_acc_before_recalibration"] <= 1
    assert summary["pruning"]["pruned_fraction"] == pytest.approx(0.5, abs=0.05)
    assert (run_dir / "slimming.md").read_text().startswith("| stage |")
    assert (run_dir / "slimming.csv").is_file()
    assert rows["trained"]["channels_kept"] == 1.0
    assert rows["pruned"]["channels_kept"] == pytest.approx(1 - summary["pruning"]["pruned_fraction"], abs=1e-6)
    assert summary["figure"] == str(run_dir / "slimming.png") and (run_dir / "slimming.png").stat().st_size > 10_000
    media = list((run_dir / "wandb").glob("offline-run-*/files/media/**/*"))
    assert any(p.suffix == ".png" for p in media) and any(p.suffix == ".json" for p in media), media
    ckpt = summary["best_checkpoint"]
    assert "checkpoints/finetuned" in ckpt

    folder = _digit_folder(tmp_path / "digits")
    out = tmp_path / "infer"
    infer(out, "task=slimming", f"ckpt_path={ckpt}", f"input={folder}", "batch_size=7")
    result = json.loads((out / "inference.json").read_text())
    assert result["num_images"] == 30 and 0.0 <= result["accuracy"] <= 1.0
    assert result["params"] == rows["finetuned"]["params"]
    assert result["bn_widths"] == summary["pruning"]["widths_after"]
    assert result["image_size"] == 16
    with open(out / "predictions.csv") as fh:
        reader = csv.DictReader(fh)
        assert len(list(reader)) == 30
        assert reader.fieldnames == ["path", "prediction", "confidence", "label"]  # the one schema


@pytest.mark.parametrize("key,value", [("ratio", 1.5), ("s", -1.0), ("min_channels", 0)])
def test_bad_options_are_named(key, value):
    from omegaconf import OmegaConf

    from normapps.tasks.slimming.runner import validate_options

    cfg = OmegaConf.load(ROOT / "conf" / "task" / "train" / "slimming.yaml").slimming
    validate_options(cfg)
    cfg[key] = value
    with pytest.raises(ValueError, match=f"slimming.{key}"):
        validate_options(cfg)


@pytest.mark.slow
def test_resnet_train_then_infer(tmp_path):
    summary = train(tmp_path / "run", *TINY, "model.arch=cifar_resnet", "model.width=8", "model.depth=8",
                    "slimming.s=1e-5")
    rows = {r["stage"]: r for r in summary["stages"]}
    assert rows["pruned"]["params"] < rows["trained"]["params"]
    folder = _digit_folder(tmp_path / "digits", n_per_class=1)
    infer(tmp_path / "infer", "task=slimming", f"ckpt_path={summary['best_checkpoint']}",
          f"input={folder}")
    result = json.loads((tmp_path / "infer" / "inference.json").read_text())
    assert result["params"] == rows["finetuned"]["params"]
