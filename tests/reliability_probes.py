"""Things the reliability tests inject into real train.py runs through the config
(``+callbacks.signal_at._target_=tests.reliability_probes.SignalAt``, ``logger._target_=...``):
a signal delivered at an exact training step, and loggers that fail at the end of a run."""
from __future__ import annotations

import os
import signal

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger


class SignalAt(pl.Callback):
    """Send ``signum`` to this process at the end of training step ``step`` (what a scheduler's
    preemption, Ctrl+C or the OOM killer does, but at a step a test can predict).

    ``during_save=True`` instead delivers it in the middle of the next checkpoint write after
    that step (half the bytes written), as a kill during a save would.
    """

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), during_save: bool = False):
        self.step, self.signum, self.during_save = int(step), int(signum), bool(during_save)
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.sent or trainer.global_step != self.step:
            return
        self.sent = True
        if not self.during_save:
            os.kill(os.getpid(), self.signum)
            return
        real_save, signum = torch.save, self.signum

        def save_then_die(obj, f, *args, **kwargs):
            import io

            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            if hasattr(f, "write"):
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signum)

        torch.save = save_then_die


class _Fails:
    def finalize(self, status: str) -> None:
        raise RuntimeError(f"simulated logger failure in finalize({status!r})")


class FailingCSVLogger(_Fails, CSVLogger):
    """A CSV logger whose finalize raises (a full disk, a lost network share)."""


class FailingWandbLogger(_Fails, WandbLogger):
    """The default W&B logger (offline) whose finalize raises, as a W&B failure at the end would."""
