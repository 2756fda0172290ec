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


# --- issue 12 item 1: the checkpoint never chooses what gets imported ------------------------
def _with_meta(src, path, meta):
    ckpt = torch.load(src, weights_only=True)
    ckpt["normapps"] = meta
    torch.save(ckpt, path)
    return path


@pytest.fixture
def import_marker(tmp_path, monkeypatch):
    """A module on sys.path whose import leaves a marker file (what `this` or `venv.__main__`
    would do for real: print the Zen of Python, create virtualenvs and run pip)."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "normapps_hostile_probe.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass X:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("normapps_hostile_probe", None)


# ("venv.__main__.X" is the probe that created virtualenvs; not imported here even before the
# fix, since it would act on pytest's own command line.)
@pytest.mark.parametrize("module_class", ["normapps_hostile_probe.X", "this.X",
                                          "normapps.platform.runner.run_train"])
def test_module_class_named_by_the_file_is_never_imported(tiny_checkpoints, tmp_path, import_marker,
                                                          module_class):
    import sys

    before = set(sys.modules)
    path = _with_meta(tiny_checkpoints["classification"], tmp_path / "hostile.ckpt",
                      {"module_class": module_class, "task": "classification"})
    with pytest.raises(CheckpointError, match=str(path)) as err:
        load_module(path, expected_task="classification")
    assert "not one of this project's module classes" in str(err.value)
    assert not import_marker.exists()
    assert not {"normapps_hostile_probe", "this"} & (set(sys.modules) - before)


@pytest.mark.parametrize("meta, message", [
    ({"module_class": "normapps.tasks.classification.module.ClassificationModule"}, "names no task"),
    ({"module_class": "normapps.tasks.classification.module.ClassificationModule", "task": "bogus"},
     "unknown task 'bogus'"),
    ({"module": "bogus_network", "task": "classification"}, "unknown module 'bogus_network'"),
    ({"module_class": "normapps.tasks.gan.module.GANModule", "task": "classification"},
     "does not write"),
])
def test_checkpoint_with_no_or_unknown_task_is_refused_naming_the_file(tiny_checkpoints, tmp_path,
                                                                       meta, message):
    path = _with_meta(tiny_checkpoints["classification"], tmp_path / "odd.ckpt", meta)
    with pytest.raises(CheckpointError, match=message) as err:
        load_module(path)
    assert str(path) in str(err.value)


def test_old_checkpoints_naming_an_allowed_class_still_load(tiny_checkpoints, tmp_path):
    """Checkpoints written before the registry carry only module_class + task (+ rng)."""
    new = load_module(tiny_checkpoints["classification"])
    old_meta = {"module_class": "normapps.tasks.classification.module.ClassificationModule",
                "task": "classification"}
    old = load_module(_with_meta(tiny_checkpoints["classification"], tmp_path / "old.ckpt", old_meta),
                      expected_task="classification")
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(old(x), new(x), rtol=0, atol=0)


def test_new_checkpoints_name_their_registry_entry_and_network(tiny_checkpoints):
    from normapps.platform.registry import MODULES

    for task, path in tiny_checkpoints.items():
        if task == "quantization":
            continue
        meta = torch.load(path, weights_only=True)["normapps"]
        entry = MODULES[meta["module"]]
        assert entry.task == meta["task"] == task
        assert meta["network"] == entry.network
        assert type(load_module(path, expected_task=task)).__name__ == entry.target.rsplit(".", 1)[1]


def test_every_registry_entry_is_a_normapps_module_of_its_task():
    from normapps.platform.module import NormappsModule
    from normapps.platform.registry import MODULES, module_class

    for name, entry in MODULES.items():
        cls = module_class(name)
        assert issubclass(cls, NormappsModule) and cls.task_name == entry.task, name


# --- issue 12 item 7: empty, truncated, directory: name the file and the problem -------------
def test_empty_truncated_and_directory_checkpoints_are_named(tiny_checkpoints, tmp_path):
    from tests.tiny_checkpoints import empty_file, truncated_copy

    cases = {
        empty_file(tmp_path / "empty.ckpt"): r"is empty \(0 bytes\)",
        truncated_copy(tiny_checkpoints["classification"], tmp_path / "half.ckpt"): "truncated or corrupted",
        tmp_path: "is a directory",
    }
    (tmp_path / "junk.ckpt").write_bytes(b"\x00\x01not a checkpoint at all" * 10)
    cases[tmp_path / "junk.ckpt"] = "truncated or corrupted"
    for path, message in cases.items():
        for load in (safe_load, load_module):
            with pytest.raises(CheckpointError, match=message) as err:
                load(path)
            assert str(path) in str(err.value)


# --- issue 12 item 8: corrupted bytes that still load ------------------------------------------
def test_corrupted_weights_are_refused_naming_the_tensor(tiny_checkpoints, tmp_path):
    from tests.tiny_checkpoints import corrupted_copy

    bad = corrupted_copy(tiny_checkpoints["classification"], tmp_path / "flipped.ckpt")
    raw = torch.load(bad, weights_only=True)  # still a loadable file ...
    assert any(not torch.isfinite(t).all() for t in raw["state_dict"].values() if t.is_floating_point())
    with pytest.raises(CheckpointError, match=r"tensor 'state_dict\.[\w.]+' holds \d+ NaN/inf") as err:
        load_module(bad)
    assert str(bad) in str(err.value)
    # A flat state dict (the public pytorch-AdaIN weights, Inception weights) is checked too.
    flat = tmp_path / "flat.pth"
    torch.save({"conv.weight": torch.tensor([1.0, float("inf")])}, flat)
    with pytest.raises(CheckpointError, match="tensor 'conv.weight' holds 1 NaN/inf"):
        safe_load(flat)


def test_loop_state_infinities_are_not_weights(tmp_path):
    """Lightning's loop state holds -inf accumulators and callback scores: only weights count."""
    path = tmp_path / "loops.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {"max": torch.tensor(float("-inf"))},
                "callbacks": {"kth_value": torch.tensor(float("inf"))}}, path)
    assert safe_load(path)["loops"]["max"] == float("-inf")
