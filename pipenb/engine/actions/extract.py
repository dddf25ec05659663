"""``extract``: regular expressions with named groups pull fields out of a text field."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import model_validator

from pipenb.engine.actions.common import get_src, pop_code, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace
from pipenb.lang.regexes import compile_user
from pipenb.lang.registry import ActionOptions, registry
from pipenb.lang.types import FieldList, Regex


class ExtractOptions(ActionOptions):
    """Options of ``extract``.

    ``pattern`` is one regex or a list tried in order (first match wins). Named groups become
    fields; with unnamed groups, ``fields`` names them in order. ``target`` puts the captures
    under one object instead of the event's top level. ``on-miss`` says what happens to an event
    the pattern does not match: ``keep`` it unchanged, ``drop`` it, or send it to ``errors:``.
    A pattern that takes more than 1s (CPU) on one value (catastrophic backtracking) sends that
    event to ``errors:`` saying so, and the pipe goes on (``pipenb.lang.regexes``).
    """

    field: str = "_raw"
    pattern: Regex | list[Regex]
    fields: FieldList | None = None
    target: str | None = None
    remove: bool = False
    on_miss: Literal["keep", "drop", "error"] = "keep"

    @model_validator(mode="after")
    def _groups(self) -> ExtractOptions:
        for p in self.patterns:
            rx = re.compile(p)
            if self.fields is None and not rx.groupindex:
                raise ValueError(
                    f"pattern {p!r} has no named groups: write (?P<name>...) "
                    "or list the group names in fields: [...]"
                )
            if self.fields is not None and rx.groups != len(self.fields):
                raise ValueError(
                    f"pattern {p!r} has {rx.groups} groups but fields lists {len(self.fields)}"
                )
        return self

    @property
    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)


def _first_match(rxs: tuple[Any, ...], v: str) -> Any:
    for rx in rxs:
        m = rx.search(v)
        if m is not None:
            return m
    return None


def _nonnull(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@registry.register("action", "extract", ExtractOptions)
def extract_action(opts: ExtractOptions, ctx: RunContext) -> EventStep:
    """Apply a regex to a field; named groups (or ``fields``) become event fields."""
    ns = Namespace()
    return step(opts, extract_code(opts, ns), ns)


def extract_code(
    opts: ExtractOptions,
    ns: Namespace,
    *,
    before_search: Sequence[str] = (),
    before_build: Sequence[str] = (),
    after_miss: Sequence[str] = (),
    after_build: Sequence[str] = (),
) -> list[str]:
    """Statements of an extract; ``before_search`` runs once ``_v`` holds the field's value
    (before a value that is not a string is made one), ``before_build`` on a match before the
    event changes, ``after_build`` after the captures ``_d`` were merged (grok's type
    conversions)."""
    ns.values["isinstance"] = isinstance
    ns.values["_str"] = str
    ns.values.setdefault("_EventError", EventError)
    rxs = [compile_user(p) for p in opts.patterns]  # bounded in time unless provably linear
    if len(rxs) == 1:
        rx = ns.const(rxs[0], "rx")
        search = f"{rx}.search(_v)"
    else:
        ns.values["_first_match"] = _first_match
        search = f"_first_match({ns.const(tuple(rxs), 'rxs')}, _v)"
    code = [
        f"_v = {get_src(opts.field)}",
        *before_search,
        "if _v is not None and not isinstance(_v, _str):\n    _v = _str(_v)",
        f"_m = {search} if _v is not None else None",
    ]
    if opts.fields is not None:
        names = ns.const(tuple(opts.fields), "names")
        captured = f"dict(zip({names}, _m.groups()))"
        ns.values["dict"], ns.values["zip"] = dict, zip
    else:
        captured = "_m.groupdict()"
    ns.values["_nonnull"] = _nonnull
    hit = [*before_build, f"_d = {captured}", "if None in _d.values():\n    _d = _nonnull(_d)"]
    if opts.remove:
        hit.append(pop_code(opts.field, ns))
    if opts.target:
        hit.append(set_code(opts.target, "_d", ns))
    else:
        hit.append("e.update(_d)")
    hit.extend(after_build)
    if opts.on_miss == "keep":
        miss: list[str] = list(after_miss)
    elif opts.on_miss == "drop":
        miss = ["DROP"]
    else:
        msg = ns.const(f"pattern did not match field {opts.field!r}", "msg")
        miss = [f"raise _EventError({msg})"]
    body = "if _m is not None:\n" + _indent(hit)
    if miss:
        body += "\nelse:\n" + _indent(miss)
    code.append(body)
    return code


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + sub for stmt in lines for sub in stmt.split("\n"))
