"""Grok: ``%{PATTERN:field:type}`` expanded to one Python regex with named groups.

Why one regex: a grok expression compiles to exactly what an ``extract`` pattern is, so it runs
the same fused code and predicate pushdown (``pipenb/engine/pushdown.py``) still applies. The
library (``grok_patterns.txt``) follows the definitions Logstash documents; a pipe may add or
override patterns with ``patterns: {NAME: regex}``.

A field named twice (the two halves of ``HTTPD_ERRORLOG`` both capture ``timestamp``) cannot be
two groups of one name in Python; later ones get a hidden group name and are folded back into
the field after the match (the last non-empty capture wins).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

LIBRARY_FILE = Path(__file__).with_name("grok_patterns.txt")
TYPES = ("int", "float")
_REF = re.compile(r"%\{([^}:]*)(?::([^}:]*))?(?::([^}:]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_DEPTH = 40


class GrokError(ValueError):
    """A grok expression that cannot be compiled: says which name or field, and the fix."""


@dataclass(frozen=True)
class GrokPattern:
    """A compiled grok expression: the regex source, type conversions, duplicate groups."""

    regex: str
    converts: dict[str, str] = field(default_factory=dict)  # field -> "int" | "float"
    aliases: dict[str, str] = field(default_factory=dict)  # hidden group -> field

    @property
    def fields(self) -> list[str]:
        names = [n for n in re.compile(self.regex).groupindex if n not in self.aliases]
        return names


@lru_cache(maxsize=1)
def library() -> dict[str, str]:
    """The built-in patterns, read once from the data file."""
    out: dict[str, str] = {}
    for line in LIBRARY_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, regex = line.partition(" ")
        out[name] = regex.strip()
    return out


def check_custom(patterns: dict[str, str]) -> None:
    for name, regex in patterns.items():
        if not _NAME.match(str(name)):
            raise GrokError(
                f"custom pattern name {name!r}: use letters, digits and '_' (e.g. MY_ID)"
            )
        if not isinstance(regex, str):
            raise GrokError(f"custom pattern {name!r} must be a regex string")


def compile_grok(expr: str, custom: dict[str, str] | None = None) -> GrokPattern:
    """Expand ``expr`` into one regex; GrokError names the first problem found."""
    custom = dict(custom or {})
    check_custom(custom)
    table = {**library(), **custom}
    seen: dict[str, int] = {}
    converts: dict[str, str] = {}
    aliases: dict[str, str] = {}

    def expand(text: str, stack: tuple[str, ...]) -> str:
        if len(stack) > _MAX_DEPTH:
            raise GrokError(f"grok patterns nest too deep: {' -> '.join(stack[:5])} ...")

        def sub(m: re.Match) -> str:
            name, fld, typ = m.group(1), m.group(2), m.group(3)
            if name not in table:
                where = f" (inside {stack[-1]})" if stack else ""
                close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else (
                        "; define it under patterns: or see the grok pattern list in the reference"
                    )
                )
                raise GrokError(f"unknown grok pattern {name!r}{where}{hint}")
            if name in stack:
                raise GrokError(f"grok pattern {name!r} refers to itself: {' -> '.join(stack)}")
            inner = expand(table[name], (*stack, name))
            if not fld:
                if typ:
                    raise GrokError(f"%{{{name}::{typ}}} converts no field: name one")
                return f"(?:{inner})"
            if not _FIELD.match(fld):
                raise GrokError(
                    f"field name {fld!r} in %{{{name}:{fld}}}: use letters, digits and '_', "
                    "starting with a letter (rename it afterwards with rename:)"
                )
            if typ:
                if typ not in TYPES:
                    raise GrokError(
                        f"type {typ!r} in %{{{name}:{fld}:{typ}}}: use one of {', '.join(TYPES)}"
                    )
                converts[fld] = typ
            n = seen.get(fld, 0)
            seen[fld] = n + 1
            group = fld
            if n:
                group = f"_grok_{fld}_{n + 1}"
                aliases[group] = fld
            return f"(?P<{group}>{inner})"

        return _REF.sub(sub, text)

    regex = expand(expr, ())
    try:
        re.compile(regex)
    except re.error as exc:
        raise GrokError(f"the grok expression is not a valid regex once expanded: {exc}") from None
    return GrokPattern(regex, converts, aliases)


def to_int(v: object) -> int:
    """``%{NUMBER:n:int}``: ``"12"`` -> 12, ``"12.7"`` -> 12 (as Logstash truncates)."""
    s = str(v)
    try:
        return int(s)
    except ValueError:
        return int(float(s))


def to_float(v: object) -> float:
    return float(str(v))
