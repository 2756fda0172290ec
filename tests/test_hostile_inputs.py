"""Every option of every task's infer.py and train.py, probed as a careless or hostile user would
(issue 12): out-of-range (-1), wrong type (abc), NaN and empty values, and every file-taking
option with a missing, empty, truncated or hostile file, a directory and another task's
checkpoint. Each must be refused before any expensive work with a message that names the option
or the file, or work.

The options are read from the config files, so a new option is probed without touching this
file. Each task's config is composed once; a probe applies one override with Hydra's own parser
and runs the real engine (run_infer / run_train) in-process, with the expensive stage replaced by
a tripwire: reaching it with a bad value fails the probe. tests/test_reliability_cli.py, test_checkpoint_safety.py
and the CLI probe at the end show the same errors reach a user through train.py / infer.py.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from normapps.data.image_io import ImageReadError
from normapps.platform.checkpoint import CheckpointError
from tests.helpers import ROOT, run_cli
from tests.hydra_configs import compose_infer, compose_train
from tests import tiny_checkpoints as tiny

PARSER = OverridesParser.create()
BAD = {"out_of_range": "-1", "wrong_type": "abc", "nan": "nan", "empty": ""}
# What a refusal may be: the errors this project raises for bad input (never a bare TypeError,
# IndexError or a torch RuntimeError from deep inside).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, ImageReadError)


# Open findings of this suite: (task, key) -> probe kinds, each a strict xfail (so it turns into
# a failure, to be deleted here, the day it is fixed) with its owner's note in OPEN_OWNERS.
# None are open today.
OPEN_OWNERS: dict[str, str] = {}
ALL = set(BAD)
OPEN_TRAIN: dict[tuple[str, str], set[str]] = {}
OPEN_INFER: dict[tuple[str, str], set[str]] = {}


def _marks(task: str, key: str, kind: str, table: dict) -> list:
    if kind in table.get((task, key), ()):
        return [pytest.mark.xfail(strict=True, reason=f"open, owned by {OPEN_OWNERS[task]}")]
    return []


_KINDS = list(BAD)


def in_default_suite(i: int, kind: str, *, per_key: int) -> bool:
    """Probe ``i`` of a key-major list (all kinds of key 0, then of key 1, ...): whether it is
    one of the ``per_key`` kinds, rotating with the key, the default suite runs."""
    key_index = i // len(_KINDS)
    return (_KINDS.index(kind) - key_index) % len(_KINDS) < per_key


class ReachedWork(Exception):
    """The tripwire: the expensive stage was reached."""


def _tripwire(*args, **kwargs):
    raise ReachedWork


def override(cfg: DictConfig, key: str, text: str) -> DictConfig:
    """``cfg`` with ``key=text`` applied as the command line would (Hydra's value parser)."""
    value = PARSER.parse_override(f"{key}={text}").value()
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def leaves(node, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += leaves(value, f"{name}.")
        else:
            out.append(name)
    return out


def assert_refused(err: BaseException, key: str, value: str) -> None:
    assert not isinstance(err, ReachedWork), f"{key}={value!r} reached the expensive stage unchecked"
    assert isinstance(err, USER_ERRORS), f"{key}={value!r}: {type(err).__name__}: {err}"
    message = str(err)
    named = key in message or (value.strip() != "" and value in message)
    assert named, f"{key}={value!r}: the message names neither the option nor the value: {message}"


# =============================================================================== infer.py
INFER_CONF = ROOT / "conf" / "task" / "infer"
INFER_TASKS = sorted(p.stem for p in INFER_CONF.glob("*.yaml"))
COMMON_INFER_OPTIONS = ["seed", "device", "output_dir"]


def infer_options(task: str) -> list[str]:
    declared = OmegaConf.to_container(OmegaConf.load(INFER_CONF / f"{task}.yaml"))
    return [k for k in leaves(declared) if k.split(".")[0] not in ("task", "defaults")]


# The stage after validation (and the checkpoint load), per task.
INFER_WORK = {
    "classification": "normapps.tasks.classification.infer.classify_folder",
    "slimming": "normapps.tasks.slimming.infer.classify_folder",
    "quantization": "normapps.tasks.quantization.artifact.load_quantized",
    "domain_adaptation": "normapps.tasks.domain_adaptation.infer.adapt_and_predict",
    "gan": "normapps.tasks.gan.module.GANModule.sample",
    "style_transfer": "normapps.tasks.style_transfer.infer.Stylizer",
}
# Probes a value may pass: it is either refused as above or legitimately accepted (the run
# goes on to its work), by value kind.
INFER_WORKS = {
    # Only read by adapt=dsbn (the probes adapt with the default, tent); "-1" is a name or path.
    ("domain_adaptation", "source.dataset"): set(BAD), ("domain_adaptation", "source.root"): set(BAD),
    # Options of method=cin / arbitrary_cin, checked by that path when used; the probes run adain.
    ("style_transfer", "style_index"): set(BAD), ("style_transfer", "predict_size"): set(BAD),
    # -1, abc, nan are folder names (created under the working directory).
    ("classification", "output_dir"): {"out_of_range", "wrong_type", "nan"},
}


@pytest.fixture(scope="module")
def files(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile_files")
    content = tiny.image(root / "content.png", 24)
    return {**tiny_checkpoints, "folder": tiny.image_folder(root / "folder"), "content": content,
            "style": tiny.image(root / "style.png", 24, seed=1), "mask": tiny.image(root / "mask.png", 24, seed=2),
            "dot": tiny.image(root / "dot.png", 1, seed=3), "root": root}


@pytest.fixture(scope="module")
def infer_bases(files) -> dict[str, DictConfig]:
    """A valid infer.py config per task, composed once."""
    ck = files
    args = {
        "classification": [f"ckpt_path={ck['classification']}", f"input={ck['folder']}"],
        "slimming": [f"ckpt_path={ck['slimming']}", f"input={ck['folder']}"],
        "quantization": [f"ckpt_path={ck['quantization']}", f"input={ck['folder']}"],
        "domain_adaptation": [f"ckpt_path={ck['classification']}", f"target={ck['folder']}", "image_size=16"],
        "gan": [f"ckpt_path={ck['gan']}", "num_samples=4"],
        "style_transfer": [f"ckpt_path={ck['style_transfer']}", f"content={ck['content']}",
                           f"style={ck['style']}", "content_size=32", "style_size=32"],
    }
    return {t: compose_infer([f"task={t}", *args[t]]) for t in INFER_TASKS}


def probe_infer(cfg: DictConfig, task: str, monkeypatch, output_dir: Path) -> BaseException | None:
    from normapps.platform.inference import run_infer

    if cfg.get("output_dir") == "outputs/infer":  # the default: keep probes in tmp
        cfg = override(cfg, "output_dir", str(output_dir))
    monkeypatch.setattr(INFER_WORK[task], _tripwire)
    try:
        run_infer(cfg)
    except BaseException as err:  # noqa: BLE001 - the probe reports what happened
        return err
    return None


INFER_PROBES = [(t, k, kind) for t in INFER_TASKS for k in infer_options(t) for kind in BAD]
INFER_PROBES += [("classification", k, kind) for k in COMMON_INFER_OPTIONS for kind in BAD]


# By default two of the four kinds per infer option, in rotation; all four with -m slow.
@pytest.mark.parametrize("task,key,kind", [
    pytest.param(t, k, v, id=f"{t}-{k}-{v}", marks=_marks(t, k, v, OPEN_INFER)
                 + ([] if in_default_suite(i, v, per_key=2) else [pytest.mark.slow]))
    for i, (t, k, v) in enumerate(INFER_PROBES)])
def test_infer_option(task, key, kind, infer_bases, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths a probe creates land in tmp
    cfg = override(infer_bases[task], key, BAD[kind])
    err = probe_infer(cfg, task, monkeypatch, tmp_path)
    if kind in INFER_WORKS.get((task, key), ()) and (err is None or isinstance(err, ReachedWork)):
        return
    assert err is not None, f"{key}={BAD[kind]!r} was accepted and the run finished"
    assert_refused(err, key, BAD[kind])


def test_infer_probes_cover_every_declared_option():
    for task in INFER_TASKS:
        assert infer_options(task), task
        assert {k for t, k, _ in INFER_PROBES if t == task} == set(infer_options(task)) | (
            set(COMMON_INFER_OPTIONS) if task == "classification" else set())


# --- item 9's cases, by value ------------------------------------------------------------------
ITEM9_INFER = [
    ("style_transfer", "style_weights", "[nan,1]"),
    ("style_transfer", "style_weights", "[inf,1]"),
    ("style_transfer", "style_weights", "[1,-1]"),
    ("style_transfer", "content_size", "4"),
    ("style_transfer", "tile_size", "30"),
    ("gan", "grid_nrow", "0"),
    ("gan", "interpolate_rows", "0"),
    ("gan", "batch_size", "0"),
    ("gan", "num_samples", "1.5"),
    ("classification", "batch_size", "0"),
    ("slimming", "image_size", "0"),
    ("domain_adaptation", "batch_size", "0"),
]


@pytest.mark.parametrize("task,key,value", ITEM9_INFER, ids=[f"{t}-{k}={v}" for t, k, v in ITEM9_INFER])
def test_infer_value_refused_before_work(task, key, value, infer_bases, monkeypatch, tmp_path):
    style = {"style": f"[{infer_bases['style_transfer'].style},{infer_bases['style_transfer'].style}]"}
    cfg = infer_bases[task]
    if key == "style_weights":
        cfg = override(cfg, "style", style["style"])
    err = probe_infer(override(cfg, key, value), task, monkeypatch, tmp_path)
    assert err is not None
    assert_refused(err, key, value)


def test_tiny_content_at_its_original_size_is_refused_naming_it(infer_bases, files, monkeypatch, tmp_path):
    cfg = override(override(infer_bases["style_transfer"], "content", str(files["dot"])), "content_size", "0")
    err = probe_infer(cfg, "style_transfer", monkeypatch, tmp_path)
    assert_refused(err, "content", str(files["dot"]))
    assert "content_size" in str(err)


def test_an_output_dir_that_cannot_be_written_fails_before_the_model_loads(infer_bases, files, monkeypatch,
                                                                          tmp_path):
    import normapps.platform.checkpoint as ck

    monkeypatch.setattr(ck, "load_module", _tripwire)
    for bad in (files["content"] / "sub", files["content"], "/proc/normapps_cannot_write_here"):
        cfg = override(infer_bases["style_transfer"], "output_dir", str(bad))
        err = probe_infer(cfg, "style_transfer", monkeypatch, tmp_path)
        assert_refused(err, "output_dir", str(bad))


# --- files -------------------------------------------------------------------------------------
def _damaged(kind: str, root: Path, files: dict, like: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return root / "no_such_file.ckpt"
    if kind == "empty":
        return tiny.empty_file(root / "empty.ckpt")
    if kind == "truncated":
        return tiny.truncated_copy(files[like], root / "truncated.ckpt")
    if kind == "directory":
        return root
    if kind == "hostile_pickle":
        return tiny.hostile_pickle(root / "hostile.ckpt", root / "pwned")
    raise ValueError(kind)


FILE_KINDS = ("missing", "empty", "truncated", "directory", "hostile_pickle")
# Another task's checkpoint, per task (quantization's int8 file is not a Lightning checkpoint).
OTHER_TASK = {"classification": "gan", "slimming": "classification", "quantization": "classification",
              "domain_adaptation": "style_transfer", "gan": "classification", "style_transfer": "gan"}
CKPT_OF = {"domain_adaptation": "classification"}


@pytest.mark.parametrize("task", INFER_TASKS)
@pytest.mark.parametrize("kind", [*FILE_KINDS, "other_task"])
def test_infer_ckpt_path(task, kind, infer_bases, files, monkeypatch, tmp_path):
    if kind == "other_task":
        path = files[OTHER_TASK[task]]
    else:
        path = _damaged(kind, tmp_path / "ckpt", files, CKPT_OF.get(task, task))
    err = probe_infer(override(infer_bases[task], "ckpt_path", str(path)), task, monkeypatch, tmp_path / "out")
    assert_refused(err, "ckpt_path", str(path))
    assert not (tmp_path / "ckpt" / "pwned").exists()


IMAGE_OPTIONS = [("classification", "input"), ("slimming", "input"), ("quantization", "input"),
                 ("domain_adaptation", "target"), ("style_transfer", "content"),
                 ("style_transfer", "style"), ("style_transfer", "mask")]


@pytest.mark.parametrize("task,key", IMAGE_OPTIONS)
@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not_an_image", "empty_directory"])
def test_infer_image_input(task, key, kind, infer_bases, files, monkeypatch, tmp_path):
    if kind == "missing":
        path = tmp_path / "no_such.png"
    elif kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "truncated":
        data = files["content"].read_bytes()
        path = tmp_path / "truncated.png"
        path.write_bytes(data[: len(data) // 3])
    elif kind == "not_an_image":
        path = tmp_path / "weights.png"
        path.write_bytes(files["classification"].read_bytes())
    else:
        path = tmp_path / "empty_folder"
        path.mkdir()
    cfg = infer_bases[task]
    if key == "mask":
        cfg = override(cfg, "style", f"[{cfg.style},{cfg.style}]")
    err = probe_infer(override(cfg, key, str(path)), task, monkeypatch, tmp_path / "out")
    assert_refused(err, key, str(path))


@pytest.fixture(scope="module")
def public_weights(tmp_path_factory) -> dict[str, Path]:
    """Files in the public pytorch-AdaIN layout (random weights)."""
    from tests.test_style_model import public_decoder, public_vgg

    root = tmp_path_factory.mktemp("public")
    out = {"encoder_weights": root / "vgg_normalised.pth", "decoder_weights": root / "decoder.pth"}
    torch.save(public_vgg().state_dict(), out["encoder_weights"])
    torch.save(public_decoder().state_dict(), out["decoder_weights"])
    return out


@pytest.mark.parametrize("key", ["encoder_weights", "decoder_weights"])
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_style_public_weights(key, kind, infer_bases, files, public_weights, monkeypatch, tmp_path):
    cfg = override(infer_bases["style_transfer"], "ckpt_path", "null")
    for name, path in public_weights.items():
        cfg = override(cfg, name, str(path))
    path = _damaged(kind, tmp_path / "w", files, "style_transfer")
    monkeypatch.setattr("normapps.tasks.style_transfer.infer.Stylizer", _tripwire)
    err = probe_infer(override(cfg, key, str(path)), "style_transfer", monkeypatch, tmp_path / "out")
    assert_refused(err, key, str(path))


# =============================================================================== train.py
TRAIN_TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
# Probes a value may pass (refused is fine too), by key: -1 means "no limit" / "all" here, and
# text is a path or a name.
TRAIN_WORKS = {
    "trainer.max_steps": {"out_of_range"}, "trainer.max_epochs": {"out_of_range"},
    "trainer.num_sanity_val_steps": {"out_of_range"}, "trainer.devices": {"out_of_range"},
    # Folder names (-1, abc, nan are paths); data.root is unused by the bundled digits.
    "trainer.default_root_dir": {"out_of_range", "wrong_type", "nan"},
    "data.root": {"out_of_range", "wrong_type", "nan"},
    # Cache folders, created on first use.
    "gan.metrics.local_cache": {"out_of_range", "wrong_type", "nan"},
    "metrics.local_cache": {"out_of_range", "wrong_type", "nan"},  # its deprecated name
    "model.local_feature_cache": {"out_of_range", "wrong_type", "nan"},
    "gan.fid_stats_cache": {"out_of_range", "wrong_type", "nan"},
    "model.fid_stats_cache": {"out_of_range", "wrong_type", "nan"},
    # The input prior's mean may be any finite number.
    "quant.zeroq.prior_mean": {"out_of_range"},
}
# Task-level keys each task declares (conf/task/train/<task>.yaml), besides its data/model/trainer.
TASK_KEY_SKIP = {"defaults", "task", "data", "model", "trainer", "test"}


def task_keys(task: str) -> list[str]:
    declared = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "train" / f"{task}.yaml"))
    keys = [k for k in leaves(declared) if k.split(".")[0] not in TASK_KEY_SKIP]
    if task == "domain_adaptation":  # its target block lives under data.target
        keys += [k for k in leaves(declared) if k.startswith("data.target.")]
    return keys


@pytest.fixture(scope="module")
def train_bases(tmp_path_factory) -> dict[str, DictConfig]:
    root = tmp_path_factory.mktemp("hostile_train")
    return {t: compose_train([f"task={t}", "trainer=debug", "logger=none"], root / t) for t in TRAIN_TASKS}


def probe_train(cfg: DictConfig, monkeypatch) -> BaseException | None:
    """run_train with the run's creation as the tripwire: train.py checks every option before
    it creates the run (loggers, config.yaml, data, model)."""
    from normapps.platform.context import RunContext
    from normapps.platform.runner import run_train

    monkeypatch.setattr(RunContext, "create", _tripwire)
    try:
        run_train(cfg)
    except BaseException as err:  # noqa: BLE001
        return err
    return None


def train_option_keys(cfg: DictConfig, task: str) -> list[str]:
    keys = [f"model.{k}" for k in leaves(OmegaConf.to_container(cfg.model)) if k != "_target_"]
    keys += [f"data.{k}" for k in leaves(OmegaConf.to_container(cfg.data))
             if k != "_target_" and not k.startswith("target.")]
    if task == "classification":  # trainer, callbacks and run options are the same for every task
        keys += [f"trainer.{k}" for k in leaves(OmegaConf.to_container(cfg.trainer)) if k != "_target_"]
        keys += ["callbacks.last_checkpoint.every_minutes", "callbacks.last_checkpoint.on_signal",
                 "seed", "ckpt_path", "test", "test_ckpt"]
    keys += task_keys(task)
    return list(dict.fromkeys(keys))


def _compose_unresolved(task: str) -> DictConfig:
    from tests.hydra_configs import compose_train as _ct

    return _ct([f"task={task}", "trainer=debug", "logger=none"], Path("/nonexistent_probe_dir"))


TRAIN_PROBES = [(t, k, kind) for t in TRAIN_TASKS for k in train_option_keys(_compose_unresolved(t), t)
                for kind in BAD]
# The default suite probes each train key with one of the four kinds, in rotation (each kind
# probes a quarter of the keys; the checks are the same code for every key of a class);
# `make test-slow` probes all four.
def _train_param(i: int, t: str, k: str, v: str):
    marks = _marks(t, k, v, OPEN_TRAIN) + ([] if in_default_suite(i, v, per_key=1) else [pytest.mark.slow])
    return pytest.param(t, k, v, id=f"{t}-{k}-{v}", marks=marks)


@pytest.mark.parametrize("task,key,kind", [_train_param(i, *p) for i, p in enumerate(TRAIN_PROBES)])
def test_train_option(task, key, kind, train_bases, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths a probe creates land in tmp
    value = BAD[kind]
    err = probe_train(override(train_bases[task], key, value), monkeypatch)
    if kind in TRAIN_WORKS.get(key, ()) and (err is None or isinstance(err, ReachedWork)):
        return
    assert err is not None, f"{key}={value!r} was accepted and the run finished"
    assert_refused(err, key.split(".")[-1], value)


def test_a_swept_key_takes_a_list_each_value_checked(train_bases, monkeypatch):
    """domain adaptation trains one source model per model.norm value (task.sweeps)."""
    err = probe_train(override(train_bases["domain_adaptation"], "model.norm", "[batch,group]"), monkeypatch)
    assert isinstance(err, ReachedWork), err
    err = probe_train(override(train_bases["domain_adaptation"], "model.norm", "[batch,abc]"), monkeypatch)
    assert_refused(err, "model.norm", "abc")
    err = probe_train(override(train_bases["classification"], "model.norm", "[batch,group]"), monkeypatch)
    assert_refused(err, "model.norm", "group")  # not a sweep there


# --- files ------------------------------------------------------------------------------------
TRAIN_FILE_OPTIONS = [("classification", "ckpt_path"), ("quantization", "source_ckpt"),
                      ("domain_adaptation", "source_ckpt")]


@pytest.mark.parametrize("task,key", TRAIN_FILE_OPTIONS)
@pytest.mark.parametrize("kind", [*FILE_KINDS, "other_task"])
def test_train_checkpoint_options(task, key, kind, train_bases, files, monkeypatch, tmp_path):
    path = files["gan"] if kind == "other_task" else _damaged(kind, tmp_path / "ckpt", files, "classification")
    err = probe_train(override(train_bases[task], key, str(path)), monkeypatch)
    assert_refused(err, key, str(path))
    assert not (tmp_path / "ckpt" / "pwned").exists()


@pytest.mark.parametrize("kind", [*FILE_KINDS, "other_task"])
def test_quantization_float_ckpt(kind, train_bases, files, monkeypatch, tmp_path):
    """quant.float_ckpt (the unpruned reference of a pruned source_ckpt) is vetted like source_ckpt."""
    path = files["gan"] if kind == "other_task" else _damaged(kind, tmp_path / "ckpt", files, "classification")
    cfg = override(train_bases["quantization"], "source_ckpt", str(files["slimming"]))
    err = probe_train(override(cfg, "quant.float_ckpt", str(path)), monkeypatch)
    assert_refused(err, "quant.float_ckpt", str(path))
    assert not (tmp_path / "ckpt" / "pwned").exists()


# =============================================================================== the CLIs
def test_the_cli_prints_the_refusal_and_exits_nonzero(tmp_path):
    """What the in-process probes check reaches a user of train.py unchanged, before the run
    is created (infer.py's refusals through its CLI: tests/test_checkpoint_safety.py)."""
    proc = run_cli("train.py", "task=classification", "logger=none", "model.lr=abc",
                   f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "model.lr='abc': expected a finite number" in proc.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()
