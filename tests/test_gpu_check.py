"""scripts/gpu_check.sh: parses (default suite) and runs every step on the CPU (--dry-run, slow)."""
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_gpu_check_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_refuses_to_run_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and "--dry-run" in proc.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1"}, timeout=1500)
    summary = Path(out / "summary.md").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-3000:]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "task" not in line]
    assert len(rows) >= 10 and all("| ok |" in row for row in rows), summary
