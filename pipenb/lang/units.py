"""Durations (``250ms``, ``5s``, ``1m``) and sizes (``10KB``, ``1.5MiB``) as users write them."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtp", start=1):
    _SIZE_UNITS[_p] = _SIZE_UNITS[_p + "b"] = 1000**_i
    _SIZE_UNITS[_p + "i"] = _SIZE_UNITS[_p + "ib"] = 1024**_i


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``/``5s``/``1m``/``2h``/``1d`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 250ms, 5s or 1m, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # a 400-digit number of seconds
            raise ValueError(
                "expected a duration such as 250ms, 5s or 1m; this one is too long"
            ) from None
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as 250ms, 5s or 1m, got {value!r}")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def parse_size(value: object) -> int:
    """Bytes from ``512``, ``10KB`` (1000s) or ``10KiB`` (1024s)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512, 10KB or 1MiB, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        if isinstance(value, float):
            return int(value)
        m = _SIZE.match(str(value))
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    except (OverflowError, ValueError):  # inf, nan
        pass
    raise ValueError(f"expected a size such as 512, 10KB or 1MiB, got {str(value)[:40]!r}")
