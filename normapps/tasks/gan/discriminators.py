"""Discriminators: SN-GAN's standard CNN and ResNet D, with the normalization a config choice.

``d_norm``: ``spectral`` / ``weight`` reparametrize every conv, linear (and, for spectral, the
projection embedding) through the core; ``batch`` / ``layer`` insert core norm layers after the
hidden convs; ``none`` is the plain network. ``num_classes > 0`` adds the projection head
(Miyato & Koyama 2018): ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from normapps.norm import activation_norm_kind, build_norm, check_norm_kind, get_norm_layer, is_weight_norm
from normapps.tasks.gan.attention import SelfAttention2d

# The core's kinds this D supports: those of SN-GAN's D study (Miyato et al. 2018, Table 2).
D_NORMS = ("spectral", "batch", "layer", "weight", "none")
D_ARCHS = ("dcgan", "resnet")


def _attention_after(sizes: list[int], attention_size: int | None) -> int:
    """Index of the first stage whose output is ``attention_size`` maps (-1: no attention)."""
    if attention_size is None:
        return -1
    if attention_size not in sizes:
        raise ValueError(f"gan.attention_size={attention_size}: no discriminator layer outputs "
                         f"{attention_size}x{attention_size} maps; choose one of {sorted(set(sizes))}")
    return sizes.index(attention_size)


class Discriminator(nn.Module):
    """Shared head: features ``phi(x)`` (N, C) -> linear score plus optional projection."""

    def __init__(self, *, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(feat_dim, 1)
        self.embed = nn.Embedding(num_classes, feat_dim) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this is a projection discriminator: pass class labels y")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


class DCGANDiscriminator(Discriminator):
    """SN-GAN's standard CNN D: pairs of 3x3 stride-1 and 4x4 stride-2 convs, LeakyReLU 0.1."""

    def __init__(self, *, num_classes: int = 0, norm: str = "spectral", image_size: int = 32,
                 channels: int = 3, width: int = 64, attention_size: int | None = None) -> None:
        n_down = int(math.log2(image_size // 4))
        chs = [width * 2 ** i for i in range(n_down + 1)]  # 64, 128, 256, 512 at 32 px
        super().__init__(feat_dim=chs[-1], num_classes=num_classes)
        kind = activation_norm_kind(norm)  # weight kinds: no norm layers
        at = _attention_after([image_size // 2 ** i for i in range(n_down + 1)], attention_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, chs[0], 3, 1, 1), nn.LeakyReLU(0.1)]
        if at == 0:
            layers.append(SelfAttention2d(chs[0]))
        for i, (cin, cout) in enumerate(zip(chs, chs[1:]), start=1):
            layers += [nn.Conv2d(cin, cin, 4, 2, 1), build_norm(kind, cin), nn.LeakyReLU(0.1),
                       nn.Conv2d(cin, cout, 3, 1, 1), build_norm(kind, cout), nn.LeakyReLU(0.1)]
            if at == i:
                layers.append(SelfAttention2d(cout))
        self.body = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).sum(dim=(2, 3))


class DBlock(nn.Module):
    """Pre-activation residual block with optional 2x average-pool down-sampling."""

    def __init__(self, cin: int, cout: int, *, kind: str, down: bool, first: bool = False) -> None:
        super().__init__()
        self.first, self.down = first, down
        self.n1 = nn.Identity() if first else build_norm(kind, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.n2 = build_norm(kind, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else None
        self.pool = nn.AvgPool2d(2) if down else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else self.act(self.n1(x))
        h = self.c2(self.act(self.n2(self.c1(h))))
        h = self.pool(h)
        if self.sc is None:
            return h + x
        # The first block pools before its 1x1 conv (the paper's "optimized block").
        s = self.sc(self.pool(x)) if self.first else self.pool(self.sc(x))
        return h + s


class ResNetDiscriminator(Discriminator):
    """SN-GAN ResNet D: 32 px is optimized block + down + 2 plain blocks at ``width`` (128);
    64 px doubles channels per down block from width/16."""

    def __init__(self, *, num_classes: int = 0, norm: str = "spectral", image_size: int = 32,
                 channels: int = 3, width: int = 128, attention_size: int | None = None) -> None:
        kind = activation_norm_kind(norm)  # weight kinds: no norm layers
        if image_size == 32:
            plan = [(channels, width, True), (width, width, True), (width, width, False), (width, width, False)]
        else:
            chs = [max(width // 2 ** i, 8) for i in range(4, -1, -1)]  # w/16 .. w
            plan = [(channels, chs[0], True)] + [(a, b, True) for a, b in zip(chs, chs[1:])]
        super().__init__(feat_dim=plan[-1][1], num_classes=num_classes)
        blocks: list[nn.Module] = []
        sizes, size = [], image_size
        for _, _, down in plan:
            size //= 2 if down else 1
            sizes.append(size)
        at = _attention_after(sizes, attention_size)
        for i, (a, b, d) in enumerate(plan):
            blocks.append(DBlock(a, b, kind=kind, down=d, first=i == 0))
            if i == at:
                blocks.append(SelfAttention2d(b))
        self.blocks = nn.Sequential(*blocks)
        self.act = nn.ReLU()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                gain = math.sqrt(2) if m.weight.dim() == 4 and m.weight.shape[-1] == 3 else 1.0
                nn.init.xavier_uniform_(m.weight, gain)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.blocks(x)).sum(dim=(2, 3))


def build_discriminator(arch: str, *, norm: str, **kw) -> Discriminator:
    norm = check_norm_kind(norm, "model.d_norm", D_NORMS)
    if arch == "dcgan":
        d = DCGANDiscriminator(norm=norm, **kw)
    elif arch == "resnet":
        d = ResNetDiscriminator(norm=norm, **kw)
    else:
        raise ValueError(f"model.d_arch must be one of {D_ARCHS}, got {arch!r}")
    if is_weight_norm(norm):
        get_norm_layer(norm)(d)  # spectral / weight norm on every conv, linear (and embedding)
    return d
