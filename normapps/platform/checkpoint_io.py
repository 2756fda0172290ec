"""Lightning's checkpoint writing, with the temporary file next to the target.

Lightning's own writer goes through an fsspec transaction whose temporary file lives in
``$TMPDIR``: a kill during a save left a partial checkpoint there that nothing ever removed (and
a rename across file systems is a copy). :class:`AtomicCheckpointIO` writes
``.<name>.partial-<pid>`` in the checkpoint's own folder and renames it over the target; a failed
save removes it, and :class:`normapps.platform.callbacks.LastCheckpoint` removes those a killed
process left behind when the next run starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from normapps.platform.checkpoint import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # remote storage: Lightning's fsspec writer handles those
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)
