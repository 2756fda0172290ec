"""Networks loaded once per process: a long-lived caller (the web demo) stylizes many requests
through the same infer.py code without re-reading and re-verifying weight files each time.

Keys name the files read with their size and modification time, so a file replaced on disk is
read again. The cached modules are shared: pipelines only move them to a device and memory
format and run them under no_grad, never change their weights.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def file_key(path: str | Path | None) -> tuple:
    if path is None:
        return (None,)
    p = Path(path)
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns)


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def clear() -> None:
    with _LOCK:
        _CACHE.clear()
