"""Activation normalization of a VGG encoder (Gatys et al. 2016, "normalised" VGG).

Each 3x3 filter is rescaled so that its mean post-ReLU activation over a set of images and all
positions is 1; the next layer's input weights are multiplied back, so the network computes the
same function up to a positive per-channel scale of every feature map (ReLU and max-pooling
commute with it). The public ``vgg_normalised.pth`` of the AdaIN release was made this way; with
raw ImageNet/Caffe weights the AdaIN losses are 1e4-1e5x larger and the paper's loss weights and
learning rate do not transfer. Normalizing every encoder gives them all that common scale.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Bundled scikit-image photos and textures (no network): the statistics images.
CALIBRATION_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "retina",
                      "hubble_deep_field", "immunohistochemistry", "brick", "grass", "gravel",
                      "colorwheel", "camera", "coins", "china", "flower")
CALIBRATION_SIZE = 224


def calibration_batch(size: int = CALIBRATION_SIZE) -> torch.Tensor:
    """The bundled statistics images, shorter side resized to ``size`` and centre-cropped."""
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    from normapps.data.bundled import bundled_image

    out = []
    for name in CALIBRATION_IMAGES:
        img = resize(bundled_image(name), size, antialias=True)
        out.append(center_crop(pil_to_tensor(img), [size, size]).float() / 255.0)
    return torch.stack(out)


def _flat_layers(encoder: nn.Module) -> list[nn.Module]:
    layers = [encoder.stem]
    for block in encoder.slices:
        layers += list(block)
    return layers


@torch.no_grad()
def normalize_activations(encoder: nn.Module, images: torch.Tensor | None = None, *,
                          chunk: int = 4) -> list[torch.Tensor]:
    """Rescale ``encoder``'s 3x3 convs in place so each filter's mean activation on ``images``
    is 1; returns the per-layer divisors applied (dead filters, mean 0, keep divisor 1)."""
    if images is None:
        images = calibration_batch()
    layers = _flat_layers(encoder)
    x = [layers[0](images[i:i + chunk]) for i in range(0, len(images), chunk)]
    scales: list[torch.Tensor] = []
    prev: torch.Tensor | None = None
    for layer in layers[1:]:
        if isinstance(layer, nn.Conv2d):
            if prev is not None:
                # The previous feature map was divided by `prev`: undo it on this layer's input.
                layer.weight.mul_(prev.view(1, -1, 1, 1))
            mean = sum(F.relu(layer(xi)).double().sum(dim=(0, 2, 3)) for xi in x)
            count = sum(xi.shape[0] * xi.shape[2] * xi.shape[3] for xi in x)
            mean = (mean / count).float()
            scale = torch.where(mean > 1e-12, mean, torch.ones_like(mean))
            layer.weight.div_(scale.view(-1, 1, 1, 1))
            layer.bias.div_(scale)
            scales.append(scale)
            prev = scale
        x = [layer(xi) for xi in x]
    return scales


@torch.no_grad()
def apply_scales(encoder: nn.Module, scales: Sequence[torch.Tensor]) -> None:
    """Apply divisors recorded by ``normalize_activations`` to freshly loaded weights, giving
    bit-for-bit the same normalized encoder without the statistics images."""
    convs = [m for m in _flat_layers(encoder)[1:] if isinstance(m, nn.Conv2d)]
    if len(convs) != len(scales):
        raise ValueError(f"{len(scales)} activation-normalization scales for {len(convs)} convs")
    prev = None
    for conv, scale in zip(convs, scales):
        scale = torch.as_tensor(scale, dtype=conv.weight.dtype)
        if scale.shape != (conv.out_channels,):
            raise ValueError(f"activation-normalization scale of shape {tuple(scale.shape)} for a "
                             f"conv with {conv.out_channels} filters")
        if prev is not None:
            conv.weight.mul_(prev.view(1, -1, 1, 1))
        conv.weight.div_(scale.view(-1, 1, 1, 1))
        conv.bias.div_(scale)
        prev = scale
