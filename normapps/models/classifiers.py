"""Classifiers whose every norm layer is a config choice: small CNN, CIFAR VGG/ResNet, torchvision ResNets."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from normapps.norm import build_norm

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str, norm_kwargs: dict[str, Any] | None = None) -> NormFactory:
    return partial(build_norm, norm, **(norm_kwargs or {}))


def conv_norm_act(cin: int, cout: int, norm: NormFactory, *, stride: int = 1) -> nn.Sequential:
    # No conv bias: the norm's shift replaces it (and fold_bn restores it for inference).
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Five conv-norm-ReLU layers and a linear head; for 8x8 to 32x32 inputs."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, width: int = 32,
                 norm: NormFactory) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_norm_act(in_channels, w, norm), conv_norm_act(w, w, norm), nn.MaxPool2d(2),
            conv_norm_act(w, 2 * w, norm), conv_norm_act(2 * w, 2 * w, norm), nn.MaxPool2d(2),
            conv_norm_act(2 * w, 4 * w, norm),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


VGG_LAYOUTS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """VGG for small images as in network slimming (conv-norm-ReLU, global pool, one linear)."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, layout: str = "vgg11",
                 width_mult: float = 1.0, norm: NormFactory) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for item in VGG_LAYOUTS[layout]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = max(8, int(item * width_mult))
                layers.append(conv_norm_act(cin, cout, norm))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, *, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (depth 6n+2: 20, 32, 56, ...), width 16-32-64 times ``width/16``."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, depth: int = 20, width: int = 16,
                 norm: NormFactory) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  norm(width), nn.ReLU(inplace=True))
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if stage > 0 and i == 0 else 1, norm=norm))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def torchvision_resnet(name: str, *, num_classes: int, in_channels: int, norm: NormFactory) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, norm_layer=norm)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand - 3x3 depthwise - 1x1 linear projection, BN after each
    conv, ReLU6 after the first two, identity shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, *, stride: int, expand: int, norm: NormFactory) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), norm(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   norm(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), norm(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) for small images: stride-1 stem, inverted residual
    stages (expansion t, channels c, repeats n, stride s), 1x1 head conv, global pool, linear.
    The depthwise convs and ReLU6 are what makes it hard to quantize per tensor (Nagel et al.
    2019's motivating case)."""

    # (t, c, n, s) for 32x32 inputs: five stages down to 4x4.
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(self, *, num_classes: int, in_channels: int = 3, width_mult: float = 1.0,
                 norm: NormFactory) -> None:
        super().__init__()

        def ch(c: int) -> int:  # multiples of 8, as MobileNetV2's width multiplier rounds
            return max(8, int(c * width_mult + 4) // 8 * 8)

        stem = ch(32)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                                                 norm(stem), nn.ReLU6(inplace=True))]
        cin = stem
        for t, c, n, s in self.STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), stride=s if i == 0 else 1, expand=t, norm=norm))
                cin = ch(c)
        last = ch(256)
        layers.append(nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), norm(last), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


CLASSIFIER_ARCHS = ("small_cnn", "vgg11", "vgg16", "vgg19", "cifar_resnet", "mobilenet_v2", "resnet18",
                    "resnet34", "resnet50")


def build_classifier(arch: str, *, num_classes: int, in_channels: int = 3, norm: str = "batch",
                     norm_kwargs: dict[str, Any] | None = None, width: int | None = None,
                     depth: int = 20, width_mult: float = 1.0) -> nn.Module:
    nf = norm_factory(norm, norm_kwargs)
    if arch == "small_cnn":
        return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width or 32, norm=nf)
    if arch in VGG_LAYOUTS:
        return CifarVGG(num_classes=num_classes, in_channels=in_channels, layout=arch,
                        width_mult=width_mult, norm=nf)
    if arch == "cifar_resnet":
        return CifarResNet(num_classes=num_classes, in_channels=in_channels, depth=depth,
                           width=width or 16, norm=nf)
    if arch == "mobilenet_v2":
        return MobileNetV2(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult, norm=nf)
    if arch.startswith("resnet"):
        return torchvision_resnet(arch, num_classes=num_classes, in_channels=in_channels, norm=nf)
    raise ValueError(f"unknown classifier arch {arch!r}; choose from {', '.join(CLASSIFIER_ARCHS)}")
