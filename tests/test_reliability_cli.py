"""Reliability through the real CLIs (issue 12): no lost work on SIGTERM or SIGKILL, exact
resume from last.ckpt in the run's own directory, no second run over a first, and a logger
failing at the end of a run costing nothing but a warning. (SIGINT, inference.json and the
pieces themselves: tests/test_reliability_units.py, in-process.)"""
import json
import signal
from pathlib import Path

import pytest
import torch

from normapps.platform.checkpoint import load_module
from tests.helpers import run_cli, train

# 6 steps inside one epoch (digits: 23 train batches), no validation or test on the way, so the
# runs differ only in where they were interrupted.
STEPS = 6
COMMON = ["task=classification", "trainer=debug", "logger=none", "model.width=4", "test=false",
          f"trainer.max_steps={STEPS}", "trainer.limit_train_batches=1.0"]
SIGNAL_AT = "+callbacks.signal_at._target_=tests.reliability_probes.SignalAt"


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=0, msg=name)


def _temp_files(tmpdir: Path) -> list[Path]:
    """Files left in $TMPDIR (torch's empty inductor cache folder aside)."""
    return [p for p in tmpdir.rglob("*") if p.is_file() and not p.relative_to(tmpdir).parts[0].startswith("torchinductor")]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run with nothing in its way (last.ckpt at step 6), logging to the
    default W&B logger (offline) made to fail at the end of the run."""
    run = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli("train.py", f"hydra.run.dir={run}", *COMMON, "logger=wandb",
                   "logger._target_=tests.reliability_probes.FailingWandbLogger")
    return run, proc


def test_sigterm_saves_last_ckpt_and_resume_in_the_run_dir_is_exact(uninterrupted, tmp_path):
    run, tmpdir = tmp_path / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = run_cli("train.py", f"hydra.run.dir={run}", *COMMON, SIGNAL_AT, "+callbacks.signal_at.step=3",
                   check=False, env={"TMPDIR": str(tmpdir)})
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert "SIGTERM" in proc.stderr and f"ckpt_path={last}" in proc.stderr
    assert _ckpt(last)["global_step"] == 3  # the step the signal arrived at, not the last validation
    assert not (run / "summary.json").exists() and not _temp_files(tmpdir)

    # A second run into the same directory is refused, naming it, and changes nothing there ...
    before = _snapshot(run)
    proc = run_cli("train.py", f"hydra.run.dir={run}", *COMMON, check=False)
    assert proc.returncode != 0
    assert f"hydra.run.dir={run} already holds a run" in proc.stderr
    assert _snapshot(run) == before
    # ... unless it resumes from a checkpoint in it: then it continues there, in last.ckpt.
    stale = run / "checkpoints" / ".last.ckpt.partial-999999"
    stale.write_bytes(b"half a checkpoint from a killed save")
    summary = train(run, *COMMON, f"ckpt_path={last}")
    assert summary["last_checkpoint"] == str(last) and not stale.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("last")) == ["last.ckpt"]
    resumed = _ckpt(last)
    assert resumed["global_step"] == STEPS
    _assert_same_weights(_ckpt(uninterrupted[0] / "checkpoints" / "last.ckpt"), resumed)


def test_kill_during_a_timed_save_loses_one_interval_and_leaves_no_temp(tmp_path):
    """last.ckpt is also written on a time interval (here: every step); a SIGKILL in the middle
    of a save leaves the previous last.ckpt intact, nothing in $TMPDIR, and a partial file next
    to it (which the next run in that directory removes)."""
    run, tmpdir = tmp_path / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = run_cli("train.py", f"hydra.run.dir={run}", *COMMON, "callbacks.last_checkpoint.every_minutes=1e-9",
                   SIGNAL_AT, "+callbacks.signal_at.step=3", f"+callbacks.signal_at.signum={int(signal.SIGKILL)}",
                   "+callbacks.signal_at.during_save=true", check=False, env={"TMPDIR": str(tmpdir)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert _ckpt(last)["global_step"] == 2  # the timed save of step 2; step 3's was cut short
    assert list((run / "checkpoints").glob(".last.ckpt.partial-*")) and not _temp_files(tmpdir)
    # (the resumed run removes such partials: see the SIGTERM test; resuming is exact there)
    assert load_module(last).checkpoint_info["task"] == "classification"


def test_a_logger_failing_at_the_end_only_warns_and_the_summary_is_written(uninterrupted):
    run, proc = uninterrupted
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "classification" and Path(summary["last_checkpoint"]).is_file()
    assert "simulated logger failure" in proc.stderr + proc.stdout
    assert list((run / "wandb").glob("offline-run-*"))
