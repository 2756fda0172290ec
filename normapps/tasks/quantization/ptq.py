"""Int8 post-training quantization for x86 CPUs: calibration data, per-channel weights.

Two backends, both from PyTorch:

* ``pt2e`` - the maintained path: ``torch.export`` + torchao's ``prepare_pt2e`` /
  ``convert_pt2e`` with ``X86InductorQuantizer``, run through ``torch.compile`` (Inductor
  lowers the q/dq pattern to oneDNN int8 kernels).
* ``fx`` - torch.ao's graph-mode API (``prepare_fx`` / ``convert_fx``, x86 qconfig): fuses
  conv-bn-relu, inserts observers from the graph (so ResNet's residual ``+`` is quantized
  without rewriting the model for eager mode's FloatFunctional), and gives real quantized
  modules (fbgemm/oneDNN kernels, int8 weights in the state dict) that run without compiling.
  See docs/tasks/quantization.md for why this is the default.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from normapps.tasks.quantization.graph import unshare_modules

BACKENDS = ("fx", "pt2e")


def _inputs(batches: Iterable[Any], max_batches: int | None):
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            return
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(model: nn.Module | torch.fx.GraphModule, batches: Iterable[Any], *,
              max_batches: int | None = None) -> int:
    """Run observers over ``batches``; returns how many batches were fed."""
    n = 0
    for x in _inputs(batches, max_batches):
        model(x)
        n += 1
    if n == 0:
        raise ValueError("calibration got no batches: int8 ranges cannot be observed without data")
    return n


# ----------------------------------------------------------------------------- fx (torch.ao)


def cpu_has_vnni() -> bool:
    """AVX512-VNNI / AVX-VNNI: int8 dot products accumulate in int32 without the int16
    saturation of older AVX2/AVX-512 kernels, so activations can use all 8 bits."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def qconfig_mapping(*, per_channel: bool = True, backend: str = "x86", reduce_range: bool = True):
    """x86 int8: histogram-observed uint8 activations, symmetric int8 weights per output channel
    or per tensor. ``reduce_range`` (7-bit activations, torch's x86 default) guards against
    overflow on CPUs without VNNI; with VNNI, ``reduce_range=False`` halves the rounding error
    (about +3 dB PSNR on the style-transfer network, scripts/bench_style.py)."""
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import (HistogramObserver, default_per_channel_weight_observer,
                                                default_weight_observer)

    mapping = get_default_qconfig_mapping(backend)
    if not per_channel or not reduce_range:
        weight = default_per_channel_weight_observer if per_channel else default_weight_observer
        qconfig = QConfig(activation=HistogramObserver.with_args(reduce_range=reduce_range),
                          weight=weight)
        mapping = (mapping if per_channel else QConfigMapping()).set_global(qconfig)
    return mapping


def prepare_fx_model(model: nn.Module, example: torch.Tensor, *, per_channel: bool = True,
                     qat: bool = False, reduce_range: bool = True) -> torch.fx.GraphModule:
    """Fused, observed copy of ``model`` (BN folded into conv for PTQ; QAT keeps BN inside
    ConvBnReLU2d modules that simulate the folding during training)."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    model = copy.deepcopy(model)
    if qat:
        mapping = get_default_qat_qconfig_mapping("x86") if per_channel else _qat_per_tensor()
        return prepare_qat_fx(model.train(), mapping, (example,))
    mapping = qconfig_mapping(per_channel=per_channel, reduce_range=reduce_range)
    return prepare_fx(model.eval(), mapping, (example,))


def _qat_per_tensor():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.fake_quantize import FakeQuantize, default_weight_fake_quant
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=127,
                                 dtype=torch.quint8, reduce_range=False)
    return QConfigMapping().set_global(QConfig(activation=act, weight=default_weight_fake_quant))


def convert_fx_model(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx

    return convert_fx(copy.deepcopy(prepared).eval())


def quantize_fx(model: nn.Module, batches: Iterable[Any], *, example: torch.Tensor,
                per_channel: bool = True, max_batches: int | None = None,
                reduce_range: bool = True) -> torch.fx.GraphModule:
    """Calibrated int8 GraphModule of quantized modules (runs eagerly on fbgemm/oneDNN)."""
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx_model(model, example, per_channel=per_channel, reduce_range=reduce_range)
    calibrate(prepared, batches, max_batches=max_batches)
    return convert_fx_model(prepared)


# ----------------------------------------------------------------------------- pt2e (torchao)


def prepare_pt2e_model(model: nn.Module, example: torch.Tensor, *, per_channel: bool = True,
                       dynamic_batch: bool = True) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    if not per_channel:
        # torchao's x86 quantizer only offers per-channel weights.
        raise ValueError("the pt2e backend quantizes weights per channel only: use quant.backend=fx "
                         "for quant.per_channel=false")
    gm = unshare_modules(model)
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    # Export with a batch of 2: a batch of 1 would specialise the batch dimension.
    ex = example[:1].expand(2, *example.shape[1:]).contiguous()
    exported = torch.export.export(gm, (ex,), dynamic_shapes=shapes).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    return prepare_pt2e(exported, quantizer)


def convert_pt2e_model(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(copy.deepcopy(prepared))


def quantize_pt2e(model: nn.Module, batches: Iterable[Any], *, example: torch.Tensor,
                  per_channel: bool = True, max_batches: int | None = None
                  ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """(prepared-and-calibrated, converted) PT2E models; compile the converted one to run int8
    kernels (uncompiled it executes q/dq reference ops in float)."""
    prepared = prepare_pt2e_model(model, example, per_channel=per_channel)
    calibrate(prepared, batches, max_batches=max_batches)
    return prepared, convert_pt2e_model(prepared)


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


def compile_int8(model: nn.Module):
    """torch.compile(Inductor) with freezing, which the x86 int8 lowering needs."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model)
