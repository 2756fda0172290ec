"""Ports of the pretrained CIN networks: their ONNX initializers (int8 QDQ weights dequantized)
copied into this project's modules through ``normapps.weights``. The foreign graphs are only
read, never executed (tests and the benchmark run them with onnxruntime as the reference).

Layouts found by reading the graphs with the ``onnx`` package:
- ``multistyle26.onnx`` (float, NCHW): ``{contract.i, res.k.j, expand.i}.w`` convolutions
  without bias, each followed by a conditional instance norm whose ``norm.gamma``/``norm.beta``
  tables (26, C) are mixed by the ``style_weights`` input; biased variance, eps 1e-5;
  reflection padding; nearest x2 resizes (asymmetric, floor); sigmoid output.
- ``arbitrary_predict.onnx`` (int8 QDQ, NHWC input transposed to NCHW): MobileNet-v2 with folded
  batch norms, ReLU6 as Clip(0, 6), TensorFlow SAME padding, mean pooling, a 1x1 conv to 100.
- ``arbitrary_transform.onnx`` (int8 QDQ): reflection pads, contract convs with bias + ReLU,
  13 instance norms (GlobalAveragePool moments, eps 1e-5 stored as int8 127 x 7.87e-8) whose
  gamma (``StyleNorm/Conv_1``) and beta (``StyleNorm/Conv``) are 1x1 convs of the embedding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from normapps.tasks.style_transfer.arbitrary_net import (
    MAGENTA_LAYOUT,
    MULTISTYLE26_LAYOUT,
    ArbitraryStyleNetwork,
)
from normapps.tasks.style_transfer.cin_transformer import CINTransformer
from normapps.weights import WeightError, load_onnx, locate, read_arrays

MULTISTYLE_ENTRY = "multistyle26"
PREDICT_ENTRY = "magenta_style_predict"
TRANSFORM_ENTRY = "magenta_style_transform"
NUM_PACKAGED_STYLES = 26


def _copy(param: torch.Tensor, array: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.array(array, dtype=np.float32)).reshape(param.shape))


def _conv_inputs(path: Path, entry: str) -> dict[str, tuple[str, str | None]]:
    """Layer name -> (weight tensor, bias tensor) of every Conv node, the layer name being the
    weight's name without its ``/weights_dequant`` (or ``/depthwise_weights_dequant``) suffix."""
    layers = {}
    for node in load_onnx(path).graph.node:
        if node.op_type != "Conv":
            continue
        weight = node.input[1]
        for suffix in ("/depthwise_weights_dequant", "/weights_dequant"):
            if weight.endswith(suffix):
                layers[weight[: -len(suffix)]] = (weight, node.input[2] if len(node.input) > 2 else None)
                break
    if not layers:
        raise WeightError(f"{entry}: {path} has no quantized Conv layers (not the expected network?)")
    return layers


