"""LightningModule that trains the AdaIN decoder against a frozen VGG encoder."""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normapps.norm import adain
from normapps.platform.logging import log_image
from normapps.platform.checkpoint import META_KEY
from normapps.platform.module import NormappsModule
from normapps.tasks.style_transfer.decoder import Decoder
from normapps.tasks.style_transfer.losses import content_loss, style_loss
from normapps.tasks.style_transfer.decoder_file import (load_decoder_file, resolve_decoder_file,
                                                        shipped_decoder_usable)
from normapps.tasks.style_transfer.options import check_adain_args
from normapps.tasks.style_transfer.vgg import EncoderInfo, build_encoder, check_pairing

log = logging.getLogger(__name__)


def sample_grid(content: torch.Tensor, style: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Rows of (content | style | output), one row per pair, as one (3, H, W) image."""
    size = content.shape[-2:]
    if style.shape[-2:] != size:
        style = nn.functional.interpolate(style, size=size, mode="bilinear", align_corners=False)
    rows = torch.cat([content, style, output.clamp(0, 1)], dim=3)  # (N, 3, H, 3W)
    return torch.cat(list(rows.float()), dim=1)


class StyleTransferModule(NormappsModule):
    task_name = "style_transfer"

    def __init__(
        self,
        *,
        encoder: dict[str, Any] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 10.0,
        identity_weight: float = 0.0,
        lr: float = 1e-4,
        lr_decay: float = 5e-5,
        unbiased: bool = True,
        eps: float = 1e-5,
        max_logged_samples: int = 4,
        channels_last: bool = True,
        decoder_init: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        enc_cfg = dict(encoder or {})
        init = None
        if decoder_init == "auto":
            usable, why = shipped_decoder_usable(enc_cfg.get("weights", "auto"))
            if not usable:
                log.warning("style_transfer: model.decoder_init=auto trains from scratch: the "
                            "shipped decoder cannot be used here (%s)", why)
            decoder_init = "shipped" if usable else None
        if decoder_init:
            # Fine-tune a trained decoder: its file says which encoder it needs, and that
            # encoder is rebuilt exactly (an explicit other encoder is refused below).
            init = load_decoder_file(resolve_decoder_file(decoder_init))
            if enc_cfg.get("weights", "auto") == "auto":
                enc_cfg["info"] = init[1].to_dict()
        self.encoder, self.encoder_source = build_encoder(
            weights=enc_cfg.get("weights", "auto"), path=enc_cfg.get("path"),
            arch=enc_cfg.get("arch", "auto"), padding=enc_cfg.get("padding", "reflect"),
            actnorm=enc_cfg.get("actnorm", True), download=enc_cfg.get("download", True),
            info=enc_cfg.get("info"))
        log.info("style_transfer encoder: %s", self.encoder.info.describe())
        self.decoder = Decoder()
        if init is not None:
            check_pairing(init[1], self.encoder.info, what=f"model.decoder_init={decoder_init}")
            self.decoder.load_state_dict(init[0].state_dict())
            what = ("the shipped decoder adain_decoder_bundled" if decoder_init == "shipped"
                    else f"the decoder {decoder_init}")
            log.info("style_transfer: fine-tuning %s (model.decoder_init=null trains from scratch)", what)
        else:
            log.info("style_transfer: training the decoder from scratch")
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # train.py's preflight: every option checked before the encoder or any weights load
    check_args = classmethod(lambda cls, args, *, prefix="model": check_adain_args(args, prefix=prefix))

    @property
    def encoder_info(self) -> EncoderInfo:
        return self.encoder.info

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Which encoder the decoder was trained against: inference refuses any other one.
        checkpoint[META_KEY]["encoder"] = self.encoder.info.to_dict()

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "StyleTransferModule":
        # The encoder's weights are in the checkpoint: do not look for the original source.
        hp = dict(checkpoint.get("hyper_parameters", {}))
        # Checkpoints from before VGG-16 support hold a VGG-19 and carry no encoder record.
        recorded = dict((checkpoint.get(META_KEY) or {}).get("encoder") or {"arch": "vgg19"})
        enc = dict(hp.get("encoder") or {})
        enc.update(weights="checkpoint", arch=recorded.get("arch", "vgg19"),
                   padding=recorded.get("padding", enc.get("padding", "reflect")), info=None)
        hp["encoder"] = enc
        hp["decoder_init"] = None  # the decoder's weights are in the checkpoint
        module = cls(**hp)
        module.load_state_dict(checkpoint["state_dict"])
        if recorded.get("source"):
            module.encoder.info = EncoderInfo.from_dict(recorded)
        return module

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen, always
        return self

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        c = self.encoder(self._prep(content))
        s = self.encoder(self._prep(style))
        t = adain(c, s, eps=self.hparams.eps, unbiased=self.hparams.unbiased)
        if alpha < 1.0:
            t = alpha * t + (1 - alpha) * c
        return self.decoder(t)

    def losses(self, content: torch.Tensor, style: torch.Tensor):
        hp = self.hparams
        with torch.no_grad():
            style_feats = self.encoder(self._prep(style), all_layers=True)
            content_feat = self.encoder(self._prep(content))
            target = adain(content_feat, style_feats[-1], eps=hp.eps, unbiased=hp.unbiased)
        output = self.decoder(target)
        out_feats = self.encoder(output, all_layers=True)
        loss_c = content_loss(out_feats[-1], target)
        loss_s = style_loss(out_feats, style_feats, eps=hp.eps, unbiased=hp.unbiased)
        loss = hp.content_weight * loss_c + hp.style_weight * loss_s
        if hp.get("identity_weight", 0.0) > 0:
            # Identity loss (Park & Lee 2019, SANet): decoding an image's own features gives the
            # image back. It teaches the decoder to invert the encoder directly, which the
            # content loss alone does slowly, so short runs on small data keep content structure.
            images = torch.cat([content, style], dim=0)
            with torch.no_grad():
                own = self.encoder(self._prep(images))
            self.identity_loss = F.mse_loss(self.decoder(own).float(), images.float())
            loss = loss + hp.identity_weight * self.identity_loss
        return loss, loss_c, loss_s, output

    def training_step(self, batch, batch_idx):
        content, style = batch
        loss, loss_c, loss_s, _ = self.losses(content, style)
        n = content.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/content_loss", loss_c, batch_size=n)
        self.log("train/style_loss", loss_s, batch_size=n)
        if self.hparams.get("identity_weight", 0.0) > 0:
            self.log("train/identity_loss", self.identity_loss, batch_size=n)
        return loss

    def _eval_step(self, batch, batch_idx, stage: str) -> None:
        content, style = batch
        loss, loss_c, loss_s, output = self.losses(content, style)
        n = content.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n)
        self.log(f"{stage}/content_loss", loss_c, batch_size=n)
        self.log(f"{stage}/style_loss", loss_s, batch_size=n)
        if self.hparams.get("identity_weight", 0.0) > 0:
            self.log(f"{stage}/identity_loss", self.identity_loss, batch_size=n)
        if batch_idx == 0:
            k = self.hparams.max_logged_samples
            log_image(self, f"{stage}/samples", sample_grid(content[:k], style[:k], output[:k]),
                      caption="content | style | output")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.decoder.parameters(), lr=hp.lr)
        # The reference schedule: lr / (1 + decay * iteration), stepped every iteration.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + hp.lr_decay * step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
