"""A checkpoint that carries a malicious pickle must fail to load without running code."""
import os

import pytest
import torch

from normapps.platform.checkpoint import CheckpointError, load_module, safe_load
from tests.helpers import infer, run_cli


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_ckpt(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, path)
    return path, marker


def test_safe_load_refuses_and_runs_nothing(evil_ckpt):
    path, marker = evil_ckpt
    with pytest.raises(CheckpointError, match="weights_only"):
        safe_load(path)
    with pytest.raises(CheckpointError):
        load_module(path)
    assert not marker.exists()


def test_plain_checkpoint_without_metadata_is_named(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not written by a normapps task"):
        load_module(path)


def test_clis_refuse_the_malicious_checkpoint(evil_ckpt, tmp_path):
    path, marker = evil_ckpt
    proc = run_cli("train.py", "trainer=debug", "logger=none", f"ckpt_path={path}",
                   f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr
    proc = infer(tmp_path / "out", "task=classification", f"ckpt_path={path}",
                 f"input={tmp_path}", check=False)
    assert proc.returncode != 0
    assert not marker.exists()
