"""What a task runner gets: the composed config plus builders for data, module and trainers."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from normapps.platform.checkpoint_io import AtomicCheckpointIO
from normapps.platform.logging import build_loggers, log_hyperparams
from normapps.platform.options import OptionError

log = logging.getLogger(__name__)


def build(group: str, cfg: Any, **kwargs: Any) -> Any:
    """``instantiate`` whose bad-configuration errors read as the class's own, prefixed with the
    config group, instead of Hydra's InstantiationException wrapper."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, OptionError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            raise OptionError(f"{group}: {cause}") from None
        raise


@dataclass
class RunContext:
    cfg: DictConfig
    output_dir: Path
    loggers: list = field(default_factory=list)
    # The task's checked options (what its task.validate returned in train.py's preflight).
    options: Any = None

    @classmethod
    def create(cls, cfg: DictConfig, *, options: Any = None) -> "RunContext":
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        loggers = build_loggers(cfg.get("logger"))
        log_hyperparams(loggers, cfg)
        return cls(cfg=cfg, output_dir=output_dir, loggers=loggers, options=options)

    def task_options(self, validate: Any, kind: type) -> Any:
        """``self.options`` when it is of ``kind`` (train.py's preflight built it), else
        ``validate(cfg)`` now (a runner called without the preflight)."""
        return self.options if isinstance(self.options, kind) else validate(self.cfg)

    def build_datamodule(self, data_cfg: DictConfig | None = None) -> pl.LightningDataModule:
        return build("data", data_cfg if data_cfg is not None else self.cfg.data, _convert_="all")

    def build_module(self, model_cfg: DictConfig | None = None, **kwargs: Any) -> pl.LightningModule:
        return build("model", model_cfg if model_cfg is not None else self.cfg.model,
                     _convert_="all", **kwargs)

    def build_callbacks(self, *, checkpoint_dir: Path | None = None) -> list[pl.Callback]:
        callbacks = []
        for name, cb_cfg in (self.cfg.get("callbacks") or {}).items():
            if cb_cfg is None or cb_cfg.get("_target_") is None:
                continue
            overrides = {}
            if checkpoint_dir is not None and name == "model_checkpoint":
                overrides["dirpath"] = str(checkpoint_dir)
            callbacks.append(instantiate(cb_cfg, **overrides))
        return callbacks

    def build_trainer(
        self,
        *,
        stage: str | None = None,
        extra_callbacks: list[pl.Callback] | None = None,
        **trainer_overrides: Any,
    ) -> pl.Trainer:
        """A Trainer from ``cfg.trainer`` with the run's callbacks and loggers.

        ``stage`` gives multi-stage tasks (e.g. slimming's train/prune/fine-tune) their own
        checkpoint folder, ``checkpoints/<stage>``; keyword overrides win over the config.
        """
        ckpt_dir = self.output_dir / "checkpoints" / stage if stage else None
        callbacks = self.build_callbacks(checkpoint_dir=ckpt_dir) + list(extra_callbacks or [])
        trainer_cfg = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        trainer_cfg.update(trainer_overrides)
        if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
            log.warning("SyncBatchNorm does not run on CPU in PyTorch; sync_batchnorm disabled")
            trainer_cfg["sync_batchnorm"] = False
        plugins = trainer_cfg.pop("plugins", None)
        if plugins is None:
            # Checkpoint temporaries next to the checkpoint, never in $TMPDIR.
            plugins = [AtomicCheckpointIO()]
        return build("trainer", trainer_cfg, callbacks=callbacks, logger=self.loggers or False,
                     plugins=plugins)

    def checkpoint_callback(self, trainer: pl.Trainer):
        return trainer.checkpoint_callback
