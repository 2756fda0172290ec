"""A resumed CSV-logged run keeps the first part's metrics (Lightning's CSVLogger deletes the
metrics.csv it finds), and scripts/training_curves.py plots both parts and the logged grids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from normapps.platform.logging import build_loggers

ROOT = Path(__file__).resolve().parents[1]


def _log(run: Path, steps: range) -> None:
    cfg = OmegaConf.create({"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(run),
                            "name": "csv", "version": ""})
    (logger,) = build_loggers(cfg)
    for step in steps:
        logger.log_metrics({"train/loss": 10.0 / (step + 1)}, step=step)
    logger.log_metrics({"val/loss": 1.0 / (steps[-1] + 1)}, step=steps[-1])
    logger.save()


def test_resumed_csv_run_keeps_both_parts_and_plots_them(tmp_path):
    run = tmp_path / "run"
    _log(run, range(0, 20))
    _log(run, range(20, 40))  # the resumed part: same folder, as with ckpt_path=<run>/.../last.ckpt
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["metrics.1.csv", "metrics.csv"]

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from training_curves import read_metrics
    finally:
        sys.path.pop(0)
    steps, values = read_metrics(run)["train/loss"]
    assert list(steps) == list(range(40)) and np.allclose(values, 10.0 / (steps + 1))

    (run / "images").mkdir()
    for step in (0, 20):
        Image.new("RGB", (96, 128), (step * 10, 80, 160)).save(run / "images" / f"val_samples_step{step:07d}.png")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "training_curves.py"), str(run),
                    "--out", str(tmp_path / "fig"), "--grid-steps", "0", "20"], check=True)
    for name in ("fig_curves.png", "fig_grids.png"):
        img = np.asarray(Image.open(tmp_path / name).convert("L"), dtype=np.float32)
        assert img.std() > 5, name  # drawn, not blank
