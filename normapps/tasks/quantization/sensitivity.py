"""Per-layer int8 sensitivity: each conv/linear quantized alone (its weights and its input
activation, everything else float), ranked by the accuracy it costs. It says which layer to
keep in float, or to equalize, when a whole-model int8 loses too much."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from normapps.platform.int8 import set_int8_engine
from normapps.tasks.quantization import ptq
from normapps.tasks.quantization.report import accuracy

_LAYERS = (nn.Conv2d, nn.Linear)


def quantize_one_layer(model: nn.Module, name: str, calib: Iterable[Any], *, example: torch.Tensor,
                       per_channel: bool) -> nn.Module:
    """``model`` with only layer ``name`` int8 (torch.ao fx, qconfig set for that module only)."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qconfig = ptq.qconfig_mapping(per_channel=per_channel).global_qconfig
    mapping = QConfigMapping().set_module_name(name, qconfig)
    prepared = prepare_fx(_copy(model), mapping, (example,))
    ptq.calibrate(prepared, calib)
    return convert_fx(prepared)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


@torch.no_grad()
def layer_sensitivity(model: nn.Module, batches: list, *, calib: list, example: torch.Tensor,
                      per_channel: bool) -> list[dict[str, Any]]:
    """Rows (layer, type, params, acc_int8_alone, acc_drop), the most sensitive first.
    ``model`` should be the deployable float model (BN folded), ``batches`` labelled test data."""
    set_int8_engine()
    base = accuracy(model.eval(), batches)
    rows = []
    for name, layer in model.named_modules():
        if not isinstance(layer, _LAYERS):
            continue
        acc = accuracy(quantize_one_layer(model, name, calib, example=example, per_channel=per_channel), batches)
        rows.append({"layer": name, "type": type(layer).__name__,
                     "params": sum(p.numel() for p in layer.parameters()),
                     "acc_float": base, "acc_int8_alone": acc, "acc_drop": base - acc})
    rows.sort(key=lambda r: -r["acc_drop"])
    return rows
