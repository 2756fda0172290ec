"""The int8 model file: float architecture hyper-parameters plus the quantized state dict.

A quantized GraphModule cannot be pickled safely, so the file holds only plain tensors and
strings (``weights_only=True`` loads it) and :func:`load_quantized` rebuilds the model by
running the same prepare/convert recipe on a fresh float network, then loading the state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from normapps.models import build_classifier
from normapps.platform.checkpoint import CheckpointError, atomic_save, safe_load
from normapps.platform.int8 import set_int8_engine

FORMAT_KEY = "normapps_quant"
FORMAT_VERSION = 1
ARCH_KEYS = ("arch", "norm", "norm_kwargs", "num_classes", "in_channels", "width", "depth", "width_mult")


def arch_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    return {k: hparams[k] for k in ARCH_KEYS if k in hparams}


def save_quantized(path: str | Path, *, state_dict: dict[str, Any], arch: dict[str, Any],
                   recipe: dict[str, Any], image_size: int, metrics: dict[str, float] | None = None,
                   layer_shapes: dict[str, list[int]] | None = None) -> Path:
    """``recipe``: backend (fx|pt2e), per_channel, qat, folded (DFQ's folded graph), mode.
    ``layer_shapes`` (normapps.models.resize.layer_shapes of the float network) records a pruned
    network's widths, so the file rebuilds it from the architecture alone."""
    path = Path(path)
    meta = {"format_version": FORMAT_VERSION, "arch": dict(arch), "recipe": dict(recipe),
            "image_size": int(image_size), "metrics": dict(metrics or {})}
    if layer_shapes:
        meta["layer_shapes"] = {k: [int(d) for d in v] for k, v in layer_shapes.items()}
    return atomic_save({FORMAT_KEY: meta, "state_dict": state_dict}, path)


def _float_net(arch: dict[str, Any], layer_shapes: dict[str, list[int]] | None = None) -> nn.Module:
    from normapps.models.resize import resize_to_shapes

    kw = dict(arch)
    net = build_classifier(kw.pop("arch"), **kw)
    if layer_shapes:
        resize_to_shapes(net, layer_shapes)
    return net.eval()


def build_quantized(arch: dict[str, Any], recipe: dict[str, Any], image_size: int,
                    layer_shapes: dict[str, list[int]] | None = None) -> nn.Module:
    """The int8 model's structure with placeholder values (state comes from a file)."""
    from normapps.norm import fold_bn
    from normapps.tasks.quantization import dfq, ptq

    set_int8_engine()
    net = _float_net(arch, layer_shapes)
    example = torch.zeros(2, int(arch.get("in_channels", 3)), image_size, image_size)
    per_channel = bool(recipe.get("per_channel", True))
    if recipe.get("folded"):
        net = fold_bn(dfq.relu6_to_relu(net) if recipe.get("relu6_to_relu") else net)
    if recipe.get("backend", "fx") == "pt2e" and recipe.get("qat"):
        return ptq.prepare_qat_pt2e_model(net, example)
    if recipe.get("backend", "fx") == "pt2e":
        prepared = ptq.prepare_pt2e_model(net, example, per_channel=per_channel)
        prepared(example)
        return prepared
    prepared = ptq.prepare_fx_model(net, example, per_channel=per_channel, qat=bool(recipe.get("qat")))
    # One pass gives every observer finite ranges so convert succeeds; load_state_dict then
    # replaces all scales, zero points and weights.
    with torch.no_grad():
        prepared.eval()(example)
    return ptq.convert_fx_model(prepared)


def quantized_meta(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """The int8 file's metadata, or a CheckpointError naming the file (another task's file)."""
    meta = ckpt.get(FORMAT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise CheckpointError(f"{path} is not an int8 model written by task=quantization "
                              f"(expected the '{FORMAT_KEY}' entry of a quantized.pt file)")
    return meta


def load_quantized(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the saved int8 model (weights_only loading); returns (callable model, meta)."""
    ckpt = safe_load(path)
    meta = quantized_meta(ckpt, path)
    try:
        model = build_quantized(meta["arch"], meta["recipe"], meta["image_size"], meta.get("layer_shapes"))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its int8 model ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if meta["recipe"].get("backend") == "pt2e":
        from normapps.tasks.quantization.ptq import compile_int8, convert_pt2e_model, convert_qat_pt2e_model

        model = convert_qat_pt2e_model(model) if meta["recipe"].get("qat") else convert_pt2e_model(model)
        if meta["recipe"].get("compile"):
            model = compile_int8(model)
    return model, meta
