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
    per-channel ops. Grouped and depthwise convs pair too (an output channel of the first is an
    input channel of the second whatever the groups: the scaling stays per channel), which is
    what MobileNet-style expand -> depthwise -> project chains need.
    ``first_types=(nn.BatchNorm2d,)`` finds (BN, next layer) pairs of an unfolded model."""
    gm = torch.fx.symbolic_trace(model)
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), first_types):
            continue
        first = gm.get_submodule(node.target)
        cur, relu = node, False
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(gm.get_submodule(nxt.target), _LAYERS):
                second = gm.get_submodule(nxt.target)
                n_out = _channels_out(first)
                n_in = second.in_channels if isinstance(second, nn.Conv2d) else second.in_features
                if n_in == n_out and nxt.args[0] is cur:
                    pairs.append(LayerPair(node.target, nxt.target, relu))
                break
            if not _is_homogeneous(gm, nxt) or nxt.args[0] is not cur:
                break
            relu = relu or _is_relu(gm, nxt)
            cur = nxt
    return pairs


def _out_ranges(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().abs().flatten(1).amax(1)


def weight_range_spread(model: nn.Module) -> dict[str, float]:
    """How much per-tensor int8 weights suffer, per conv/linear: the largest output channel's
    weight range over the median channel's (one int8 scale serves them all, so a channel whose
    range is k times smaller keeps about log2(k) bits fewer). Nagel et al.'s motivating case,
    ImageNet MobileNetV2 after BN folding, spans over 100x in its first depthwise conv; DFQ's
    equalization exists to shrink this."""
    spread = {}
    for name, layer in model.named_modules():
        if isinstance(layer, _LAYERS):
            r = _out_ranges(layer)
            spread[name] = float(r.max() / r.median().clamp_min(1e-12))
    return spread


def _by_group(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The weight as (groups, out per group, in per group, kernel elements): input channel j
    of a grouped conv is column j % (in/groups) of the rows of group j // (in/groups)."""
    c_out, c_in_g = weight.shape[0], weight.shape[1]
    return weight.reshape(groups, c_out // groups, c_in_g, -1)


def _in_ranges(layer: nn.Module) -> torch.Tensor:
    w = _by_group(layer.weight.detach().abs(), getattr(layer, "groups", 1))
    return w.amax(dim=(1, 3)).flatten()


def _scale_inputs(layer: nn.Module, s: torch.Tensor) -> None:
    """Divide every weight that reads input channel j by ``s[j]`` (in place)."""
    groups = getattr(layer, "groups", 1)
    w = _by_group(layer.weight.data, groups)
    w.div_(s.view(groups, 1, -1, 1))


def _input_response(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_j W[o, j] * x_j`` per output channel o for a per-input-channel constant ``x``
    (the kernel summed: exact for a constant input away from the borders)."""
    groups = getattr(layer, "groups", 1)
    w = _by_group(weight, groups).sum(-1)  # (g, out/g, in/g)
    return (w @ x.to(w.dtype).view(groups, -1, 1)).flatten()


@torch.no_grad()
def cross_layer_equalization(model: nn.Module, pairs: list[LayerPair],
                             stats: dict[str, PreActStats] | None = None, *,
                             iterations: int = 100, tolerance: float = 1e-4) -> int:
    """Equalize per-channel weight ranges in place: for each pair, with ``r1`` the range of
    output channel i of the first layer and ``r2`` that of input channel i of the second,
    ``s = sqrt(r1 * r2) / r1``; the first layer's channel is multiplied by ``s`` and the
    second's divided, which ReLU's positive homogeneity makes an exact reparametrization.

    A layer in the middle of a chain (a depthwise conv between its expand and project convs)
    belongs to two pairs, so sweeps over all pairs repeat until every scale of a sweep is
    within ``tolerance`` of 1 (Nagel et al. iterate to convergence), at most ``iterations``
    sweeps. Returns the number of sweeps run."""
    for sweep in range(1, iterations + 1):
        worst = 0.0
        for pair in pairs:
            first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
            r1, r2 = _out_ranges(first), _in_ranges(second)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 * r2) / r1.clamp_min(1e-12), torch.ones_like(r1))
            worst = max(worst, float((s - 1).abs().max()))
            shape1 = (-1,) + (1,) * (first.weight.dim() - 1)
            first.weight.mul_(s.view(shape1))
            if first.bias is not None:
                first.bias.mul_(s)
            _scale_inputs(second, s)
            if stats is not None and pair.first in stats:
                st = stats[pair.first]
                stats[pair.first] = PreActStats(st.mean * s, st.std * s)
        if worst < tolerance:
            return sweep
    return iterations


@torch.no_grad()
def absorb_high_bias(model: nn.Module, pairs: list[LayerPair], stats: dict[str, PreActStats], *,
                     n_std: float = 3.0) -> list[str]:
    """High-bias absorption (Nagel et al. 2019, Sec. 4.1.1): for a pair through ReLU, the part
    ``c = max(0, beta - 3 gamma)`` of a channel's pre-activation that is (almost) always above 0
    passes the ReLU unchanged, so it is moved out of the first layer's bias into the second
    layer's (``b2 += W2 c``): activation ranges shrink with the function kept wherever the
    pre-activation exceeds c. Returns the first layers changed."""
    absorbed = []
    for pair in pairs:
        st = stats.get(pair.first)
        first = model.get_submodule(pair.first)
        if st is None or not pair.through_relu or first.bias is None:
            continue
        c = (st.mean - n_std * st.std).clamp_min(0)
        if not bool((c > 0).any()):
            continue
        second = model.get_submodule(pair.second)
        first.bias.sub_(c.to(first.bias.dtype))
        shift = _input_response(second, second.weight.detach(), c)
        if second.bias is None:
            second.bias = nn.Parameter(torch.zeros_like(shift))
        second.bias.add_(shift.to(second.bias.dtype))
        stats[pair.first] = PreActStats(st.mean - c, st.std)
        absorbed.append(pair.first)
    return absorbed


def relu6_to_relu(model: nn.Module) -> nn.Module:
    """A copy with every ReLU6 module replaced by ReLU: equalization needs a positively
    homogeneous activation, and the DFQ paper does the same for MobileNetV2 (the clipping at 6
    only matters for the rare activations above it)."""
    import copy

    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, nn.ReLU6):
            parent, _, leaf = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, leaf, nn.ReLU(inplace=m.inplace))
    return out


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
        shift = _input_response(layer, dw, mean_in)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(shift))
        layer.bias.sub_(shift.to(layer.bias.dtype))
        corrected.append(pair.second)
    return corrected


def data_free_prepare(model: nn.Module, *, per_channel: bool, equalize: bool = True,
                      correct_bias: bool = True, absorb_bias: bool = True, iterations: int = 100,
                      tolerance: float = 1e-4) -> tuple[nn.Module, dict]:
    """Folded float model with DFQ applied (ready for int8 conversion): ReLU6 -> ReLU, BN
    folding, cross-layer equalization iterated to convergence, high-bias absorption, bias
    correction - all from the model's own BN statistics, no data."""
    relu6 = sum(isinstance(m, nn.ReLU6) for m in model.modules())
    src = relu6_to_relu(model) if (relu6 and equalize) else model
    folded, stats = fold_bn_with_stats(src)
    pairs = find_layer_pairs(folded)
    spread_before = max(weight_range_spread(folded).values(), default=1.0)
    sweeps = cross_layer_equalization(folded, pairs, stats, iterations=iterations,
                                      tolerance=tolerance) if equalize else 0
    absorbed = absorb_high_bias(folded, pairs, stats) if (equalize and absorb_bias) else []
    corrected = bias_correction(folded, pairs, stats, per_channel=per_channel) if correct_bias else []
    depthwise = sum(1 for p in pairs if getattr(folded.get_submodule(p.first), "groups", 1) > 1
                    or getattr(folded.get_submodule(p.second), "groups", 1) > 1)
    info = {"pairs": len(pairs), "depthwise_pairs": depthwise, "relu6_replaced": relu6 if src is not model else 0,
            "cle_iterations": sweeps, "high_bias_absorbed": len(absorbed), "bias_corrected": len(corrected),
            # the worst layer's channel-range spread after BN folding, before and after DFQ
            "max_range_spread_folded": round(spread_before, 2),
            "max_range_spread_dfq": round(max(weight_range_spread(folded).values(), default=1.0), 2)}
    return folded, info
