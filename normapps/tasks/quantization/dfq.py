"""Data-free quantization (Nagel et al. 2019): BN folding, cross-layer equalization and bias
correction, all from the BN statistics the float model already carries.

After folding, the BN that followed a conv says how that conv's output is distributed:
per channel ``N(beta, gamma^2)``. Equalization rescales those channels, so the statistics are
rescaled with them; bias correction then pushes them through the ReLU to get the expected
input of the next layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from normapps.norm import bn_modules, fold_bn

# Positively homogeneous per-channel ops: f(s * x) = s * f(x) for s > 0, channel by channel.
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity,
                        nn.Flatten, nn.Dropout)
_HOMOGENEOUS_FUNCTIONS = (torch.relu, torch.flatten, nn.functional.relu)
_LAYERS = (nn.Conv2d, nn.Linear)


@dataclass
class PreActStats:
    """Per-channel mean and std of a layer's output before its activation."""

    mean: torch.Tensor
    std: torch.Tensor


@dataclass
class LayerPair:
    """``first -> (ReLU / pooling / flatten ...) -> second``, with nothing else reading
    ``first``'s output on the way: the pair CLE may rescale and bias correction may use."""

    first: str
    second: str
    through_relu: bool


def fold_bn_with_stats(model: nn.Module) -> tuple[nn.Module, dict[str, PreActStats]]:
    """Core ``fold_bn`` plus, for every folded conv, its BN's ``(beta, |gamma|)``: the
    distribution of the conv's folded output."""
    bn_stats = {name: PreActStats(bn.bias.detach().clone() if bn.affine else torch.zeros_like(bn.running_mean),
                                  (bn.weight.detach().abs().clone() if bn.affine else torch.ones_like(bn.running_mean)))
                for name, bn in bn_modules(model) if bn.running_mean is not None}
    folded = fold_bn(model)
    gm = torch.fx.symbolic_trace(folded)
    stats = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in bn_stats:
            continue
        if not isinstance(gm.get_submodule(node.target), nn.Identity):
            continue  # this BN was not folded
        src = node.args[0]
        if isinstance(src, torch.fx.Node) and src.op == "call_module":
            stats[src.target] = bn_stats[node.target]
    return folded, stats


def _is_homogeneous(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCTIONS
    if node.op == "call_method":
        return node.target in ("flatten", "relu", "view", "reshape")
    return False


def _is_relu(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    return (node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)) or (
        node.op == "call_method" and node.target == "relu")


def _channels_out(layer: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(layer, attr):
            return int(getattr(layer, attr))
    raise TypeError(f"no channel count on {type(layer).__name__}")


def find_layer_pairs(model: nn.Module, *, first_types: tuple[type, ...] = _LAYERS) -> list[LayerPair]:
    """Consecutive (conv|linear, conv|linear) pairs joined only by positively homogeneous
    per-channel ops; grouped convs are skipped (their channels mix differently).
    ``first_types=(nn.BatchNorm2d,)`` finds (BN, next layer) pairs of an unfolded model."""
    gm = torch.fx.symbolic_trace(model)
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), first_types):
            continue
        first = gm.get_submodule(node.target)
        if getattr(first, "groups", 1) != 1:
            continue
        cur, relu = node, False
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(gm.get_submodule(nxt.target), _LAYERS):
                second = gm.get_submodule(nxt.target)
                n_out = _channels_out(first)
                n_in = second.in_channels if isinstance(second, nn.Conv2d) else second.in_features
                if getattr(second, "groups", 1) == 1 and n_in == n_out and nxt.args[0] is cur:
                    pairs.append(LayerPair(node.target, nxt.target, relu))
                break
            if not _is_homogeneous(gm, nxt) or nxt.args[0] is not cur:
                break
            relu = relu or _is_relu(gm, nxt)
            cur = nxt
    return pairs


