"""The platform through the real CLIs: summary.json, inference, exact resume, DDP, W&B."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from normapps.data.bundled import load_digits_tensors
from tests.helpers import infer, run_cli, train

FAST = ["task=classification", "trainer=debug", "logger=csv", "model.width=8"]


def _digits_folder(root: Path, n: int = 40) -> Path:
    images, labels = load_digits_tensors()
    for i in range(n):
        d = root / str(int(labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[i, 0].numpy() * 255).astype(np.uint8)).save(d / f"{i}.png")
    (root / "3" / "broken.png").write_bytes(b"not an image")
    return root


def test_train_then_infer_classification(tmp_path):
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'run'}", *FAST)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # the run's last line says where its outputs are, naming what is there
    last = [line for line in (proc.stdout + proc.stderr).splitlines() if "outputs of this run in" in line]
    assert last and str(tmp_path / "run") in last[-1] and "summary.json" in last[-1], proc.stdout[-2000:]
    assert summary["task"] == "classification"
    for key in ("test/acc", "test/loss", "val/acc", "train/loss"):
        assert key in summary["metrics"]
    assert Path(summary["best_checkpoint"]).is_file() and Path(summary["last_checkpoint"]).is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "csv" / "metrics.csv").read_text().count("\n") > 1
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    assert ckpt["normapps"]["task"] == "classification"

    folder = _digits_folder(tmp_path / "digits")
    proc = infer(tmp_path / "pred", "task=classification", f"ckpt_path={summary['best_checkpoint']}",
                 f"input={folder}")
    assert "broken.png" in proc.stdout + proc.stderr  # skipped with a warning naming it
    result = json.loads((tmp_path / "pred" / "inference.json").read_text())
    assert result["num_images"] == 40 and 0.0 <= result["accuracy"] <= 1.0
    rows = (tmp_path / "pred" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 41 and rows[0].startswith("path,prediction")


def test_resume_gives_the_same_weights(tmp_path):
    """4 steps in one go == 2 steps, die, resume for 2 (same config, so same LR schedule)."""
    common = ["task=classification", "trainer=debug", "logger=none", "model.width=8", "test=false",
              "trainer.max_steps=4", "trainer.limit_train_batches=1.0", "+trainer.val_check_interval=2",
              "callbacks.model_checkpoint.save_top_k=-1", "callbacks.model_checkpoint.filename='s{step}'"]
    train(tmp_path / "full", *common)
    resumed = train(tmp_path / "resumed", *common, f"ckpt_path={tmp_path / 'full/checkpoints/s2.ckpt'}")
    full = torch.load(tmp_path / "full/checkpoints/s4.ckpt", weights_only=True)
    again = torch.load(resumed["last_checkpoint"], weights_only=True)
    assert again["global_step"] == 4
    for name, value in full["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    early = torch.load(tmp_path / "full/checkpoints/s2.ckpt", weights_only=True)
    assert any(not torch.equal(early["state_dict"][k], v) for k, v in full["state_dict"].items())


@pytest.mark.slow  # ~30 s; the default suite runs DDP through train.py in test_gan_cli
def test_ddp_two_cpu_processes(tmp_path):
    summary = train(tmp_path / "ddp", "task=classification", "logger=none", "model.width=8",
                    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    "trainer.strategy=ddp_spawn", "trainer.max_steps=2",
                    "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                    "+trainer.limit_test_batches=1", "+trainer.num_sanity_val_steps=0",
                    "trainer.sync_batchnorm=true")
    assert "test/acc" in summary["metrics"]
    assert Path(summary["last_checkpoint"]).is_file()


def test_wandb_offline_multirun_gets_one_run_per_job(tmp_path):
    run_cli("train.py", "-m", *FAST[:-2], "logger=wandb", "model.width=8", "model.norm=batch,group",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", "test=false")
    runs = sorted((tmp_path / "sweep").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2, runs
    assert len({r.name.split("-")[-1] for r in runs}) == 2  # two distinct W&B run ids
    for run in runs:
        assert any(run.glob("*.wandb")), f"no W&B data in {run}"
    for job in (tmp_path / "sweep").glob("[0-9]*"):
        assert json.loads((job / "summary.json").read_text())["task"] == "classification"