def _read_layers(path: Path, entry: str, wanted: dict[str, tuple[nn.Module, bool]]) -> None:
    """Copy weight (and bias when asked) of each named ONNX layer into its torch module."""
    convs = _conv_inputs(path, entry)
    missing = [name for name in wanted if name not in convs]
    if missing:
        raise WeightError(f"{entry}: {path} has no layer {missing[0]!r} (not the expected network?)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (module, with_bias) in wanted.items():
        weight, bias = convs[name]
        shapes[weight] = tuple(module.weight.shape) if module.weight.dim() == 4 else (*module.weight.shape, 1, 1)
        if with_bias:
            if bias is None:
                raise WeightError(f"{entry}: {path}: layer {name!r} has no bias")
            shapes[bias] = (module.weight.shape[0],)
    arrays = read_arrays(path, shapes, entry=entry)
    for name, (module, with_bias) in wanted.items():
        weight, bias = convs[name]
        _copy(module.weight, arrays[weight])
        if with_bias:
            _copy(module.bias, arrays[bias])


def load_multistyle26(path: str | Path | None = None) -> CINTransformer:
    """The packaged 26-style CIN network as a :class:`CINTransformer` (float weights, exact)."""
    path = locate(MULTISTYLE_ENTRY, path=path)
    net = CINTransformer(num_styles=NUM_PACKAGED_STYLES, **MULTISTYLE26_LAYOUT)
    names = ([f"contract.{i}" for i in range(3)]
             + [f"res.{k}.{j}" for k in range(len(net.residual)) for j in range(2)]
             + [f"expand.{i}" for i in range(3)])
    convs = list(net.contract) + [c for block in net.residual for c in block] + list(net.expand)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, conv, norm in zip(names, convs, net.norms):
        shapes[f"{name}.w"] = tuple(conv.weight.shape)
        shapes[f"{name}.norm.gamma"] = shapes[f"{name}.norm.beta"] = (NUM_PACKAGED_STYLES, norm.num_features)
    arrays = read_arrays(path, shapes, entry=MULTISTYLE_ENTRY, dequantize=False)
    for name, conv, norm in zip(names, convs, net.norms):
        _copy(conv.weight, arrays[f"{name}.w"])
        _copy(norm.affine.weight, arrays[f"{name}.norm.gamma"])
        _copy(norm.affine.bias, arrays[f"{name}.norm.beta"])
    return net.eval()


def _transform_norm_layers(net: ArbitraryStyleNetwork) -> list[str]:
    t = net.transformer
    return ([f"transformer/residual/residual{k + 1}/conv{j + 1}" for k in range(len(t.residual)) for j in range(2)]
            + [f"transformer/expand/conv{i + 1}/conv" for i in range(3)])


def load_magenta(predict_path: str | Path | None = None,
                 transform_path: str | Path | None = None) -> ArbitraryStyleNetwork:
    """Magenta's arbitrary stylization networks (int8 weights dequantized to float32)."""
    predict_path = locate(PREDICT_ENTRY, path=predict_path)
    transform_path = locate(TRANSFORM_ENTRY, path=transform_path)
    net = ArbitraryStyleNetwork(embedding_dim=100, **MAGENTA_LAYOUT)
    _load_predictor(net, predict_path)
    _load_transformer(net, transform_path)
    return net.eval()


def _load_predictor(net: ArbitraryStyleNetwork, path: Path) -> None:
    p = net.predictor
    wanted: dict[str, tuple[nn.Module, bool]] = {"MobilenetV2/Conv": (p.stem, True),
                                                 "MobilenetV2/Conv_1": (p.head, True),
                                                 "mobilenet_conv/Conv": (p.bottleneck, True)}
    for i, block in enumerate(p.blocks):
        prefix = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
        if block.expand is not None:
            wanted[f"{prefix}/expand"] = (block.expand, True)
        wanted[f"{prefix}/depthwise"] = (block.depthwise, True)
        wanted[f"{prefix}/project"] = (block.project, True)
    _read_layers(path, PREDICT_ENTRY, wanted)


def _load_transformer(net: ArbitraryStyleNetwork, path: Path) -> None:
    t = net.transformer
    wanted: dict[str, tuple[nn.Module, bool]] = {
        f"transformer/contract/conv{i + 1}": (conv, True) for i, conv in enumerate(t.contract)}
    normed = [c for block in t.residual for c in block] + list(t.expand)
    layers = _transform_norm_layers(net)
    for name, conv in zip(layers, normed):
        wanted[name] = (conv, False)  # the bias before an instance norm cancels
    _read_layers(path, TRANSFORM_ENTRY, wanted)
    # The style-parameter 1x1 convs: gamma = StyleNorm/Conv_1, beta = StyleNorm/Conv.
    convs = _conv_inputs(path, TRANSFORM_ENTRY)
    shapes, order = {}, []
    for name, size in zip(layers, t.norm_sizes()):
        for kind in ("Conv_1", "Conv"):
            key = f"style_params/{name}/StyleNorm/{kind}"
            if key not in convs:
                raise WeightError(f"{TRANSFORM_ENTRY}: {path} has no layer {key!r}")
            weight, bias = convs[key]
            shapes[weight], shapes[bias] = (size, net.style_params.proj.in_features, 1, 1), (size,)
            order.append((kind, weight, bias))
    arrays = read_arrays(path, shapes, entry=TRANSFORM_ENTRY)
    gamma_w = [arrays[w][:, :, 0, 0] for kind, w, _ in order if kind == "Conv_1"]
    gamma_b = [arrays[b] for kind, _, b in order if kind == "Conv_1"]
    beta_w = [arrays[w][:, :, 0, 0] for kind, w, _ in order if kind == "Conv"]
    beta_b = [arrays[b] for kind, _, b in order if kind == "Conv"]
    proj = net.style_params.proj
    _copy(proj.weight, np.concatenate(gamma_w + beta_w, axis=0))
    _copy(proj.bias, np.concatenate(gamma_b + beta_b, axis=0))
