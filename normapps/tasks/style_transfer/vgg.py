"""VGG-19 encoder up to relu4_1, frozen, with three weight sources.

One architecture serves every source: a 1x1 "stem" conv that maps RGB in [0, 1] to the space the
3x3 convs were trained in, then reflection-padded 3x3 convs and ceil-mode 2x2 max-pools (the
layout of the public ``vgg_normalised.pth``). For torchvision's ImageNet weights the stem holds
the ImageNet mean/std normalization, so no caller ever normalizes inputs by hand (mixing the two
input conventions is what gives grey outputs).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from normapps.platform.checkpoint import safe_load

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("auto", "public", "imagenet", "random", "checkpoint")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (in, out) of the 3x3 convs up to relu4_1, split into the slices ending at relu1_1..relu4_1.
_SLICES = (((3, 64),), ((64, 64), (64, 128)), ((128, 128), (128, 256)),
           ((256, 256), (256, 256), (256, 256), (256, 512)))
# Pixels of context each side that relu4_1 needs (receptive field 68), rounded up to a multiple
# of the total stride so tiles keep the pooling grid.
ENCODER_STRIDE = 8
ENCODER_MARGIN = 40

RANDOM_WARNING = (
    "style_transfer: the VGG encoder is RANDOMLY initialized. Training and inference run, but "
    "stylization quality needs pretrained weights: pass model.encoder.path=<vgg_normalised.pth> "
    "(the public pytorch-AdaIN release) or model.encoder.weights=imagenet (torchvision's VGG-19, "
    "downloaded once into the torch hub cache on a machine with internet)."
)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    # Conv2d's own reflect padding equals ReflectionPad2d(1) + Conv2d(padding=0).
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


class VGGEncoder(nn.Module):
    """relu1_1..relu4_1 of VGG-19; ``forward(x, all_layers=False)``; inputs RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        slices = []
        for i, convs in enumerate(_SLICES):
            layers: list[nn.Module] = []
            for j, (cin, cout) in enumerate(convs):
                if i > 0 and j == len(convs) - 1:
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                layers += [conv3x3(cin, cout), nn.ReLU(inplace=True)]
            slices.append(nn.Sequential(*layers))
        self.slices = nn.ModuleList(slices)
        self.set_imagenet_stem()

    def set_imagenet_stem(self) -> None:
        mean = torch.tensor(IMAGENET_MEAN)
        std = torch.tensor(IMAGENET_STD)
        with torch.no_grad():
            self.stem.weight.copy_(torch.diag(1.0 / std).reshape(3, 3, 1, 1))
            self.stem.bias.copy_(-mean / std)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor, all_layers: bool = False):
        x = self.stem(x)
        feats = []
        for block in self.slices:
            x = block(x)
            feats.append(x)
        return feats if all_layers else x


def load_convs(convs: list[nn.Conv2d], state: dict, *, source: str) -> None:
    """Copy the conv weights of a public nn.Sequential state dict (keys ``<index>.weight``) onto
    ``convs`` in order; entries past the last conv needed (e.g. relu4_2..relu5_4) are ignored."""
    indices = sorted({int(k.split(".")[0]) for k in state if k.endswith(".weight")
                      and k.split(".")[0].isdigit()})
    if len(indices) < len(convs):
        raise ValueError(f"{source}: holds {len(indices)} conv layers, the model needs {len(convs)}")
    with torch.no_grad():
        for conv, idx in zip(convs, indices):
            w, b = state[f"{idx}.weight"], state.get(f"{idx}.bias")
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{source}: layer {idx} has weight {tuple(w.shape)}, expected "
                    f"{tuple(conv.weight.shape)} (is this the matching vgg/decoder file?)"
                )
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)


def read_state_dict(path: str | Path) -> dict:
    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(k.endswith(".weight") for k in state):
        raise ValueError(f"{path}: not a state dict of an nn.Sequential (no '<i>.weight' keys)")
    return state


def load_public_encoder(encoder: VGGEncoder, path: str | Path) -> None:
    """``vgg_normalised.pth``: index 0 is the 1x1 conv, then 3x3 convs; first 10 convs used."""
    load_convs(encoder.convs(), read_state_dict(path), source=str(path))


def imagenet_cache_file() -> Path:
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_imagenet_encoder(encoder: VGGEncoder) -> None:
    """torchvision's VGG-19 (ImageNet): from the torch hub cache, downloading when online."""
    from torchvision.models import VGG19_Weights, vgg19

    try:
        tv = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
    except Exception as err:  # URLError, HTTPError, ... when offline
        raise RuntimeError(
            f"model.encoder.weights=imagenet: cannot get torchvision's VGG-19 ImageNet weights "
            f"({type(err).__name__}: {err}). On a machine with internet run once "
            f"`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` "
            f"or copy {VGG19_Weights.IMAGENET1K_V1.url.rsplit('/', 1)[-1]} into "
            f"{imagenet_cache_file().parent}."
        ) from err
    tv_convs = [m for m in tv.features if isinstance(m, nn.Conv2d)]
    state = {f"{i}.weight": c.weight for i, c in enumerate(tv_convs)}
    state.update({f"{i}.bias": c.bias for i, c in enumerate(tv_convs)})
    load_convs(encoder.convs()[1:], state, source="torchvision vgg19")
    encoder.set_imagenet_stem()


def resolve_source(weights: str, path: str | None) -> str:
    """``auto``: the public file when configured and present, else ImageNet weights already in
    the torch hub cache, else random (with a warning)."""
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"model.encoder.weights={weights!r}: expected one of {WEIGHT_SOURCES}")
    if weights != "auto":
        return weights
    if path and Path(path).is_file():
        return "public"
    if path:
        log.warning("model.encoder.path=%s does not exist; looking for other weights", path)
    if imagenet_cache_file().is_file():
        return "imagenet"
    return "random"


def build_encoder(*, weights: str = "auto", path: str | None = None) -> tuple[VGGEncoder, str]:
    """A frozen encoder in eval mode and the weight source actually used."""
    source = resolve_source(weights, path)
    encoder = VGGEncoder()
    if source == "public":
        if not path:
            raise ValueError("model.encoder.weights=public needs model.encoder.path=<vgg_normalised.pth>")
        load_public_encoder(encoder, path)
    elif source == "imagenet":
        load_imagenet_encoder(encoder)
    elif source == "random":
        # He init keeps activation scale through the stack (the default init shrinks it ~10x
        # per layer, leaving relu4_1 features near zero and the losses meaningless).
        for conv in encoder.convs()[1:]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        warnings.warn(RANDOM_WARNING, stacklevel=2)
        log.warning(RANDOM_WARNING)
    # "checkpoint": the caller loads a state dict next.
    encoder.requires_grad_(False)
    return encoder.eval(), source
