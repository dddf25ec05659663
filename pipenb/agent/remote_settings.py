"""Agent settings the server may change without a restart, and the bounds the agent keeps.

The server sends settings per agent or per label (``pipenb agents settings set``) in the
check-in answer; the agent applies those inside the bounds its operator set on its command line
(``--max-log-level``, ``--settings-bounds``), refuses the rest saying why, and reports the version
it applied. A key the server does not set has the agent's command-line value.

One table (``SETTINGS``) says what each key is, how its value is read and its widest bounds; the
server uses it to refuse a misspelt key or a bad value at once, the agent to apply and to bound.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from ``500ms``/``5s``/``1m``/``1h`` or a number. Not pipenb.lang.units': importing
    pipenb.lang loads the whole language (pydantic), which a running agent must not carry."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError("expected a duration such as 500ms, 5s or 1m")
    return float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]


LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # "seconds", "count", "rate" or "level"
    lo: float
    hi: float
    help: str


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("log-level", "level", 0, 3, "the agent's own log level"),
        Setting("ship-level", "level", 0, 3, "lowest level of pipe log lines sent to the server"),
        Setting("ship-rate", "rate", 0, 1000, "pipe log lines sent to the server per second"),
        Setting("metrics-every", "seconds", 0.5, 3600, "seconds between a pipe's reports"),
        Setting("long-poll", "seconds", 0, 120, "seconds the server may hold a check-in"),
        Setting("capture-limit", "count", 1, 10_000, "events a tap or preview brings back"),
    )
}


class SettingError(ValueError):
    """A setting the agent (or server) cannot take: the message names the key and the fix."""


def parse(key: str, value: Any) -> float | str:
    """``value`` of ``key`` as the agent uses it (seconds, a count, a level name)."""
    s = SETTINGS.get(key)
    if s is None:
        raise SettingError(f"unknown setting {key!r}; settings: {', '.join(SETTINGS)}")
    if s.kind == "level":
        level = str(value).lower()
        if level not in LEVELS:
            raise SettingError(f"{key}: {value!r} is not a level; use one of {', '.join(LEVELS)}")
        return level
    try:
        number = parse_duration(value) if s.kind == "seconds" else float(value)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"{key}: {value!r} is not a {s.kind} value ({exc})") from None
    if not s.lo <= number <= s.hi:
        raise SettingError(f"{key}: {value!r} is outside {s.lo:g}..{s.hi:g}")
    return int(number) if s.kind == "count" else number


def version(values: dict[str, Any]) -> str:
    """A short, stable name of a set of settings: what the agent reports it applied."""
    return hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


@dataclass
class Bounds:
    """What the agent's operator lets the server set: a most verbose log level, and ranges."""

    max_log_level: str = "debug"  # the most verbose level the server may turn on
    ranges: dict[str, tuple[float, float]] | None = None

    @classmethod
    def parse(cls, max_log_level: str | None, spec: str | None) -> Bounds:
        """``--settings-bounds "metrics-every=2s..60s,long-poll=..30s,capture-limit=..500"``."""
        level = (max_log_level or "debug").lower()
        if level not in LEVELS:
            raise SettingError(f"--max-log-level {max_log_level!r}: use one of {', '.join(LEVELS)}")
        ranges: dict[str, tuple[float, float]] = {}
        for part in filter(None, (p.strip() for p in (spec or "").split(","))):
            key, sep, rng = part.partition("=")
            s = SETTINGS.get(key.strip())
            if not sep or s is None or s.kind == "level" or ".." not in rng:
                raise SettingError(
                    f"--settings-bounds {part!r}: write KEY=LOW..HIGH (either may be left out) "
                    f"for one of {', '.join(k for k, v in SETTINGS.items() if v.kind != 'level')}"
                )
            lo_text, hi_text = rng.split("..", 1)
            lo = float(parse(s.key, lo_text)) if lo_text.strip() else s.lo
            hi = float(parse(s.key, hi_text)) if hi_text.strip() else s.hi
            if lo > hi:
                raise SettingError(f"--settings-bounds {part!r}: the low end is above the high")
            ranges[s.key] = (lo, hi)
        return cls(level, ranges)

    def check(self, key: str, value: Any) -> float | str:
        """The value the agent applies, or SettingError saying which bound refuses it."""
        v = parse(key, value)
        s = SETTINGS[key]
        if s.kind == "level" and LEVELS.index(str(v)) < LEVELS.index(self.max_log_level):
            raise SettingError(
                f"{key}: {v} is more verbose than this agent allows "
                f"(--max-log-level {self.max_log_level})"
            )
        if s.kind != "level" and self.ranges and key in self.ranges:
            lo, hi = self.ranges[key]
            if not lo <= float(v) <= hi:
                raise SettingError(
                    f"{key}: {value} is outside this agent's bounds {lo:g}..{hi:g} "
                    "(--settings-bounds)"
                )
        return v

    def to_dict(self) -> dict[str, Any]:
        return {
            "max-log-level": self.max_log_level,
            **{k: [lo, hi] for k, (lo, hi) in (self.ranges or {}).items()},
        }
