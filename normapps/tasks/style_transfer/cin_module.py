"""LightningModules that train the CIN networks with perceptual losses against the project's
frozen VGG encoder (the loss network):

- :class:`CINStyleModule` (``model=cin``): an N-style network (Dumoulin et al. 2017) on the N
  styles of ``data.style_dir``; each step stylizes content crops with random style indices.
- :class:`ArbitraryCINModule` (``model=arbitrary_cin``): style predictor + parameter head +
  transformer (Ghiasi et al. 2017), trained or fine-tuned end to end on (content, style) pairs.

The loss network is built only for training/evaluation and is never part of a checkpoint: a
checkpoint holds the stylization network alone, which is all inference needs.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from normapps.platform.logging import log_image
from normapps.platform.module import NormappsModule
from normapps.tasks.style_transfer.arbitrary_net import (
    MAGENTA_LAYOUT,
    MULTISTYLE26_LAYOUT,
    ArbitraryStyleNetwork,
)
from normapps.tasks.style_transfer.cin_losses import (
    STYLE_LOSSES,
    layer_index,
    style_loss,
    style_targets,
    total_variation,
)
from normapps.tasks.style_transfer.cin_stylize import square_style
from normapps.tasks.style_transfer.cin_transformer import CINTransformer
from normapps.tasks.style_transfer.module import sample_grid
from normapps.tasks.style_transfer.vgg import build_encoder

log = logging.getLogger(__name__)

LOSS_NET = "loss_net"


class _PerceptualModule(NormappsModule):
    """Shared by both: the frozen loss network (built on demand, kept out of checkpoints), the
    content/style/TV loss, logging and the optimizer of ``self.trainable()``."""

    task_name = "style_transfer"

    def _check_loss_options(self) -> None:
        hp = self.hparams
        layer_index(hp.content_layer)
        if hp.style_loss not in STYLE_LOSSES:
            raise ValueError(f"model.style_loss={hp.style_loss!r}: expected one of {STYLE_LOSSES}")
        for key in ("content_weight", "style_weight", "tv_weight", "lr"):
            if float(hp[key]) < 0 or (key == "lr" and float(hp[key]) == 0):
                raise ValueError(f"model.{key}={hp[key]} must be {'> 0' if key == 'lr' else '>= 0'}")

    # --- the loss network ---------------------------------------------------------------------
    def build_loss_net(self) -> nn.Module:
        if getattr(self, LOSS_NET, None) is None:
            encoder, source = build_encoder(**dict(self.hparams.encoder or {}))
            log.info("style_transfer %s: loss network from %s weights", type(self).__name__, source)
            encoder.requires_grad_(False)
            self.loss_net = encoder.eval().to(self.device)
            if self.hparams.channels_last:
                self.loss_net.to(memory_format=torch.channels_last)
        return self.loss_net

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if f"{LOSS_NET}." in f".{k}"]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(f"{LOSS_NET}.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"{type(self).__name__}: state dict does not match: missing "
                               f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}")
        return result

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, LOSS_NET, None) is not None:
            self.loss_net.eval()  # frozen, always
        return self

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.build_loss_net()(self._prep(x), all_layers=True)

    def perceptual_losses(self, content: torch.Tensor, output: torch.Tensor,
                          targets: Sequence[torch.Tensor]):
        hp = self.hparams
        k = layer_index(hp.content_layer)
        with torch.no_grad():
            content_feat = self.features(content)[k]
        out_feats = self.features(output)
        loss_c = F.mse_loss(out_feats[k].float(), content_feat.float())
        loss_s = style_loss(out_feats, targets, hp.style_loss)
        loss_tv = total_variation(output.float())
        loss = hp.content_weight * loss_c + hp.style_weight * loss_s + hp.tv_weight * loss_tv
        return loss, {"content_loss": loss_c, "style_loss": loss_s, "tv_loss": loss_tv}

    def _log(self, stage: str, loss: torch.Tensor, parts: dict[str, torch.Tensor], n: int) -> None:
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, batch_size=n)

    def trainable(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self):
        return torch.optim.Adam(self.trainable(), lr=self.hparams.lr)


class CINStyleModule(_PerceptualModule):
    """An N-style CIN network trained on the N styles of its datamodule (``StyleSetDataModule``).

    ``num_styles``/``style_names`` are taken from the data at setup when not given (and saved
    into the checkpoint's hyper-parameters); given, they must match the data.
    ``init=multistyle26`` starts the convolutions from the packaged 26-style network (and every
    style's (gamma, beta) from the mean of its 26 rows); ``random`` trains from scratch.
    ``conv_lr_scale`` scales the convolutions' learning rate (0 freezes them: the styles are
    learned through their (gamma, beta) alone).
    """

    def __init__(
        self,
        *,
        num_styles: int | None = None,
        style_names: list[str] | None = None,
        contract: Sequence[int] = MULTISTYLE26_LAYOUT["contract"],
        expand: Sequence[int] = MULTISTYLE26_LAYOUT["expand"],
        num_residual: int = MULTISTYLE26_LAYOUT["num_residual"],
        init: str = "multistyle26",
        encoder: dict[str, Any] | None = None,
        content_layer: str = "relu3_1",
        style_loss: str = "gram",
        content_weight: float = 1.0,
        style_weight: float = 3000.0,
        tv_weight: float = 0.0,
        style_size: int | None = None,
        lr: float = 1e-2,
        conv_lr_scale: float = 0.0,
        max_logged_samples: int = 8,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if conv_lr_scale < 0:
            raise ValueError(f"model.conv_lr_scale={conv_lr_scale} must be >= 0 (0 freezes the convolutions)")
        if init not in ("random", "multistyle26", "checkpoint"):
            raise ValueError(f"model.init={init!r}: expected random | multistyle26")
        self._check_loss_options()
        self.transformer: CINTransformer | None = None
        self.loss_net = None
        if num_styles is not None:
            self._build(int(num_styles))

    def _build(self, num_styles: int) -> None:
        hp = self.hparams
        self.transformer = CINTransformer(num_styles=num_styles, contract=tuple(hp.contract),
                                          expand=tuple(hp.expand), num_residual=hp.num_residual)
        if hp.init == "multistyle26":
            self._init_from_packaged()
        if hp.channels_last:
            self.transformer.to(memory_format=torch.channels_last)

    def _init_from_packaged(self) -> None:
        from normapps.tasks.style_transfer.onnx_ports import load_multistyle26

        layout = (tuple(self.hparams.contract), tuple(self.hparams.expand), self.hparams.num_residual)
        packaged = (MULTISTYLE26_LAYOUT["contract"], MULTISTYLE26_LAYOUT["expand"], MULTISTYLE26_LAYOUT["num_residual"])
        if layout != packaged:
            raise ValueError(f"model.init=multistyle26 needs the packaged layout contract/expand/"
                             f"num_residual={packaged}, got {layout}")
        source = load_multistyle26()
        with torch.no_grad():
            for mine, theirs in zip(self.transformer.convs(), source.convs()):
                mine.weight.copy_(theirs.weight)
            for mine, theirs in zip(self.transformer.norms, source.norms):
                mine.affine.weight.copy_(theirs.affine.weight.mean(0, keepdim=True).expand_as(mine.affine.weight))
                mine.affine.bias.copy_(theirs.affine.bias.mean(0, keepdim=True).expand_as(mine.affine.bias))
        log.info("model=cin: convolutions from the packaged 26-style network, styles from its mean style")

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "CINStyleModule":
        hp = dict(checkpoint.get("hyper_parameters", {}))
        hp["init"] = "checkpoint"  # the weights follow: do not look for the packaged network
        module = cls(**hp)
        module.load_state_dict(checkpoint["state_dict"])
        return module

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "style_tensors"):
            if self.transformer is None:
                raise ValueError("model=cin needs its styles: use the StyleSetDataModule "
                                 "(model=cin selects it) or give model.num_styles")
            return
        names = list(dm.style_names)
        hp = self.hparams
        if hp.num_styles is not None and int(hp.num_styles) != len(names):
            raise ValueError(f"model.num_styles={hp.num_styles} but data.style_dir holds {len(names)} "
                             f"styles ({', '.join(names[:5])}{'...' if len(names) > 5 else ''})")
        if hp.style_names is not None and list(hp.style_names) != names:
            raise ValueError(f"the checkpoint's styles {list(hp.style_names)} are not the data's {names}")
        hp.num_styles, hp.style_names = len(names), names
        if self.transformer is None:
            self._build(len(names))
            self.transformer.to(self.device)
        styles = dm.style_tensors(hp.style_size)
        with torch.no_grad():
            targets = [style_targets(self.features(s[None].to(self.device)), hp.style_loss) for s in styles]
        # (num_styles, ...) per layer; a style is looked up by index in every step
        self.style_target_bank = [torch.cat([t[layer] for t in targets]) for layer in range(len(targets[0]))]
        crop = dm.crop_size
        self.style_thumbs = torch.stack([F.interpolate(square_style(s[None], crop), size=(crop, crop))[0]
                                         for s in styles])
        log.info("model=cin: %d styles: %s", len(names), ", ".join(names))

    def trainable(self) -> list[nn.Parameter]:
        return list(self.transformer.parameters())

    def configure_optimizers(self):
        # The styles' (gamma, beta) tables at lr, the shared convolutions at lr * conv_lr_scale:
        # as Dumoulin et al. show, a trained network learns new styles through the tables alone
        # (conv_lr_scale=0), and a small scale keeps pretrained filters while adapting them.
        hp = self.hparams
        tables = [p for n in self.transformer.norms for p in n.parameters()]
        convs = [p for c in self.transformer.convs() for p in c.parameters()]
        groups = [{"params": tables, "lr": hp.lr}]
        if hp.conv_lr_scale > 0:
            groups.append({"params": convs, "lr": hp.lr * hp.conv_lr_scale})
        else:
            for p in convs:
                p.requires_grad_(False)
            if hp.init == "random":
                log.warning("model=cin: init=random with conv_lr_scale=0 keeps random convolutions; "
                            "train them with model.conv_lr_scale=1 (experiment=cin_scratch)")
        return torch.optim.Adam(groups)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.transformer(self._prep(content), style)

    def _step(self, batch, stage: str, batch_idx: int = 0):
        content, idx = batch
        output = self(content, idx)
        targets = [bank[idx.to(bank.device)].to(content.device) for bank in self.style_target_bank]
        loss, parts = self.perceptual_losses(content, output, targets)
        self._log(stage, loss, parts, content.shape[0])
        if stage != "train" and batch_idx == 0:
            k = self.hparams.max_logged_samples
            styles = self.style_thumbs[idx[:k].cpu()].to(content.device)
            log_image(self, f"{stage}/samples", sample_grid(content[:k], styles, output[:k]),
                      caption="content | style | output")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", batch_idx)


class ArbitraryCINModule(_PerceptualModule):
    """Style predictor + parameter head + CIN transformer, trained on (content, style) pairs
    (``StyleDataModule``). ``init=magenta`` fine-tunes Magenta's pretrained networks (their
    layout); ``random`` trains from scratch. ``train_predictor=false`` keeps the predictor
    frozen (only the head and the transformer learn)."""

    def __init__(
        self,
        *,
        init: str = "magenta",
        embedding_dim: int = 100,
        contract: Sequence[int] = MAGENTA_LAYOUT["contract"],
        expand: Sequence[int] = MAGENTA_LAYOUT["expand"],
        num_residual: int = MAGENTA_LAYOUT["num_residual"],
        normalize_contract: bool = MAGENTA_LAYOUT["normalize_contract"],
        train_predictor: bool = True,
        predict_size: int = 256,
        encoder: dict[str, Any] | None = None,
        content_layer: str = "relu3_1",
        style_loss: str = "gram",
        content_weight: float = 1.0,
        style_weight: float = 10000.0,
        tv_weight: float = 0.0,
        lr: float = 1e-5,
        max_logged_samples: int = 4,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if init not in ("magenta", "random", "checkpoint"):
            raise ValueError(f"model.init={init!r}: expected magenta | random")
        self._check_loss_options()
        self.loss_net = None
        self.network = ArbitraryStyleNetwork(embedding_dim=embedding_dim, contract=tuple(contract),
                                             expand=tuple(expand), num_residual=num_residual,
                                             normalize_contract=normalize_contract)
        if init == "magenta":
            self._init_from_magenta()
        if channels_last:
            self.network.transformer.to(memory_format=torch.channels_last)

    def _init_from_magenta(self) -> None:
        from normapps.tasks.style_transfer.onnx_ports import load_magenta

        hp = self.hparams
        layout = dict(embedding_dim=hp.embedding_dim, contract=tuple(hp.contract), expand=tuple(hp.expand),
                      num_residual=hp.num_residual, normalize_contract=hp.normalize_contract)
        if layout != dict(embedding_dim=100, **MAGENTA_LAYOUT):
            raise ValueError(f"model.init=magenta needs Magenta's layout {dict(embedding_dim=100, **MAGENTA_LAYOUT)}, "
                             f"got {layout}")
        self.network.load_state_dict(load_magenta().state_dict())
        log.info("model=arbitrary_cin: fine-tuning Magenta's pretrained networks")

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "ArbitraryCINModule":
        hp = dict(checkpoint.get("hyper_parameters", {}))
        hp["init"] = "checkpoint"
        module = cls(**hp)
        module.load_state_dict(checkpoint["state_dict"])
        return module

    def trainable(self) -> list[nn.Parameter]:
        net = self.network
        params = list(net.transformer.parameters()) + list(net.style_params.parameters())
        if self.hparams.train_predictor:
            params += list(net.predictor.parameters())
        return params

    def setup(self, stage: str) -> None:
        if not self.hparams.train_predictor:
            self.network.predictor.requires_grad_(False)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        emb = self.network.embed(square_style(style, self.hparams.predict_size))
        return self.network.stylize(self._prep(content), self.network.norm_params(emb))

    def _step(self, batch, stage: str, batch_idx: int = 0):
        content, style = batch
        output = self(content, style)
        with torch.no_grad():
            targets = style_targets(self.features(style), self.hparams.style_loss)
        loss, parts = self.perceptual_losses(content, output, targets)
        self._log(stage, loss, parts, content.shape[0])
        if stage != "train" and batch_idx == 0:
            k = self.hparams.max_logged_samples
            log_image(self, f"{stage}/samples", sample_grid(content[:k], style[:k], output[:k]),
                      caption="content | style | output")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", batch_idx)
