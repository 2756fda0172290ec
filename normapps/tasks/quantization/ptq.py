"""Int8 quantization for x86 CPUs: calibration data, per-channel weights, and the PT2E QAT wrapper.

The fx (torch.ao) and PT2E (torchao) post-training paths, calibration and the quantized engine
are shared with style transfer and live in :mod:`normapps.platform.int8`; their names stay
importable from here. What is the quantization task's own stays here: :class:`ExportedQAT`
(torchao's ``prepare_qat_pt2e`` graph inside a module Lightning can train).
See docs/tasks/quantization.md for why fx is the default.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from normapps.platform.int8 import (  # noqa: F401  (re-exported: this module's public names)
    INT8_BACKENDS as BACKENDS, calibrate, compile_int8, convert_fx_model, convert_pt2e_model,
    cpu_has_vnni, prepare_fx_model, prepare_pt2e_model, qconfig_mapping, quantize_fx, quantize_pt2e,
    set_int8_engine,
)
from normapps.platform.int8 import _inputs, _qat_per_tensor  # noqa: F401
from normapps.tasks.quantization.graph import unshare_modules  # noqa: F401


# ----------------------------------------------------------------------------- pt2e QAT (torchao)


class ExportedQAT(nn.Module):
    """A PT2E QAT graph (``prepare_qat_pt2e``) inside a module that Lightning can switch
    between train and eval: exported graphs refuse ``.train()`` / ``.eval()`` and need torchao's
    ``move_exported_model_to_train/eval``, which rewrite the graph's BN and dropout ops. Frozen BN
    statistics are re-applied after every switch to train."""

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph
        self.bn_frozen = False

    def train(self, mode: bool = True) -> "ExportedQAT":
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        self.training = mode
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph_module)
        if mode and self.bn_frozen:
            self._freeze_bn_graph()
        return self

    def freeze_bn_stats(self) -> None:
        self.bn_frozen = True
        if self.training:
            self._freeze_bn_graph()

    def _freeze_bn_graph(self) -> None:
        # aten.batch_norm(input, weight, bias, running_mean, running_var, training, ...): with
        # training=False the running statistics are used and no longer updated (torch's PT2E
        # QAT tutorial does the same).
        for node in self.graph_module.graph.nodes:
            if node.op == "call_function" and "batch_norm" in str(node.target) and len(node.args) > 5:
                args = list(node.args)
                args[5] = False
                node.args = tuple(args)
        self.graph_module.recompile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)


def prepare_qat_pt2e_model(model: nn.Module, example: torch.Tensor) -> ExportedQAT:
    """torch.export (train mode, dynamic batch) + torchao ``prepare_qat_pt2e`` with the x86
    quantizer's QAT config: conv-BN folding is simulated in the graph, weights per channel."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    gm = unshare_modules(model).train()
    ex = example[:1].expand(2, *example.shape[1:]).contiguous()
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},)
    exported = torch.export.export(gm, (ex,), dynamic_shapes=shapes).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=True))
    return ExportedQAT(prepare_qat_pt2e(exported, quantizer))


def convert_qat_pt2e_model(net: ExportedQAT) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval

    graph = copy.deepcopy(net.graph_module)
    move_exported_model_to_eval(graph)
    return convert_pt2e_model(graph)
