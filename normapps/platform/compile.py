"""torch.compile with Inductor's weight freezing, scoped to the compiled function.

Freezing turns parameters into constants, so oneDNN convolutions get pre-packed weights and
fused ReLUs (and the x86 int8 lowering needs it). It is passed as the compiled function's own
Inductor options, never set process-wide: another compile in the same process (training, a
model whose weights change) must not freeze by surprise.
"""
from __future__ import annotations

from torch import nn


def compile_frozen(module: nn.Module, *, dynamic: bool = False):
    import torch

    return torch.compile(module, dynamic=dynamic, options={"freezing": True})
