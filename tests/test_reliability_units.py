"""The reliability pieces in-process (issue 12): LastCheckpoint on SIGINT, atomic saves, logging
failures that only warn, W&B tables of mixed types, inference.json beside a run's record."""
import json
import os
import signal
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from normapps.platform import checkpoint as ckpt_mod
from normapps.platform.callbacks import LastCheckpoint, TrainingInterrupted
from normapps.platform.checkpoint import atomic_save, partial_path
from normapps.platform.checkpoint_io import AtomicCheckpointIO
from normapps.platform.logging import finish_loggers, guard_finalize
from normapps.platform.summary import log_table
from tests.reliability_probes import SignalAt


def _fit(tmp_path, *callbacks, max_steps=5):
    from normapps.data.classification import ClassificationDataModule
    from normapps.tasks.classification import ClassificationModule

    pl.seed_everything(0)
    dm = ClassificationDataModule(dataset="digits", batch_size=32, num_workers=0, image_size=16, channels=1)
    module = ClassificationModule(width=4, in_channels=1, scheduler="none")
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1,
                         default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()],
                         callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True),
                                    *callbacks])
    trainer.fit(module, datamodule=dm)
    return trainer


def test_sigint_writes_last_ckpt_at_the_end_of_the_batch_and_stops(tmp_path, one_thread):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        _fit(tmp_path, LastCheckpoint(every_minutes=None), SignalAt(step=2, signum=int(signal.SIGINT)))
    assert stop.value.signum == signal.SIGINT and stop.value.step == 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert stop.value.checkpoint == str(last)
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_second_sigint_stops_at_once():
    # Python's own SIGINT handler, whatever this process was started with (a background job of
    # a non-interactive shell starts with SIGINT ignored)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    cb = LastCheckpoint()
    try:
        cb._install_handlers()
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first only asks for a save at the batch end
            assert cb._signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            cb._restore_handlers()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, started_with)


def test_timed_last_ckpt_between_validations(tmp_path, one_thread):
    cb = LastCheckpoint(every_minutes=1e-9)  # every step
    trainer = _fit(tmp_path, cb, max_steps=3)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert trainer.checkpoint_callback.last_model_path == cb.last_model_path
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("last")) == ["last.ckpt"]


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "abc", True])
def test_bad_intervals_are_refused_naming_the_key(value):
    with pytest.raises(ValueError, match="callbacks.last_checkpoint.every_minutes"):
        LastCheckpoint(every_minutes=value)


def test_atomic_save_writes_next_to_the_target_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_save({"w": torch.ones(1)}, target)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(ckpt_mod.os, "replace", lambda a, b: (renames.append(Path(a)), real_replace(a, b)))
    atomic_save({"w": torch.zeros(1)}, target)
    assert renames == [partial_path(target)] and renames[0].parent == tmp_path

    def broken_save(obj, fh, *a, **k):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"w": torch.full((1,), 7.0)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left
    assert torch.load(target, weights_only=True)["w"].item() == 0.0  # the previous file intact


class _Raises:
    def finalize(self, status):
        raise RuntimeError("disk full")


def test_logger_failures_at_the_end_warn(monkeypatch):
    import wandb

    guarded = guard_finalize(_Raises())
    with pytest.warns(RuntimeWarning, match="disk full"):
        guarded.finalize("success")
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", lambda **kw: (_ for _ in ()).throw(OSError("sync dir gone")))
    with pytest.warns(RuntimeWarning) as record:
        finish_loggers([_Raises()])
    assert {"disk full", "sync dir gone"} <= {str(w.message).split("(")[1].split(")")[0].split(": ")[1]
                                             for w in record}


def _stub_wandb_logger(log):
    from pytorch_lightning.loggers import WandbLogger

    class Stub(WandbLogger):
        def __init__(self):  # no W&B run: only what log_table touches
            pass

        @property
        def experiment(self):
            return type("Run", (), {"log": staticmethod(log)})()

    return Stub()


