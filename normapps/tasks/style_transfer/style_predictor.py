"""Style prediction for arbitrary CIN (Ghiasi et al. 2017): a style image -> a style embedding ->
every conditional instance norm's (gamma, beta).

The predictor is MobileNet-v2 (Sandler et al. 2018; the distilled predictor of Magenta's
arbitrary stylization): inverted residual blocks with ReLU6, batch norms folded into the
convolutions' biases, global average pooling and a 1x1 bottleneck to the embedding. Its
convolutions pad like TensorFlow's "SAME" (stride-2 layers pad only bottom/right on even sizes),
which is why this is our own module rather than torchvision's MobileNetV2 (symmetric padding,
a different result with the same weights).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) of MobileNet-v2 (width 1.0).
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
# Magenta's arbitrary networks predict styles from 256x256 images.
STYLE_SIZE = 256


class SameConv(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding: ceil(size / stride) outputs, the odd pixel of
    padding at the bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class InvertedResidual(nn.Module):
    """1x1 expansion (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 projection; identity shortcut
    when the shape is kept."""

    def __init__(self, cin: int, cout: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = SameConv(hidden, cout, 1)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.shortcut else y


class StylePredictor(nn.Module):
    """(N, 3, H, W) style images in [0, 1] -> (N, embedding_dim) style embeddings."""

    def __init__(self, *, embedding_dim: int = 100,
                 blocks: Sequence[Sequence[int]] = MOBILENET_V2) -> None:
        super().__init__()
        self.stem = SameConv(3, 32, 3, stride=2)
        layers, cin = [], 32
        for t, c, n, s in blocks:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, stride=s if i == 0 else 1, expansion=t))
                cin = c
        self.blocks = nn.Sequential(*layers)
        self.head = SameConv(cin, 1280, 1)
        self.bottleneck = nn.Linear(1280, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(style))
        x = F.relu6(self.head(self.blocks(x)))
        return self.bottleneck(x.mean(dim=(2, 3)))


class StyleParamHead(nn.Module):
    """Embedding -> every norm layer's (gamma, beta): affine maps (one matrix for all layers).

    Being affine, mixing embeddings mixes the parameters the same way, so style interpolation
    by embedding equals interpolation of every (gamma, beta). Initialized to gamma = 1, beta = 0
    with small weights, so an untrained head starts as plain instance norm.
    """

    def __init__(self, embedding_dim: int, norm_sizes: Sequence[int]) -> None:
        super().__init__()
        self.norm_sizes = list(norm_sizes)
        total = sum(self.norm_sizes)
        self.proj = nn.Linear(embedding_dim, 2 * total)
        with torch.no_grad():
            self.proj.weight.mul_(0.1)
            self.proj.bias.zero_()
            self.proj.bias[:total].fill_(1.0)

    def forward(self, embedding: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = self.proj(embedding.float())
        total = sum(self.norm_sizes)
        gammas = out[:, :total].split(self.norm_sizes, dim=1)
        betas = out[:, total:].split(self.norm_sizes, dim=1)
        return list(zip(gammas, betas))
