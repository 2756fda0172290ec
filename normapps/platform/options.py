"""Typed option checks with errors that name the option: the building blocks every runner's
early validation uses, so a wrong value fails before any work with ``key=value: expected ...``.

Each function reads one key of a config (dotted keys allowed), checks its type and range, and
returns the plain Python value. Booleans are never accepted as numbers, strings never as
booleans, NaN and infinities never as numbers (unless ``finite=False``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

_MISSING = object()


class OptionError(ValueError):
    """An option's value has the wrong type or is out of range; the message names the option."""


def _get(cfg: Any, key: str, default: Any = _MISSING) -> Any:
    value = OmegaConf.select(cfg, key, default=default) if isinstance(cfg, DictConfig) else cfg.get(key, default)
    if value is _MISSING:
        raise OptionError(f"{key} is required")
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def _show(key: str, value: Any) -> str:
    return f"{key}={value!r}"


def _range_text(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def as_int(key: str, value: Any, *, min: int | None = None, max: int | None = None,
           allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{_show(key, value)}: expected an integer{_range_text(min, max)}"
                          + (" or null" if allow_none else ""))
    if (min is not None and value < min) or (max is not None and value > max):
        raise OptionError(f"{key} must be{_range_text(min, max)}, got {value!r}")
    return value


def as_float(key: str, value: Any, *, min: float | None = None, max: float | None = None,
             min_open: bool = False, allow_none: bool = False, finite: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{_show(key, value)}: expected a number{_range_text(min, max, min_open)}"
                          + (" or null" if allow_none else ""))
    value = float(value)
    if finite and not math.isfinite(value):
        raise OptionError(f"{key} must be a finite number, got {value}")
    if (min is not None and (value < min or (min_open and value == min))) or (max is not None and value > max):
        raise OptionError(f"{key} must be{_range_text(min, max, min_open)}, got {value:g}")
    return value


def as_bool(key: str, value: Any, *, allow_none: bool = False) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise OptionError(f"{_show(key, value)}: expected true or false" + (" or null" if allow_none else ""))
    return value


def as_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(f"{_show(key, value)}: expected one of {', '.join(map(str, choices))}")
    return value


def as_text(key: str, value: Any, *, allow_none: bool = False) -> str | None:
    """A non-empty string (a path, a name); numbers given on the command line are accepted."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise OptionError(f"{_show(key, value)}: expected a non-empty path or name"
                          + (" (or null)" if allow_none else ""))
    return str(value)


def apply_checks(checks: Mapping[str, Callable[[str, Any], Any]], args: Mapping[str, Any], *,
                 prefix: str, name: Callable[[str], str] | None = None) -> None:
    """Run ``checks[key](option name, value)`` for every key of ``args`` that has a check: the
    loop behind every ``check_args``. The name is ``<prefix>.<key>`` unless ``name`` says otherwise."""
    for key, value in args.items():
        if key in checks:
            checks[key](name(key) if name else f"{prefix}.{key}", value)


def int_option(cfg: Any, key: str, **kw) -> int | None:
    return as_int(key, _get(cfg, key), **kw)


def float_option(cfg: Any, key: str, **kw) -> float | None:
    return as_float(key, _get(cfg, key), **kw)


def bool_option(cfg: Any, key: str, **kw) -> bool | None:
    return as_bool(key, _get(cfg, key), **kw)


def choice_option(cfg: Any, key: str, choices: Iterable[Any]) -> Any:
    return as_choice(key, _get(cfg, key), choices)


def text_option(cfg: Any, key: str, **kw) -> str | None:
    return as_text(key, _get(cfg, key), **kw)


def seed_option(cfg: Any, key: str = "seed") -> int:
    """numpy and Lightning take seeds in [0, 2**32 - 1] (Lightning silently replaces others)."""
    return as_int(key, _get(cfg, key, 0), min=0, max=2**32 - 1)


@dataclass(frozen=True)
class TaskOptions:
    """Base of a task's checked options: a frozen dataclass its ``validate`` builds once, before
    anything expensive, and its runner reads instead of the config (so every value a run uses
    was checked, once, in one place). ``opts["name"]`` reads a field too: the validators used to
    return dicts."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)
