"""``last.ckpt`` that keeps up with training: on a time interval, and on SIGTERM/SIGINT.

ModelCheckpoint writes ``last.ckpt`` only when it validates (once per epoch by default, every
``gan.eval_every_g_steps`` for the GAN), so a kill or a preemption could lose most of a run.
:class:`LastCheckpoint` also writes it every ``every_minutes`` of training and, when a SIGTERM
(what schedulers send before they preempt) or a SIGINT (Ctrl+C) arrives, at the end of the
training batch in progress, then stops the run: ``ckpt_path=<run>/checkpoints/last.ckpt``
resumes from there exactly (Lightning restores the loop mid-epoch, the data sampler and the RNG
state go with the checkpoint).
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from normapps.platform.checkpoint import remove_stale_partials

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(BaseException):
    """Training stopped on a signal after writing ``checkpoint`` (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int, checkpoint: str, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}; last checkpoint: {checkpoint}")
        self.signum, self.checkpoint, self.step = int(signum), checkpoint, int(step)


def model_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The run's ModelCheckpoint (``trainer.checkpoint_callback`` is just the first Checkpoint)."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` every ``every_minutes`` of training (None: never on time) and, with
    ``on_signal``, on SIGTERM/SIGINT at the end of the batch in progress, then stop.

    It writes the file ModelCheckpoint writes (``<its dirpath>/last.ckpt``, or
    ``<default_root_dir>/checkpoints/last.ckpt`` without one) and tells ModelCheckpoint so, so
    the two never split into ``last.ckpt`` and ``last-v1.ckpt``. A second Ctrl+C stops at once.
    """

    def __init__(self, *, every_minutes: float | None = 10.0, on_signal: bool = True) -> None:
        if every_minutes is not None and (isinstance(every_minutes, bool)
                                          or not isinstance(every_minutes, (int, float))
                                          or not math.isfinite(every_minutes) or every_minutes <= 0):
            raise ValueError(f"callbacks.last_checkpoint.every_minutes={every_minutes!r}: expected a "
                             "positive number of minutes, or null to save only at validation")
        if not isinstance(on_signal, bool):
            raise ValueError(f"callbacks.last_checkpoint.on_signal={on_signal!r}: expected true or false")
        self.every_s = None if every_minutes is None else float(every_minutes) * 60.0
        self.on_signal = on_signal
        self.last_model_path = ""
        self._last_save = time.monotonic()
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ where and how
    def target(self, trainer: pl.Trainer) -> Path:
        mc = model_checkpoint(trainer)
        if mc is not None and mc.dirpath:
            return Path(mc.dirpath) / f"{mc.CHECKPOINT_NAME_LAST}{mc.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def save(self, trainer: pl.Trainer, reason: str) -> Path:
        path = self.target(trainer)
        mc = model_checkpoint(trainer)
        if mc is not None:
            # Set before saving: ModelCheckpoint's state (in the file) then names this file, and
            # its version counter overwrites it instead of starting last-v1.ckpt.
            mc.last_model_path = str(path)
        self.last_model_path = str(path)
        trainer.save_checkpoint(path)
        self._last_save = time.monotonic()
        log.info("last.ckpt written at step %d (%s): %s", trainer.global_step, reason, path)
        return path

    # ------------------------------------------------------------------ signals
    def _handler(self, signum, frame) -> None:
        if self._signum is not None:  # a second signal: the user means it, stop at once
            self._restore_handlers()
            signal.raise_signal(signum)
            return
        self._signum = signum
        log.warning("%s received: writing last.ckpt at the end of this batch, then stopping%s",
                    signal.Signals(signum).name, " (Ctrl+C again to stop at once)" if signum == signal.SIGINT else "")

    def _install_handlers(self) -> None:
        if not self.on_signal or threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            # Replaces Lightning's SIGTERM handler for the fit: that one would abort a running
            # validation and stop without a checkpoint.
            self._previous[signum] = signal.signal(signum, self._handler)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        local = self._signum is not None
        if trainer.world_size > 1:  # every rank stops (and saves, collectively) at the same batch
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def _stop(self, trainer: pl.Trainer) -> None:
        path = self.save(trainer, "signal")
        signum = self._signum if self._signum is not None else int(signal.SIGTERM)
        self._restore_handlers()
        raise TrainingInterrupted(signum, str(path), trainer.global_step)

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            for stale in remove_stale_partials(self.target(trainer).parent):
                log.info("removed %s, left by a save that was killed", stale)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        self._signum = None
        self._install_handlers()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._stop_requested(trainer):
            self._stop(trainer)
        if self.every_s is None:
            return
        due = time.monotonic() - self._last_save >= self.every_s
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due, src=0)  # rank 0's clock decides for all
        if due:
            self.save(trainer, f"every {self.every_s / 60:g} min")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after ModelCheckpoint's (checkpoint callbacks keep their order), so a signal that
        # arrived during validation still gets that validation's best checkpoint.
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._stop_requested(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handlers()
