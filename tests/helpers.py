"""Run the real CLIs (train.py / infer.py) in a subprocess, as a user would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_env(env: dict | None = None) -> dict:
    """The environment for running ``scripts/*.py``: they import the installed package (no
    sys.path edits), and a script's own folder, not the repo root, heads its sys.path; putting
    this checkout on PYTHONPATH makes that package the code under test also where the venv's
    editable install points at another checkout."""
    base = {**os.environ, **(env or {})}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return base


def run_cli(script: str, *overrides: str, timeout: int = 600, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the repo root; raise with its output on failure."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_SILENT": "true",
                "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def train(run_dir: Path, *overrides: str, **kw) -> dict:
    """A short training run through train.py; returns its summary.json."""
    run_cli("train.py", f"hydra.run.dir={run_dir}", *overrides, **kw)
    return json.loads((Path(run_dir) / "summary.json").read_text())


def infer(output_dir: Path, *overrides: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("infer.py", f"output_dir={output_dir}", *overrides, **kw)


def assert_figure(path: Path, *, min_width: int = 300, min_height: int = 200) -> None:
    """``path`` is a PNG that decodes, of at least the given size, with a drawing on it: not
    one flat colour, enough non-background pixels and colours to hold axes, text and data."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    assert path.is_file(), f"no figure at {path}"
    with Image.open(path) as img:
        assert img.format == "PNG", (path, img.format)
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
        rgb = np.asarray(img.convert("RGB"))
    assert width >= min_width and height >= min_height, (path, img.size)
    background = np.median(rgb.reshape(-1, 3), axis=0)
    drawn = np.abs(rgb.astype(int) - background).sum(axis=2) > 30
    assert drawn.mean() > 0.01, f"{path}: only {drawn.mean():.2%} of the pixels are drawn"
    colours = len(np.unique(rgb.reshape(-1, 3)[::7], axis=0))
    assert colours > 20, f"{path}: {colours} colours, a figure has lines, text and antialiasing"
