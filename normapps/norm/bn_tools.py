"""Batch-norm statistics tools: find, recalibrate (AdaBN), fold, freeze.

Everything works on ``nn.modules.batchnorm._BatchNorm`` so it also covers SyncBatchNorm's
private ``_BatchNormXd`` and the branches of :class:`DomainBatchNorm`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from .domain import DomainBatchNorm

__all__ = ["bn_modules", "recalibrate_bn", "fold_bn", "freeze_bn", "unfreeze_bn"]


def bn_modules(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """All batch-norm modules of ``model`` with their qualified names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


# ----------------------------------------------------------------------------- recalibration


class _PopulationStats:
    """Exact per-channel mean / unbiased variance over every batch a BN sees.

    torch's cumulative average (momentum=None) averages per-batch statistics with equal
    weights, which is wrong for unequal batch sizes; merging (count, mean, M2) with Chan's
    formula gives the population statistics exactly. Accumulated in float64.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.batches = 0

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        c = x.shape[1]
        flat = x.transpose(0, 1).reshape(c, -1).double()
        n = flat.shape[1]
        var, mean = torch.var_mean(flat, dim=1, correction=0)
        m2 = var * n
        self.batches += 1
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total


def _first_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    alpha: float | None = None,
    max_batches: int | None = None,
) -> nn.Module:
    """AdaBN: re-estimate every BN's running stats on ``batches`` (Li et al. 2016).

    BN layers run in train mode (later layers see batch-normalized activations, as in AdaBN),
    everything else keeps its mode; no parameter changes. Running stats become the population
    mean / unbiased variance of each BN's input over all batches. ``alpha`` blends
    ``alpha * new + (1 - alpha) * old``. Momentum, training flags and freeze state are
    restored afterwards. ``batches`` items are tensors or tuples/lists whose first item is the
    input; ``forward_fn(model, batch)`` overrides how a batch is fed.
    """
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    bns = [m for _, m in bn_modules(model) if m.track_running_stats and m.running_mean is not None]
    if not bns:
        return model
    device = _first_device(model)
    modes = [(m, m.training) for m in model.modules()]
    saved = {
        bn: (bn.momentum, getattr(bn, "_normapps_frozen", False),
             bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
        for bn in bns
    }
    stats = {bn: _PopulationStats() for bn in bns}
    handles = [bn.register_forward_pre_hook(stats[bn]) for bn in bns]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn._normapps_frozen = False
            bn.train()
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                if forward_fn is not None:
                    forward_fn(model, batch)
                else:
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
        for bn, (momentum, frozen, rm, rv, nbt) in saved.items():
            bn.momentum = momentum
            bn._normapps_frozen = frozen
            st = stats[bn]
            with torch.no_grad():
                if st.mean is None:  # this BN saw no data: keep its source statistics
                    bn.running_mean.copy_(rm), bn.running_var.copy_(rv), bn.num_batches_tracked.copy_(nbt)
                    continue
                var = st.m2 / max(st.count - 1, 1)
                new_mean, new_var = st.mean.to(rm.dtype), var.to(rv.dtype)
                if alpha is not None:
                    new_mean = alpha * new_mean + (1 - alpha) * rm
                    new_var = alpha * new_var + (1 - alpha) * rv
                bn.running_mean.copy_(new_mean)
                bn.running_var.copy_(new_var)
                bn.num_batches_tracked.fill_(st.batches)
    return model


# ----------------------------------------------------------------------------- folding

_FOLDABLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)


def _pairs_from_graph(module: nn.Module, prefix: str) -> list[tuple[str, str]]:
    """(layer, bn) names where the layer's output feeds only that BN, via fx tracing."""
    gm = torch.fx.symbolic_trace(module)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and isinstance(gm.get_submodule(src.target), _FOLDABLE)
            and len(src.users) == 1
            and calls[src.target] == 1  # a shared layer can't absorb one BN's statistics
            and calls[node.target] == 1
        ):
            pairs.append((prefix + src.target, prefix + node.target))
    return pairs


