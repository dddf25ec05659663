"""``mask``: replace regex matches (emails, IPs, card numbers, tokens) inside text fields."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from pydantic import Field, field_validator

from pipenb.engine.actions.common import get_src, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace
from pipenb.lang.regexes import compile_user
from pipenb.lang.registry import ActionOptions, registry
from pipenb.lang.types import FieldList

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_IPV6 = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,4}}:{_IPV4}",  # ::ffff:1.2.3.4 style, with a head
        rf"::(?:[fF]{{4}}(?::0{{1,4}})?:)?{_IPV4}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?:(?::{_H}){{1,7}}|:)",
    ]
)

#: Named patterns for ``pattern:``. ``credit-card`` also checks the Luhn digit, so that long
#: numbers that are not card numbers (ids, epoch milliseconds) are left alone.
PRESETS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
    "ipv4": rf"(?<![\d.]){_IPV4}(?!\.?\d)",
    "ipv6": rf"(?<![\w:.])(?:{_IPV6})(?![\w:]|\.\d)",
    "credit-card": r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])",
    "ssn": r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])",
    "bearer-token": r"(?i)(?<=\bbearer[ \t])[ \t]*[A-Za-z0-9\-._~+/]+=*",
}


class MaskOptions(ActionOptions):
    """Options of ``mask``.

    In each of ``fields`` (text values only; other values and missing fields are left alone),
    every match of ``pattern`` is replaced by ``with`` (``***`` by default, taken literally).
    ``pattern`` is a regular expression or a preset: ``email``, ``ipv4``, ``ipv6``,
    ``credit-card`` (13 to 19 digits, spaces or dashes between, passing the Luhn check), ``ssn``
    (``123-45-6789``) or ``bearer-token`` (the token after ``Bearer``, which stays).
    """

    fields: FieldList = Field(min_length=1)
    pattern: str
    with_: str = Field("***", alias="with")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if v in PRESETS:
            return v
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(
                f"invalid regular expression: {exc}; or use a preset: {', '.join(PRESETS)}"
            ) from None
        if rx.fullmatch("") is not None:
            raise ValueError(
                f"pattern {v!r} matches the empty text, so it would put the replacement between "
                "every character; make it match at least one character"
            )
        return v


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_replacer(replacement: str) -> Callable[[re.Match], str]:
    def repl(m: re.Match) -> str:
        text = m.group()
        digits = text.replace(" ", "").replace("-", "")
        return replacement if _luhn(digits) else text

    return repl


def _literal(replacement: str, m: re.Match) -> str:
    return replacement


def _masker(opts: MaskOptions) -> Callable[[str], str]:
    """``text -> masked text``: ``re.sub`` bound to the pattern and a literal replacement."""
    # presets are ours and known to be fast; a pattern of the user's gets the time limit
    rx = (
        re.compile(PRESETS[opts.pattern]) if opts.pattern in PRESETS else compile_user(opts.pattern)
    )
    if opts.pattern == "credit-card":
        return functools.partial(rx.sub, _card_replacer(opts.with_))
    if "\\" in opts.with_:
        # A template with backslashes would be parsed by ``re`` (and imported lazily, which the
        # generated code's empty builtins cannot do): a function returns it literally instead.
        return functools.partial(rx.sub, functools.partial(_literal, opts.with_))
    return functools.partial(rx.sub, opts.with_)


@registry.register("action", "mask", MaskOptions)
def mask_action(opts: MaskOptions, ctx: RunContext) -> EventStep:
    """Replace matches of a regex or preset (email, ipv4, ipv6, ...) inside text fields."""
    ns = Namespace()
    ns.values["_str"] = str
    sub = ns.const(_masker(opts), "mask")
    code = []
    for field in opts.fields:
        code.append(f"_v = {get_src(field)}")
        code.append(f"if _v.__class__ is _str:\n    {set_code(field, f'{sub}(_v)', ns)}")
    return step(opts, code, ns)
