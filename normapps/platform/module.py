"""Base LightningModule: records its class in checkpoints and carries RNG state for exact resume."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from normapps.platform.checkpoint import META_KEY


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class NormappsModule(pl.LightningModule):
    """Every task's LightningModule derives from this.

    Subclasses call ``self.save_hyperparameters()`` with plain-Python arguments only (Hydra
    instantiates with ``_convert_="all"``), so a checkpoint rebuilds the module from its
    hyper-parameters alone and loads with ``weights_only=True``.
    """

    task_name: str = ""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint[META_KEY] = {
            "module_class": f"{cls.__module__}.{cls.__qualname__}",
            "task": self.task_name,
            "rng": _rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get(META_KEY, {}).get("rng")
        if rng is not None:
            _set_rng_state(rng)

    def on_train_start(self) -> None:
        # Lightning restores the train loader's position only if the loader was built after the
        # checkpoint was read; `trainer.estimated_stepping_batches` (LR schedules) builds it
        # earlier, and the saved position would be dropped. Hand it over here instead, before the
        # first batch is drawn, so a resumed run continues mid-epoch exactly.
        fit_loop = self.trainer.fit_loop
        pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
        if pending and fit_loop._combined_loader is not None:
            fit_loop._combined_loader._load_state_dicts(pending)
            fit_loop._combined_loader_states_to_load = []

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "NormappsModule":
        """Rebuild from an already safely-loaded checkpoint dict (override if the architecture
        is not determined by the hyper-parameters alone, e.g. a pruned network)."""
        module = cls(**dict(checkpoint.get("hyper_parameters", {})))
        module.load_state_dict(checkpoint["state_dict"])
        return module
