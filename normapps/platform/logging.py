"""Experiment loggers: W&B offline by default, CSV, or none; image logging that works for all."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def build_loggers(logger_cfg: DictConfig | None) -> list:
    """Instantiate the configured logger; W&B honours WANDB_MODE over the config's ``offline``.

    The logger's ``finalize`` (which Lightning calls at the end of every fit and test) is
    guarded: a logger failing there warns instead of ending the run before its summary.
    """
    if logger_cfg is None or logger_cfg.get("_target_") in (None, "null"):
        return []
    cfg = OmegaConf.to_container(logger_cfg, resolve=True)
    if cfg["_target_"].endswith("WandbLogger"):
        mode = os.environ.get("WANDB_MODE", "").lower()
        if mode in ("online", "run"):
            cfg["offline"] = False
        elif mode in ("offline", "dryrun", "disabled"):
            cfg["offline"] = True
        Path(cfg["save_dir"]).mkdir(parents=True, exist_ok=True)
    if cfg["_target_"].endswith("CSVLogger"):
        keep_previous_csv(cfg)
    return [guard_finalize(instantiate(cfg))]


def script_wandb_loggers(save_dir: str | Path, *, name: str, group: str,
                         job_type: str | None = None) -> list:
    """The W&B logger a script (a benchmark, a study's collector) logs its tables and figures
    to: ``conf/logger/wandb.yaml``'s settings (project normapps, offline unless
    ``WANDB_MODE=online``), the run kept under ``<save_dir>/wandb``. Close it with
    :func:`finish_loggers`."""
    cfg = {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "normapps", "name": name,
           "group": group, "save_dir": str(save_dir), "offline": True, "log_model": False}
    if job_type:
        cfg["job_type"] = job_type
    return build_loggers(OmegaConf.create(cfg))


def keep_previous_csv(cfg: dict) -> Path | None:
    """Lightning's CSVLogger deletes the ``metrics.csv`` it finds in its folder, so a resumed run
    (same run dir, ``ckpt_path=<run>/checkpoints/last.ckpt``) would lose the curves of its first
    part. Move that file aside as ``metrics.<n>.csv`` (n = 1, 2, ... in resume order) first;
    ``scripts/training_curves.py`` reads them all."""
    folder = Path(cfg["save_dir"]) / str(cfg.get("name") or "lightning_logs")
    version = cfg.get("version")
    if version not in (None, ""):
        folder = folder / (version if isinstance(version, str) else f"version_{version}")
    current = folder / "metrics.csv"
    if version is None or not current.is_file():
        return None  # a new numbered version folder each run: nothing is deleted
    n = 1
    while (folder / f"metrics.{n}.csv").exists():
        n += 1
    kept = current.rename(folder / f"metrics.{n}.csv")
    log.info("csv logger: kept the previous part's metrics as %s", kept)
    return kept


def warn_logger_failure(logger: Any, what: str, err: BaseException) -> None:
    message = (f"{type(logger).__name__}.{what} failed ({type(err).__name__}: {err}); the run's "
               "checkpoints and summary.json are not affected")
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def guard_finalize(logger: Any) -> Any:
    """Make ``logger.finalize`` warn instead of raise (patched on the instance, so the logger
    keeps its class for Lightning's and W&B's isinstance checks)."""
    original = logger.finalize

    def finalize(status: str) -> None:
        try:
            original(status)
        except Exception as err:  # noqa: BLE001 - a logger must never end a run
            warn_logger_failure(logger, f"finalize({status!r})", err)

    logger.finalize = finalize
    return logger


def log_hyperparams(loggers: Sequence, cfg: DictConfig) -> None:
    params = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(params)


def finish_loggers(loggers: Sequence, *, success: bool = True) -> None:
    """Close every logger; finishing W&B keeps multirun jobs from sharing one run. Never raises:
    a failure here is warned about, since the run's results are already on disk."""
    for lg in loggers:
        try:
            lg.finalize("success" if success else "failed")
        except Exception as err:  # noqa: BLE001
            warn_logger_failure(lg, "finalize", err)
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if success else 1)
    except ImportError:  # pragma: no cover - wandb is a dependency
        pass
    except Exception as err:  # noqa: BLE001
        warn_logger_failure(wandb, "finish", err)


def log_image(module, key: str, image: torch.Tensor, *, caption: str | None = None) -> Path | None:
    """Log a (3, H, W) image in [0, 1] to every logger that takes images, and save it as PNG
    under ``<run dir>/images/`` so CSV and no-logger runs keep their samples too."""
    from torchvision.utils import save_image

    trainer = getattr(module, "_trainer", None)
    step = trainer.global_step if trainer is not None else 0
    image = image.detach().float().clamp(0, 1).cpu()
    path = None
    if trainer is not None and trainer.is_global_zero:
        out = Path(trainer.default_root_dir) / "images"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{key.replace('/', '_')}_step{step:07d}.png"
        save_image(image, path)
    for lg in getattr(module, "loggers", []) or []:
        if hasattr(lg, "log_image"):
            kwargs: dict[str, Any] = {"key": key, "images": [image], "step": None}
            if caption:
                kwargs["caption"] = [caption]
            lg.log_image(**kwargs)
    return path
