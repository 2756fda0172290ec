"""The slimming task's LightningModule: a classifier whose checkpoint also records its BN widths,
so a pruned network is rebuilt from the checkpoint alone (weights_only=True)."""
from __future__ import annotations

from typing import Any

import torch

from normapps.platform.checkpoint import CheckpointError
from normapps.models.classifier_module import ClassificationModule
from normapps.tasks.slimming.prune import bn_widths, shrink_to_widths

# Checkpoint key holding the architecture data a pruned network needs (plain ints and strings).
SLIMMING_KEY = "slimming"


class SlimmingModule(ClassificationModule):
    task_name = "slimming"

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        size = int(getattr(self, "image_size", 32))
        return torch.randn(batch_size, self.hparams.in_channels, size, size,
                           device=next(self.parameters()).device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[SLIMMING_KEY] = {
            "bn_widths": bn_widths(self.net),
            "image_size": int(getattr(self, "image_size", 32)),
            "stage": str(getattr(self, "stage", "")),
            # The unpruned network this one was pruned from (task=quantization's combined table).
            "unpruned_checkpoint": getattr(self, "unpruned_checkpoint", None),
        }

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "SlimmingModule":
        module = cls(**dict(checkpoint.get("hyper_parameters", {})))
        extra = checkpoint.get(SLIMMING_KEY) or {}
        module.image_size = int(extra.get("image_size", 32))
        module.stage = extra.get("stage", "")
        module.unpruned_checkpoint = extra.get("unpruned_checkpoint")
        widths = extra.get("bn_widths")
        if widths:
            try:
                shrink_to_widths(module.net, module.example_input().cpu(), dict(widths))
            except ValueError as err:
                raise CheckpointError(f"cannot rebuild the pruned network: {err}") from err
        module.load_state_dict(checkpoint["state_dict"])
        return module
