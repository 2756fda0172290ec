"""Generators: a DCGAN-style CNN and the SN-GAN ResNet generator, for 32 and 64 px.

Every norm layer comes from :func:`normapps.norm.build_norm`; ``g_norm`` picks its kind:
``batch`` (plain BN), ``cond_batch`` (class-conditional BN, needs labels), ``self_mod``
(gamma/beta from z through a small MLP, Chen et al. 2019) or ``none``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from normapps.norm import NORM_REGISTRY, build_norm, check_norm_kind, get_norm_layer
from normapps.tasks.gan.attention import SelfAttention2d

# The core's kinds this G supports: plain BN, and the ones conditioned on labels or latents.
G_NORMS = ("batch", "cond_batch", "self_mod", "none")
G_ARCHS = ("dcgan", "resnet")
IMAGE_SIZES = (32, 64)


class GNorm(nn.Module):
    """One generator norm layer with a uniform ``forward(x, y, z)``: conditional kinds get the
    label, self-modulated ones the latent, the rest ignore both."""

    def __init__(self, kind: str, num_features: int, *, num_classes: int, z_dim: int) -> None:
        super().__init__()
        self.kind = kind
        # What forward passes besides x, from the core's registry: "y" (labels), "z" (latent), None.
        self.condition = NORM_REGISTRY[kind].condition
        kw = {"y": {"num_classes": num_classes}, "z": {"z_dim": z_dim}}.get(self.condition, {})
        self.norm = build_norm(kind, num_features, **kw)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        if self.condition == "y":
            return self.norm(x, y)
        if self.condition == "z":
            return self.norm(x, z)
        return self.norm(x)


def attention_layers(sizes: list[int], channels: list[int], attention_size: int | None,
                     where: str) -> nn.ModuleList:
    """One entry per stage (output size ``sizes[i]``, ``channels[i]`` channels): a
    SelfAttention2d at the stage producing ``attention_size`` maps, nn.Identity elsewhere."""
    if attention_size is not None and attention_size not in sizes:
        raise ValueError(f"gan.attention_size={attention_size}: no {where} layer outputs "
                         f"{attention_size}x{attention_size} maps; choose one of {sorted(set(sizes))}")
    first = sizes.index(attention_size) if attention_size is not None else -1
    return nn.ModuleList(SelfAttention2d(c) if i == first else nn.Identity()
                         for i, c in enumerate(channels))


def _num_upsamplings(image_size: int) -> int:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"data.image_size must be one of {IMAGE_SIZES} for the GAN task, got {image_size}")
    return int(math.log2(image_size // 4))


class Generator(nn.Module):
    """Shared latent handling: ``forward(z, y=None)`` returns images in [-1, 1]."""

    def __init__(self, *, z_dim: int, num_classes: int, norm: str, image_size: int, channels: int) -> None:
        super().__init__()
        norm = check_norm_kind(norm, "model.g_norm", G_NORMS)
        self.z_dim, self.num_classes, self.norm_kind = z_dim, num_classes, norm
        self.image_size, self.channels = image_size, channels

    @property
    def conditional(self) -> bool:
        return NORM_REGISTRY[self.norm_kind].condition == "y"

    def _check(self, z: torch.Tensor, y: torch.Tensor | None) -> None:
        if self.conditional and y is None:
            raise ValueError("this generator uses cond_batch: pass class labels y")

    def _norm(self, c: int) -> GNorm:
        return GNorm(self.norm_kind, c, num_classes=self.num_classes, z_dim=self.z_dim)


class DCGANGenerator(Generator):
    """SN-GAN's "standard CNN" generator: linear to 4x4, stride-2 deconvs, BN+ReLU, tanh."""

    def __init__(self, *, z_dim: int = 128, num_classes: int = 0, norm: str = "batch",
                 image_size: int = 32, channels: int = 3, width: int = 64,
                 attention_size: int | None = None) -> None:
        super().__init__(z_dim=z_dim, num_classes=num_classes, norm=norm, image_size=image_size,
                         channels=channels)
        n_up = _num_upsamplings(image_size)
        chs = [width * 2 ** (n_up - i) for i in range(n_up + 1)]  # e.g. 512, 256, 128, 64
        self.bottom = chs[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * chs[0])
        self.norm0 = self._norm(chs[0])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(cin, cout, 4, 2, 1) for cin, cout in zip(chs, chs[1:]))
        self.norms = nn.ModuleList(self._norm(c) for c in chs[1:])
        self.attn = attention_layers([8 * 2 ** i for i in range(n_up)], chs[1:], attention_size, "generator")
        self.out = nn.Conv2d(chs[-1], channels, 3, 1, 1)
        self.act = nn.ReLU()

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check(z, y)
        h = self.fc(z).view(z.shape[0], self.bottom, 4, 4)
        h = self.act(self.norm0(h, y, z))
        for up, norm, attn in zip(self.ups, self.norms, self.attn):
            h = attn(self.act(norm(up(h), y, z)))
        return torch.tanh(self.out(h))


