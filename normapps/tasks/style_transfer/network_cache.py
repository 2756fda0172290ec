"""Networks loaded once per process: a long-lived caller (the web demo) stylizes many requests
through the same infer.py code without re-reading and re-verifying weight files each time.

Keys name the files read with their size and modification time, so a file replaced on disk is
read again. The cached modules are shared: pipelines only move them to a device and memory
format and run them under no_grad, never change their weights.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
# Re-entrant: a build may itself use the cache (an int8 decoder's calibration features).
_LOCK = threading.RLock()


def file_key(path: str | Path | None) -> tuple:
    if path is None:
        return (None,)
    p = Path(path)
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns)


def cached(key: tuple, build: Callable[[], Any], *, max_entries: int | None = None) -> Any:
    """``build()`` once per ``key``. ``max_entries``: keep at most that many entries whose key
    starts with this key's first element (least recently used first out), for things built
    per request such as int8 decoders calibrated per style."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        _CACHE[key] = value = build()
        if max_entries is not None:
            group = [k for k in _CACHE if k[:1] == key[:1]]
            for old in group[: max(0, len(group) - max_entries)]:
                del _CACHE[old]
        return value


def clear() -> None:
    with _LOCK:
        _CACHE.clear()


def tensors_digest(tensors, names=None) -> str:
    """A short fingerprint of tensors' shapes and values (and ``names``, when given)."""
    h = hashlib.sha256()
    for i, tensor in enumerate(tensors):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        if names is not None:
            h.update(names[i].encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:20]


def module_digest(module: nn.Module) -> str:
    """A module's weights fingerprinted: the cache key of anything derived from them, so a
    retrained decoder never meets a stale calibration."""
    state = module.state_dict()
    return tensors_digest(list(state.values()), names=list(state))
