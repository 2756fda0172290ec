"""Base LightningModule: records its class in checkpoints and carries RNG state for exact resume."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from normapps.platform.checkpoint import META_KEY
from normapps.platform.registry import dotted_name, entry_for_class


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

    # What load_module found in the checkpoint this module was rebuilt from (task, module,
    # network, data); empty for a module built from a config.
    checkpoint_info: dict[str, Any] = {}

    def on_fit_start(self) -> None:
        entry_for_class(type(self))  # an unregistered class could never be loaded back: fail now

    def data_info(self) -> dict[str, int]:
        """The input this module was trained on (image size, channels), for loaders' defaults:
        an explicit ``image_size`` attribute, else the attached trainer's datamodule."""
        trainer = getattr(self, "_trainer", None)
        sources = [self, getattr(trainer, "datamodule", None)]
        info: dict[str, int] = {}
        for key in ("image_size", "channels"):
            for source in sources:
                value = getattr(source, key, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    info[key] = value
                    break
        return info

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        entry = entry_for_class(cls)
        checkpoint[META_KEY] = {
            # The registry entry the loader rebuilds from (never an import path from the file).
            "module": entry.name,
            "network": entry.network,
            "task": self.task_name,
            # Kept so that older normapps versions, which import this path, still read new files.
            "module_class": dotted_name(cls),
            "data": self.data_info(),
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
