"""Read weights out of ONNX files as numpy arrays, without executing the graph.

Ports of foreign networks copy these arrays into this project's own modules. Int8 QDQ graphs
(tf2onnx of TFLite models) store each weight as an int8 initializer feeding a
DequantizeLinear node; ``initializers`` returns the dequantized float array under the node's
output name too, so a port looks weights up by the name the consuming Conv uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from normapps.weights.files import WeightError


def load_onnx(path: str | Path):
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx comes with normapps[offline-weights]
        raise WeightError(f"reading {path} needs the onnx package: pip install "
                          f"'normapps[offline-weights]'") from err
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError and friends on truncated / foreign files
        raise WeightError(f"{path}: not a readable ONNX file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'truncated?'})") from err


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def initializers(model, *, dequantize: bool = True) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph by name: initializers, Constant nodes, and (with
    ``dequantize``) DequantizeLinear outputs whose inputs are constants, as float32."""
    from onnx import numpy_helper

    graph = model.graph
    arrays: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = _attr(node, "value")
            if value is not None:
                arrays[node.output[0]] = numpy_helper.to_array(value)
    if dequantize:
        for node in graph.node:
            if node.op_type != "DequantizeLinear" or node.input[0] not in arrays:
                continue
            x = arrays[node.input[0]].astype(np.float32)
            scale = arrays[node.input[1]].astype(np.float32)
            zero = (arrays[node.input[2]].astype(np.float32)
                    if len(node.input) > 2 and node.input[2] in arrays else np.zeros_like(scale))
            if scale.ndim == 1 and scale.size > 1:  # per-axis
                axis = _attr(node, "axis", 1)
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            arrays[node.output[0]] = (x - zero) * scale
    return arrays


def read_arrays(path: str | Path, names: Mapping[str, Sequence[int]] | None = None, *,
                entry: str = "", dequantize: bool = True) -> dict[str, np.ndarray]:
    """The named constant arrays of an ONNX file, each checked against its expected shape
    (``names``: name -> shape); a missing name or a wrong shape is a WeightError naming the
    file, the tensor and what was expected."""
    arrays = initializers(load_onnx(path), dequantize=dequantize)
    if names is None:
        return arrays
    label = f"{entry}: {path}" if entry else str(path)
    out = {}
    for name, shape in names.items():
        if name not in arrays:
            raise WeightError(f"{label}: has no tensor {name!r} (not the expected network?)")
        arr = arrays[name]
        if tuple(arr.shape) != tuple(shape):
            raise WeightError(f"{label}: tensor {name!r} has shape {tuple(arr.shape)}, "
                              f"expected {tuple(shape)}")
        if not np.isfinite(arr).all():
            raise WeightError(f"{label}: tensor {name!r} holds non-finite values")
        out[name] = arr
    return out
