"""Int8 post-training quantization for x86 CPUs: calibration data, per-channel weights.

The fx (torch.ao) and PT2E (torchao) paths, calibration and the quantized engine are shared with
style transfer and live in :mod:`normapps.platform.int8`; the names stay importable from here.
See docs/tasks/quantization.md for why fx is the default.
"""
from __future__ import annotations

from normapps.platform.int8 import (  # noqa: F401  (re-exported: this module's public names)
    INT8_BACKENDS as BACKENDS, calibrate, compile_int8, convert_fx_model, convert_pt2e_model,
    cpu_has_vnni, prepare_fx_model, prepare_pt2e_model, qconfig_mapping, quantize_fx, quantize_pt2e,
    set_int8_engine,
)
from normapps.platform.int8 import _inputs, _qat_per_tensor  # noqa: F401
from normapps.tasks.quantization.graph import unshare_modules  # noqa: F401
