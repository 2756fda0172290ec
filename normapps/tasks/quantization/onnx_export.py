"""ONNX export of the float and int8 models, checked by onnxruntime against PyTorch.

torch's TorchScript-based exporter (``dynamo=False``, opset 17) handles the BN-folded float
networks and torch.ao's fx int8 graphs (quantized convs become QuantizeLinear/QLinearConv/
DequantizeLinear nodes onnxruntime runs as int8); the dynamo exporter needs onnxscript, which
this project does not require. Where the exporter refuses a model (e.g. a compiled PT2E graph),
the error is recorded instead. Needs the optional extra ``normapps[onnx]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError("quant.onnx=true needs onnx and onnxruntime: "
                                  "pip install 'normapps[onnx]'") from err


@torch.no_grad()
def export_and_check(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                     opset: int = 17) -> dict[str, Any]:
    """Export ``model`` to ``path`` (dynamic batch) and compare onnxruntime's outputs on
    ``example`` with PyTorch's: max |difference| and how often the argmax agrees."""
    require_onnx()
    import onnx
    import onnxruntime as ort

    path = Path(path)
    result: dict[str, Any] = {"path": str(path), "exported": False}
    try:
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        onnx.checker.check_model(str(path))
    except Exception as err:  # the exporter's coverage of quantized graphs is partial
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return result
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example.numpy()})[0])
    ref = model(example).float()
    result.update(exported=True, size_bytes=path.stat().st_size, opset=opset,
                  max_abs_diff=float((got - ref).abs().max()),
                  argmax_agreement=float((got.argmax(1) == ref.argmax(1)).float().mean()),
                  ops=sorted({n.op_type for n in onnx.load(str(path)).graph.node}))
    return result