def _out_ranges(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().abs().flatten(1).amax(1)


def _in_ranges(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().abs().transpose(0, 1).flatten(1).amax(1)


@torch.no_grad()
def cross_layer_equalization(model: nn.Module, pairs: list[LayerPair],
                             stats: dict[str, PreActStats] | None = None, *,
                             iterations: int = 3) -> nn.Module:
    """Equalize per-channel weight ranges in place: for each pair, with ``r1`` the range of
    output channel i of the first layer and ``r2`` that of input channel i of the second,
    ``s = sqrt(r1 * r2) / r1``; the first layer's channel is multiplied by ``s`` and the
    second's divided, which ReLU's positive homogeneity makes an exact reparametrization.
    Iterated because a layer in the middle of a chain belongs to two pairs."""
    for _ in range(iterations):
        for pair in pairs:
            first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
            r1, r2 = _out_ranges(first), _in_ranges(second)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 * r2) / r1.clamp_min(1e-12), torch.ones_like(r1))
            shape1 = (-1,) + (1,) * (first.weight.dim() - 1)
            first.weight.mul_(s.view(shape1))
            if first.bias is not None:
                first.bias.mul_(s)
            shape2 = (1, -1) + (1,) * (second.weight.dim() - 2)
            second.weight.div_(s.view(shape2))
            if stats is not None and pair.first in stats:
                st = stats[pair.first]
                stats[pair.first] = PreActStats(st.mean * s, st.std * s)
    return model


def expected_relu_output(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[max(0, z)] for z ~ N(mean, std^2), per channel (the clipped-normal mean)."""
    std = std.clamp_min(1e-8)
    a = mean / std
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    return std * pdf + mean * cdf


def quantize_weight(weight: torch.Tensor, *, per_channel: bool) -> torch.Tensor:
    """Fake-quantized weight exactly as torch's x86 weight observers quantize it
    (symmetric int8, per output channel or per tensor)."""
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    w = weight.detach().float()
    if per_channel:
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        obs(w)
        scale, zp = obs.calculate_qparams()
        return torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, -128, 127)
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    obs(w)
    scale, zp = obs.calculate_qparams()
    return torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), -128, 127)


def expected_input(pair: LayerPair, stats: dict[str, PreActStats]) -> torch.Tensor | None:
    st = stats.get(pair.first)
    if st is None:
        return None
    # Pooling between the layers is treated as mean-preserving (exact for average pooling,
    # a slight underestimate for max pooling).
    return expected_relu_output(st.mean, st.std) if pair.through_relu else st.mean


@torch.no_grad()
def bias_correction(model: nn.Module, pairs: list[LayerPair], stats: dict[str, PreActStats], *,
                    per_channel: bool) -> list[str]:
    """Subtract the expected output shift of weight quantization, ``E[dW x] = dW E[x]``, from
    each second layer's bias, with ``E[x]`` from the BN statistics (borders ignored).
    Returns the corrected layers."""
    corrected = []
    for pair in pairs:
        mean_in = expected_input(pair, stats)
        if mean_in is None:
            continue
        layer = model.get_submodule(pair.second)
        dw = quantize_weight(layer.weight, per_channel=per_channel) - layer.weight.float()
        shift = dw.flatten(2).sum(2) @ mean_in if dw.dim() > 2 else dw @ mean_in
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(shift))
        layer.bias.sub_(shift.to(layer.bias.dtype))
        corrected.append(pair.second)
    return corrected


def data_free_prepare(model: nn.Module, *, per_channel: bool, equalize: bool = True,
                      correct_bias: bool = True, iterations: int = 3) -> tuple[nn.Module, dict]:
    """Folded float model with CLE and bias correction applied (ready for int8 conversion)."""
    folded, stats = fold_bn_with_stats(model)
    pairs = find_layer_pairs(folded)
    if equalize:
        cross_layer_equalization(folded, pairs, stats, iterations=iterations)
    corrected = bias_correction(folded, pairs, stats, per_channel=per_channel) if correct_bias else []
    info = {"pairs": len(pairs), "bias_corrected": len(corrected)}
    return folded, info
