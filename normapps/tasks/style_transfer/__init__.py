"""Arbitrary style transfer: AdaIN training/inference, WCT, masks, interpolation, large images."""
from normapps.tasks.style_transfer.data import StyleDataModule
from normapps.tasks.style_transfer.module import StyleTransferModule

__all__ = ["StyleDataModule", "StyleTransferModule"]