def _find_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    try:
        return _pairs_from_graph(module, prefix)
    except Exception:  # untraceable control flow: fall back to Sequential adjacency + recurse
        pass
    pairs = []
    children = list(module.named_children())
    if isinstance(module, nn.Sequential):
        for (a, ma), (b, mb) in zip(children, children[1:]):
            if isinstance(ma, _FOLDABLE) and isinstance(mb, _BatchNorm):
                pairs.append((prefix + a, prefix + b))
    for name, child in children:
        if not isinstance(child, (_FOLDABLE, _BatchNorm)):
            pairs.extend(_find_pairs(child, prefix + name + "."))
    return pairs


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _fold_pair(layer: nn.Module, bn: _BatchNorm) -> None:
    rm, rv = bn.running_mean, bn.running_var
    if isinstance(layer, nn.Linear):
        w = bn.weight if bn.weight is not None else torch.ones_like(rm)
        b = bn.bias if bn.bias is not None else torch.zeros_like(rm)
        weight, bias = fuse_linear_bn_weights(layer.weight, layer.bias, rm, rv, bn.eps, w, b)
    else:
        weight, bias = fuse_conv_bn_weights(
            layer.weight, layer.bias, rm, rv, bn.eps, bn.weight, bn.bias,
            transpose=isinstance(layer, nn.modules.conv._ConvTransposeNd),
        )
    layer.weight = weight
    layer.bias = bias


def _inside_domain_bn(root: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(
        isinstance(root.get_submodule(".".join(parts[:i])), DomainBatchNorm)
        for i in range(1, len(parts))
    )


def fold_bn(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` in eval mode with every foldable BN merged into its producer.

    Pairs come from torch.fx tracing (finds conv->bn in ResNet blocks, where they are not
    adjacent children) with a Sequential-adjacency fallback; the deep copy of the original
    module is mutated (BN -> nn.Identity) so class and structure survive.
    """
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer_name, bn_name in _find_pairs(folded):
            layer, bn = folded.get_submodule(layer_name), folded.get_submodule(bn_name)
            if bn.running_mean is None or bn.running_var is None:
                continue  # batch-statistics-only BN has nothing fixed to fold
            if _inside_domain_bn(folded, bn_name):
                continue  # one shared conv can't absorb several domains' statistics
            out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if out != bn.num_features:
                continue
            _fold_pair(layer, bn)
            _set_submodule(folded, bn_name, nn.Identity())
    return folded


# ----------------------------------------------------------------------------- freezing


def _frozen_pre_hook(module: _BatchNorm, args: tuple[Any, ...]) -> None:
    # model.train() flips every flag back on; re-assert eval behaviour right before each call.
    if getattr(module, "_normapps_frozen", False):
        module.training = False


def freeze_bn(model: nn.Module, *, freeze_affine: bool = True) -> nn.Module:
    """Make every BN use and keep its running stats, also after later ``model.train()``.

    A forward pre-hook forces ``training=False`` on each call. With ``freeze_affine`` the BN
    weight/bias stop receiving gradients. Undo with :func:`unfreeze_bn`.
    """
    for _, bn in bn_modules(model):
        bn._normapps_frozen = True
        # The hook itself is the marker (no handle stored: models must stay deep-copyable).
        if _frozen_pre_hook not in bn._forward_pre_hooks.values():
            bn.register_forward_pre_hook(_frozen_pre_hook)
        bn.training = False
        if freeze_affine and bn.affine and getattr(bn, "_normapps_requires_grad", None) is None:
            bn._normapps_requires_grad = (bn.weight.requires_grad, bn.bias.requires_grad)
            bn.weight.requires_grad_(False)
            bn.bias.requires_grad_(False)
    return model


def unfreeze_bn(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze_bn`; BN modes follow their parent's mode again."""
    for _, bn in bn_modules(model):
        for key, hook in list(bn._forward_pre_hooks.items()):
            if hook is _frozen_pre_hook:
                del bn._forward_pre_hooks[key]
        bn._normapps_frozen = False
        grads = getattr(bn, "_normapps_requires_grad", None)
        if grads is not None:
            bn.weight.requires_grad_(grads[0])
            bn.bias.requires_grad_(grads[1])
            bn._normapps_requires_grad = None
    model.train(model.training)
    return model
