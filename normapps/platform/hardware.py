"""What this machine's CPU (and GPU) can do fast, probed once, in one place.

Speed choices across tasks hang on these: bf16 only where the CPU has native bf16 (AVX512-BF16
or AMX; without them oneDNN emulates bf16 and autocast runs 2-3x *slower* than fp32), int8
activations with the full 8 bits where VNNI accumulates in int32.
"""
from __future__ import annotations

from functools import lru_cache

import torch


def _probe(name: str) -> bool:
    return bool(getattr(torch.cpu, name, lambda: False)())


@lru_cache(maxsize=None)
def cpu_has_avx512_bf16() -> bool:
    return _probe("_is_avx512_bf16_supported")


@lru_cache(maxsize=None)
def cpu_has_amx() -> bool:
    return _probe("_is_amx_tile_supported")


@lru_cache(maxsize=None)
def cpu_has_vnni() -> bool:
    """AVX512-VNNI / AVX-VNNI: int8 dot products accumulate in int32 without the int16
    saturation of older AVX2/AVX-512 kernels, so activations can use all 8 bits."""
    return _probe("_is_vnni_supported")


def cpu_has_native_bf16() -> bool:
    return cpu_has_avx512_bf16() or cpu_has_amx()


def cpu_features() -> dict[str, bool]:
    return {"avx512_bf16": cpu_has_avx512_bf16(), "amx": cpu_has_amx(), "vnni": cpu_has_vnni()}


def training_precision(accelerator: str = "cpu") -> str:
    """Lightning precision for a run: bf16-mixed where the hardware runs bf16 natively (CUDA
    with bf16, or a CPU with AVX512-BF16/AMX), else full fp32."""
    accelerator = str(accelerator or "cpu").lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def trainer_device(accelerator: str | None = "cpu") -> torch.device:
    """The device a run's own computations (outside the Lightning Trainer: adaptation, timing)
    use for ``trainer.accelerator``: CUDA for gpu/cuda/auto when a GPU is there, else the CPU."""
    accelerator = str(accelerator or "cpu").lower()
    use_cuda = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")
