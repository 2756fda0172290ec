"""Quantization-aware training with BN folding (Jacob et al. 2018; Krishnamoorthi 2018).

``prepare_fx_model(..., qat=True)`` swaps conv-bn(-relu) for torch.ao's fused QAT modules
(``ConvBnReLU2d``): the BN scale is folded into the fake-quantized weight every step, so
training sees the weights int8 inference will use. BN statistics are frozen after
``freeze_bn_epoch`` (the folded weights stop moving with batch statistics), observers after
``freeze_observer_epoch`` (ranges fixed for the last epochs).
"""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def freeze_bn_stats(model: torch.nn.Module) -> None:
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats as _freeze

    model.apply(_freeze)


def freeze_observers(model: torch.nn.Module) -> None:
    from torch.ao.quantization import disable_observer

    model.apply(disable_observer)


class QATSchedule(pl.Callback):
    """Freeze BN statistics from epoch ``freeze_bn_epoch`` and observers from
    ``freeze_observer_epoch`` (0-based; a negative value never freezes)."""

    def __init__(self, *, freeze_bn_epoch: int = 1, freeze_observer_epoch: int = 2) -> None:
        self.freeze_bn_epoch = freeze_bn_epoch
        self.freeze_observer_epoch = freeze_observer_epoch
        self.bn_frozen = False
        self.observers_frozen = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.bn_frozen and 0 <= self.freeze_bn_epoch <= epoch:
            freeze_bn_stats(pl_module)
            self.bn_frozen = True
            log.info("QAT: BN statistics frozen at epoch %d", epoch)
        if not self.observers_frozen and 0 <= self.freeze_observer_epoch <= epoch:
            freeze_observers(pl_module)
            self.observers_frozen = True
            log.info("QAT: observers frozen at epoch %d", epoch)
