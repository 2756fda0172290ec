"""Reference runs of the packaged ONNX networks with onnxruntime (tests and benchmarks only:
the project's modules never execute the foreign graphs)."""
from __future__ import annotations

import copy

import numpy as np

SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")


def session(path, *, threads: int = 1, model_bytes: bytes | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes or str(path), opts, providers=["CPUExecutionProvider"])


def float_activation_graph(path) -> bytes:
    """The QDQ graph with every activation QuantizeLinear -> [shape ops] -> DequantizeLinear
    bypassed: the same network with float activations (weights stay int8-dequantized), which a
    float port must reproduce to float precision."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    quantized_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            chain, t = [], node.input[0]
            while t in producer and producer[t].op_type in SHAPE_OPS:
                chain.append(producer[t])
                t = producer[t].input[0]
            if t in quantized_from:
                x = quantized_from[t]
                if not chain:
                    nodes.append(onnx.helper.make_node("Identity", [x], [node.output[0]], name=node.name + "_float"))
                for i, op in enumerate(reversed(chain)):
                    clone = copy.deepcopy(op)
                    clone.input[0] = x
                    out = node.output[0] if i == len(chain) - 1 else f"{op.output[0]}_float"
                    del clone.output[:]
                    clone.output.append(out)
                    clone.name = op.name + "_float"
                    nodes.append(clone)
                    x = out
                continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