def test_wandb_tables_take_mixed_columns_and_failures_only_warn():
    import wandb

    # The domain-adaptation table: numbers per target, "" in the mean row's severity.
    rows = [{"target": "contrast", "severity": 5, "none": 0.31}, {"target": "mean", "severity": "", "none": 0.31}]
    with pytest.raises(TypeError):  # what wandb does without allow_mixed_types
        wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
    logged = []
    log_table([_stub_wandb_logger(logged.append)], "da_results", rows)
    table = logged[0]["da_results"]
    assert table.columns == ["target", "severity", "none"] and len(table.data) == 2

    def fails(_):
        raise ConnectionError("W&B unreachable")

    with pytest.warns(RuntimeWarning, match="W&B unreachable"):
        log_table([_stub_wandb_logger(fails)], "t", rows)


def test_infer_writes_inference_json_and_never_touches_a_runs_record(tiny_checkpoints, tmp_path):
    from normapps.platform.inference import run_infer
    from tests.hydra_configs import compose_infer
    from tests.tiny_checkpoints import image_folder

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"task": "classification", "metrics": {"test/acc": 0.9}}\n')
    (run / "config.yaml").write_text("seed: 42\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    folder = image_folder(tmp_path / "digits")
    run_infer(compose_infer(["task=classification", f"ckpt_path={tiny_checkpoints['classification']}",
                             f"input={folder}", f"output_dir={run}", "image_size=16"]))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in before} == before
    assert {p.name for p in run.iterdir()} - set(before) == {"inference.json", "predictions.csv"}
    assert json.loads((run / "inference.json").read_text())["num_images"] == 4


def test_classification_checkpoints_record_their_image_size_and_infer_uses_it(tmp_path, one_thread):
    """Issue 12 item 10: a 16 px model was run on 32 px images by default, silently."""
    from normapps.platform.inference import run_infer
    from tests.hydra_configs import compose_infer
    from tests.tiny_checkpoints import image_folder

    _fit(tmp_path / "run", max_steps=1)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["normapps"]["data"] == {"image_size": 16, "channels": 1}
    folder = image_folder(tmp_path / "digits", size=40)
    base = ["task=classification", f"ckpt_path={last}", f"input={folder}"]
    result = run_infer(compose_infer([*base, f"output_dir={tmp_path / 'a'}"]))
    assert result["image_size"] == 16
    with pytest.warns(UserWarning, match="image_size=24 differs from the 16 px"):
        result = run_infer(compose_infer([*base, f"output_dir={tmp_path / 'b'}", "image_size=24"]))
    assert result["image_size"] == 24  # an explicit choice is honoured, with a warning


def test_non_finite_model_outputs_are_refused_not_written(tmp_path):
    """Issue 12 item 8, the output side: NaN scores argmax to class 0 and were saved as such."""
    from normapps.tasks.classification.predict import write_predictions

    probs = torch.tensor([[0.2, 0.8], [float("nan"), float("nan")]])
    with pytest.raises(ValueError, match="2 NaN/inf value"):
        write_predictions(tmp_path, [Path("a.png"), Path("b.png")], probs, None)
    assert not (tmp_path / "predictions.csv").exists()


def test_non_finite_stylizations_and_gan_samples_are_refused_not_written(tmp_path, tiny_checkpoints, monkeypatch):
    """Issue 12 item 8 for the image writers: a NaN stylization or GAN sample used to be saved
    as a black picture with exit 0."""
    from normapps.platform.inference import run_infer
    from normapps.tasks.gan.module import GANModule
    from normapps.tasks.style_transfer.infer import save_png
    from tests.hydra_configs import compose_infer

    image = torch.rand(3, 8, 8)
    image[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="the stylization out.png: the model produced 1 NaN"):
        save_png(image, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()

    monkeypatch.setattr(GANModule, "sample", lambda self, z, y=None, use_ema=True: torch.full((len(z), 3, 8, 8), float("nan")))
    out = tmp_path / "gan"
    with pytest.raises(ValueError, match="the generated samples: the model produced"):
        run_infer(compose_infer(["task=gan", f"ckpt_path={tiny_checkpoints['gan']}", "num_samples=4",
                                 f"output_dir={out}"]))
    assert not (out / "grid.png").exists() and not (out / "samples").exists()