class GBlock(nn.Module):
    """Pre-activation up-sampling residual block (norm-ReLU-up-conv-norm-ReLU-conv)."""

    def __init__(self, cin: int, cout: int, make_norm) -> None:
        super().__init__()
        self.n1, self.n2 = make_norm(cin), make_norm(cout)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, y, z) -> torch.Tensor:
        h = self.c1(self.up(self.act(self.n1(x, y, z))))
        h = self.c2(self.act(self.n2(h, y, z)))
        return h + self.sc(self.up(x))


class ResNetGenerator(Generator):
    """SN-GAN ResNet generator (Miyato et al. 2018, appendix): 32 px uses ``width`` (256)
    channels throughout; 64 px starts at ``width`` and halves per block."""

    def __init__(self, *, z_dim: int = 128, num_classes: int = 0, norm: str = "batch",
                 image_size: int = 32, channels: int = 3, width: int = 256,
                 attention_size: int | None = None) -> None:
        super().__init__(z_dim=z_dim, num_classes=num_classes, norm=norm, image_size=image_size,
                         channels=channels)
        n_up = _num_upsamplings(image_size)
        # 32 px: constant width; 64 px: width at 4x4, halved per block (width=1024 is the
        # paper's 64 px model).
        chs = [width] * (n_up + 1) if image_size == 32 else [max(width // 2 ** i, 8) for i in range(n_up + 1)]
        self.bottom = chs[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * chs[0])
        self.blocks = nn.ModuleList(GBlock(a, b, self._norm) for a, b in zip(chs, chs[1:]))
        self.attn = attention_layers([8 * 2 ** i for i in range(n_up)], chs[1:], attention_size, "generator")
        self.norm_out = self._norm(chs[-1])
        self.out = nn.Conv2d(chs[-1], channels, 3, 1, 1)
        self.act = nn.ReLU()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not self.out:
                nn.init.xavier_uniform_(m.weight, math.sqrt(2) if m.weight.shape[-1] == 3 else 1.0)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check(z, y)
        h = self.fc(z).view(z.shape[0], self.bottom, 4, 4)
        for block, attn in zip(self.blocks, self.attn):
            h = attn(block(h, y, z))
        return torch.tanh(self.out(self.act(self.norm_out(h, y, z))))


def build_generator(arch: str, *, spectral_norm: bool = False, **kw) -> Generator:
    """``spectral_norm``: every conv and linear of G spectral-normalized (SAGAN, BigGAN), the
    norm layers' own gains left alone."""
    if arch == "dcgan":
        g = DCGANGenerator(**kw)
    elif arch == "resnet":
        g = ResNetGenerator(**kw)
    else:
        raise ValueError(f"model.g_arch must be one of {G_ARCHS}, got {arch!r}")
    if spectral_norm:
        get_norm_layer("spectral")(g, exclude=(GNorm,))
    return g
