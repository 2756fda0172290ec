"""The classifier LightningModule, part of the shared model layer: the classification task trains
it, and domain adaptation, slimming and quantization load or fine-tune it (their checkpoints say
they hold a ``classifier`` network, so any of them loads where a classifier is expected)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from normapps.models import CLASSIFIER_ARCHS, build_classifier
from normapps.norm import ACTIVATION_NORM_KINDS, NORM_LAYER_TYPES
from normapps.platform.module import NormappsModule
from normapps.platform.options import apply_checks, as_choice, as_float, as_int

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("cosine", "none")


def first_norm_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, NORM_LAYER_TYPES):
            return name, module
    return None


class ClassificationModule(NormappsModule):
    task_name = "classification"

    def __init__(
        self,
        *,
        arch: str = "small_cnn",
        norm: str = "batch",
        norm_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int | None = None,
        depth: int = 20,
        width_mult: float = 1.0,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",
        label_smoothing: float = 0.0,
        measure_snd: bool = False,
        snd_batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.check_args(dict(arch=arch, norm=norm, num_classes=num_classes, in_channels=in_channels,
                             width=width, depth=depth, width_mult=width_mult, optimizer=optimizer, lr=lr,
                             momentum=momentum, weight_decay=weight_decay, scheduler=scheduler,
                             label_smoothing=label_smoothing, snd_batch_size=snd_batch_size))
        self.save_hyperparameters()
        self.net = build_classifier(arch, num_classes=num_classes, in_channels=in_channels, norm=norm,
                                    norm_kwargs=norm_kwargs, width=width, depth=depth,
                                    width_mult=width_mult)
        self._snd_inputs: list[torch.Tensor] = []

    @classmethod
    def check_args(cls, args: Mapping[str, Any], *, prefix: str = "model") -> None:
        """Ranges and choices of the hyper-parameters in ``args`` (any subset), named
        ``<prefix>.<key>``; train.py's preflight calls it before anything is built."""
        checks = {
            "arch": lambda k, v: as_choice(k, v, CLASSIFIER_ARCHS),
            "norm": lambda k, v: v if callable(v) else as_choice(k, v, ACTIVATION_NORM_KINDS),
            "num_classes": lambda k, v: as_int(k, v, min=2),
            "in_channels": lambda k, v: as_int(k, v, min=1),
            "width": lambda k, v: as_int(k, v, min=1, allow_none=True),
            "depth": lambda k, v: as_int(k, v, min=1),
            "width_mult": lambda k, v: as_float(k, v, min=0.0, min_open=True),
            "optimizer": lambda k, v: as_choice(k, v, OPTIMIZERS),
            "lr": lambda k, v: as_float(k, v, min=0.0, min_open=True),
            "momentum": lambda k, v: as_float(k, v, min=0.0, max=1.0),
            "weight_decay": lambda k, v: as_float(k, v, min=0.0),
            "scheduler": lambda k, v: as_choice(k, v, SCHEDULERS),
            "label_smoothing": lambda k, v: as_float(k, v, min=0.0, max=0.99),
            "snd_batch_size": lambda k, v: as_int(k, v, min=2),
        }
        apply_checks(checks, args, prefix=prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0)
        acc = (logits.argmax(1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(y))
        self.log(f"{stage}/acc", acc, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        if self.hparams.measure_snd and batch_idx == 0:
            self._capture_norm_input(batch[0])
        self._step(batch, "test")

    # --- the seeds' stochastic normalization disturbance, on the first norm layer -------------
    def _capture_norm_input(self, x: torch.Tensor) -> None:
        found = first_norm_layer(self.net)
        if found is None:
            return
        captured = []
        handle = found[1].register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
        with torch.no_grad():
            self.net(x)
        handle.remove()
        self._snd_inputs = captured

    def on_test_epoch_end(self) -> None:
        if not self._snd_inputs:
            return
        from normapps.norm import snd

        _, layer = first_norm_layer(self.net)
        feats = self._snd_inputs[0]
        bs = min(self.hparams.snd_batch_size, len(feats))
        value = snd(layer, feats, batch_size=max(bs, 2),
                    generator=torch.Generator().manual_seed(0))
        self.log("test/snd", float(value))
        self._snd_inputs = []

    def configure_optimizers(self):
        hp = self.hparams
        params = self.parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=True)
        elif hp.optimizer == "adam":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"model.optimizer must be sgd or adam, got {hp.optimizer!r}")
        if hp.scheduler == "none":
            return opt
        if hp.scheduler != "cosine":
            raise ValueError(f"model.scheduler must be cosine or none, got {hp.scheduler!r}")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
