"""Give a freshly built network the layer widths of a pruned one, from the weight shapes alone.

Channel pruning (network slimming, Torch-Pruning) changes only how many channels each conv, BN
and linear layer has, so a plain ``{weight name: shape}`` table (ints, safe for weights_only
files) is enough to rebuild the pruned structure from the original architecture, with no
pruning library and no original weights: every layer is replaced by one of the recorded size.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_RESIZABLE = (nn.Conv2d, nn.Linear, _BatchNorm)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{module name: weight shape}`` of every conv, linear and BN (running stats for a BN
    without affine)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, _RESIZABLE):
            w = m.weight if getattr(m, "weight", None) is not None else m.running_mean
            if w is not None:
                out[name] = list(w.shape)
    return out


def _resized(m: nn.Module, shape: list[int]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        out_ch, in_per_group = shape[0], shape[1]
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        groups = out_ch if depthwise else m.groups
        return nn.Conv2d(in_per_group * groups, out_ch, m.kernel_size, stride=m.stride, padding=m.padding,
                         dilation=m.dilation, groups=groups, bias=m.bias is not None,
                         padding_mode=m.padding_mode)
    if isinstance(m, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=m.bias is not None)
    return type(m)(shape[0], eps=m.eps, momentum=m.momentum, affine=m.affine,
                   track_running_stats=m.track_running_stats)


def resize_to_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace (in place) every layer whose recorded shape differs; returns ``model``."""
    modules = dict(model.named_modules())
    unknown = set(shapes) - set(modules)
    if unknown:
        raise ValueError(f"layer shapes name layers the network does not have: {sorted(unknown)[:5]}")
    current = layer_shapes(model)
    for name, shape in shapes.items():
        m = modules[name]
        if not isinstance(m, _RESIZABLE) or name not in current:
            raise ValueError(f"cannot resize {name} ({type(m).__name__})")
        # Pruning only removes channels: a recorded shape has the layer's rank and no dimension
        # above the original's (a file cannot make the loader allocate an arbitrary network).
        full = current[name]
        if (not isinstance(shape, (list, tuple)) or len(shape) != len(full)
                or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= f
                           for d, f in zip(shape, full))):
            raise ValueError(f"layer shape of {name} is {shape!r}; the network's {full} allows only "
                             "positive sizes no larger than that")
        if full == list(shape):
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, _resized(m, list(shape)))
    return model
