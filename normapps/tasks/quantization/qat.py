"""Quantization-aware training with BN folding (Jacob et al. 2018; Krishnamoorthi 2018).

``prepare_fx_model(..., qat=True)`` swaps conv-bn(-relu) for torch.ao's fused QAT modules
(``ConvBnReLU2d``): the BN scale is folded into the fake-quantized weight every step, so
training sees the weights int8 inference will use. BN statistics are frozen after
``freeze_bn_epoch`` (the folded weights stop moving with batch statistics), observers after
``freeze_observer_epoch`` (ranges fixed for the last epochs), and both at the end in any case
(:func:`finish_qat`).
"""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def freeze_bn_stats(model: torch.nn.Module) -> None:
    """fx: torch.ao's fused QAT modules; PT2E: the BN ops of an ExportedQAT graph."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats as _freeze

    from normapps.tasks.quantization.ptq import ExportedQAT

    model.apply(_freeze)
    for m in model.modules():
        if isinstance(m, ExportedQAT):
            m.freeze_bn_stats()


def freeze_observers(model: torch.nn.Module) -> None:
    """Disable the observers of torch.ao (fx) and torchao (PT2E) fake-quantize modules."""
    from torch.ao.quantization import disable_observer

    model.apply(disable_observer)
    try:
        from torchao.quantization.pt2e import disable_observer as disable_pt2e_observer
    except ImportError:  # pragma: no cover - torchao is a dependency
        return
    model.apply(disable_pt2e_observer)


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


def finish_qat(prepared: torch.nn.Module, batches=None, *, recalibrate_bn: bool = False,
               max_batches: int | None = None) -> torch.nn.Module:
    """The step between QAT training and int8 conversion: freeze, as torchvision's QAT recipe
    does, never re-estimate.

    Observers are disabled (the learned ranges are what convert uses) and the fused modules'
    BN statistics frozen (the folded weights were trained with them). A BN re-estimation here
    would reset running_var to 1, which torch.ao's fused conv-BN multiplies into the weight
    before fake quantization, so its passes see wrongly scaled weights, and still-enabled
    observers would record those as the weights' ranges. ``recalibrate_bn`` (the ptq option
    ``quant.recalibrate_bn``) is therefore not applied to QAT; ``batches``/``max_batches`` are
    accepted for the caller's symmetry and unused.
    """
    if recalibrate_bn:
        log.info("QAT: BN statistics and observers frozen before convert (torchvision's QAT "
                 "recipe); quant.recalibrate_bn applies to mode=ptq only")
    freeze_observers(prepared)
    freeze_bn_stats(prepared)
    return prepared
