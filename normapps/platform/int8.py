"""Int8 for x86 CPUs, shared by every task that runs int8 (quantization, style transfer).

* calibration (:func:`calibrate`), the quantized engine (:func:`set_int8_engine`, the one place
  it is set) and the CPU probe that picks the activation range (``cpu_has_vnni``, from
  :mod:`normapps.platform.hardware`);
* ``fx`` - torch.ao's graph-mode API (``prepare_fx`` / ``convert_fx``, x86 qconfig): fuses
  conv-bn-relu, inserts observers from the graph (so ResNet's residual ``+`` is quantized
  without rewriting the model for eager mode's FloatFunctional), and gives real quantized
  modules (fbgemm/oneDNN kernels, int8 weights in the state dict) that run without compiling;
* ``pt2e`` - the maintained path: ``torch.export`` + torchao's ``prepare_pt2e`` /
  ``convert_pt2e`` with ``X86InductorQuantizer``, run through ``torch.compile`` with freezing
  (:func:`compile_int8`; Inductor lowers the q/dq pattern to oneDNN int8 kernels).
docs/tasks/quantization.md says why fx is the quantization task's default.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from normapps.platform.compile import compile_frozen
from normapps.platform.hardware import cpu_has_vnni

__all__ = [
    "INT8_BACKENDS", "calibrate", "set_int8_engine", "cpu_has_vnni", "qconfig_mapping",
    "prepare_fx_model", "convert_fx_model", "quantize_fx", "observer_state", "load_observer_state",
    "Autocast", "autocast_submodules", "unshare_modules",
    "prepare_pt2e_model", "convert_pt2e_model", "quantize_pt2e", "compile_int8",
]

INT8_BACKENDS = ("fx", "pt2e")
_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def set_int8_engine() -> str:
    """Select torch's quantized engine for int8 modules and return its name: ``x86`` (oneDNN or
    fbgemm per op) where this torch has it, else the best one it has. The engine is torch's
    process state, so it is set here and nowhere else."""
    supported = torch.backends.quantized.supported_engines
    for name in _ENGINES:
        if name in supported:
            if torch.backends.quantized.engine != name:
                torch.backends.quantized.engine = name
            return name
    raise RuntimeError(f"this torch build has no int8 engine (supported: {supported})")


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
                     qat: bool = False, reduce_range: bool = True,
                     float_modules: Iterable[str] = ()) -> torch.fx.GraphModule:
    """Fused, observed copy of ``model`` (BN folded into conv for PTQ; QAT keeps BN inside
    ConvBnReLU2d modules that simulate the folding during training). ``float_modules``:
    qualified names of submodules left in float (PTQ), e.g. a layer whose input range is too
    wide for one uint8 scale."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    model = copy.deepcopy(model)
    if qat:
        mapping = get_default_qat_qconfig_mapping("x86") if per_channel else _qat_per_tensor()
        return prepare_qat_fx(model.train(), mapping, (example,))
    mapping = qconfig_mapping(per_channel=per_channel, reduce_range=reduce_range)
    for name in float_modules:
        mapping = mapping.set_module_name(name, None)
    return prepare_fx(model.eval(), mapping, (example,))


def _qat_per_tensor():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.fake_quantize import FakeQuantize, default_weight_fake_quant
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=127,
                                 dtype=torch.quint8, reduce_range=False)
    return QConfigMapping().set_global(QConfig(activation=act, weight=default_weight_fake_quant))


def convert_fx_model(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    import warnings

    from torch.ao.quantization.quantize_fx import convert_fx

    # torch 2.15 warns on every quantized weight it creates that quint8/qint8 tensors are
    # deprecated (pytorch#184982): said once per conv on each int8 run, it says nothing a user
    # can act on; the pt2e backend here is the maintained route.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        return convert_fx(copy.deepcopy(prepared).eval())


def quantize_fx(model: nn.Module, batches: Iterable[Any], *, example: torch.Tensor,
                per_channel: bool = True, max_batches: int | None = None,
                reduce_range: bool = True, float_modules: Iterable[str] = ()) -> torch.fx.GraphModule:
    """Calibrated int8 GraphModule of quantized modules (runs eagerly on fbgemm/oneDNN)."""
    set_int8_engine()
    prepared = prepare_fx_model(model, example, per_channel=per_channel, reduce_range=reduce_range,
                                float_modules=float_modules)
    calibrate(prepared, batches, max_batches=max_batches)
    return convert_fx_model(prepared)


_OBSERVER = "activation_post_process"


def observer_state(prepared: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The activation observers' buffers of a calibrated ``prepare_fx_model`` graph (histograms,
    min/max): plain tensors, so they save and load with ``weights_only=True``, and with the same
    float model they rebuild the same int8 model without the calibration data."""
    return {k: v.detach().clone() for k, v in prepared.state_dict().items() if _OBSERVER in k}


def load_observer_state(prepared: torch.fx.GraphModule, state: dict[str, torch.Tensor]) -> None:
    """Put saved observer buffers into a freshly prepared graph of the same model; a state from
    another model (other observers or shapes) raises ValueError naming the first difference."""
    expected = observer_state(prepared)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"observer state does not fit this model: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"observer state does not fit this model: {key} is {got}, "
                             f"expected {tuple(expected[key].shape)}")
    prepared.load_state_dict(state, strict=False)


class Autocast(nn.Module):
    """Runs ``module`` under autocast to ``dtype`` and returns float32: a layer an int8 graph
    keeps in float (``float_modules``) then costs a bf16 conv instead of an fp32 one."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.module(x).float()


def autocast_submodules(gm: torch.fx.GraphModule, names: Iterable[str],
                        dtype: torch.dtype = torch.bfloat16) -> torch.fx.GraphModule:
    """Wrap the float submodules ``names`` of a converted graph in :class:`Autocast`, in place."""
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(parent) if parent else gm
        setattr(owner, leaf, Autocast(gm.get_submodule(name), dtype))
    return gm


# ----------------------------------------------------------------------------- pt2e (torchao)


def unshare_modules(model: nn.Module) -> torch.fx.GraphModule:
    """fx-trace ``model`` and give every call of a re-used leaf module its own copy.

    torchvision-style ResNet blocks call one ``self.relu`` twice; torchao's PT2E
    X86InductorQuantizer groups both calls into one source partition and raises "Input
    partition has more than one output node". Separate module instances (and no inherited
    ``nn_module_stack`` metadata, which would still name the shared module) fix that without
    changing the function.
    """
    gm = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    calls: dict[str, int] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        calls[node.target] = calls.get(node.target, 0) + 1
        if calls[node.target] > 1:
            new_name = f"{node.target.replace('.', '_')}_call{calls[node.target]}"
            gm.add_submodule(new_name, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = new_name
        node.meta.pop("nn_module_stack", None)
    gm.graph.lint()
    gm.recompile()
    return gm


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


def compile_int8(model: nn.Module):
    """torch.compile(Inductor) with weight freezing, which the x86 int8 lowering needs; freezing
    is this compiled function's own Inductor option (:func:`normapps.platform.compile.compile_frozen`),
    never set process-wide, so a later compile in the same process does not freeze by surprise."""
    return compile_frozen(model)
