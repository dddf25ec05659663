"""``grok`` (and ``parse: {format: grok}``): named patterns such as ``%{COMBINEDAPACHELOG}``.

A grok expression is expanded once, at validation, into a single regex (``pipenb/lang/grok.py``)
and then runs as an ``extract`` does: the same fused code, the same predicate pushdown. Only the
``:int``/``:float`` suffixes and fields captured twice need a few statements after the match.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipenb.engine.actions.common import step
from pipenb.engine.actions.extract import ExtractOptions, extract_code
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace
from pipenb.lang.grok import GrokPattern, compile_grok, to_float, to_int
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand
from pipenb.lang.types import FieldName


class GrokOptions(ActionOptions):
    """Options of ``grok``.

    ``pattern`` is one grok expression or a list tried in order (first match wins), e.g.
    ``"%{COMBINEDAPACHELOG}"`` or ``"%{IP:client} %{WORD:method} %{NUMBER:bytes:int}"``.
    ``%{NAME}`` matches the library pattern NAME without keeping it; ``%{NAME:field}`` keeps it
    as ``field``; ``%{NAME:field:int}`` (or ``:float``) converts it too. Text around the
    references is a regex. ``patterns`` adds or overrides named patterns for this action
    (``patterns: {TICKET: 'T-\\d+'}``, then ``%{TICKET:ticket}``). ``field`` (default ``_raw``)
    is matched; ``remove: true`` deletes it after a match. ``on-miss``: ``keep`` (default) the
    event unchanged, ``drop`` it, or send it to ``errors:`` (``error``). A field captured twice
    (in two alternatives) keeps the last non-empty capture. ``- grok: EXPR`` is short for
    ``- grok: {pattern: EXPR}``. The pattern library is listed in the reference.
    """

    field: FieldName = "_raw"
    pattern: str | list[str]
    patterns: dict[str, str] = Field(default_factory=dict)
    remove: bool = False
    on_miss: Literal["keep", "drop", "error"] = "keep"

    @model_validator(mode="after")
    def _compiles(self) -> GrokOptions:
        compiled(self.pattern, self.patterns)
        return self


def compiled(pattern: str | list[str], custom: dict[str, str]) -> list[GrokPattern]:
    """Each expression compiled; raises GrokError (a ValueError, so validation locates it)."""
    exprs = [pattern] if isinstance(pattern, str) else list(pattern)
    if not exprs:
        raise ValueError("pattern: give at least one grok expression")
    out = [compile_grok(x, custom) for x in exprs]
    for x, g in zip(exprs, out):
        if not g.fields:
            raise ValueError(
                f"grok expression {x!r} keeps no field: name what to keep, e.g. %{{IP:client}}"
            )
    return out


def as_extract(
    field: str,
    pattern: str | list[str],
    custom: dict[str, str],
    *,
    remove: bool,
    on_miss: str,
    when: str | None,
) -> tuple[ExtractOptions, list[GrokPattern]]:
    """The extract a grok action is, and its compiled expressions (for the after-match code)."""
    grok = compiled(pattern, custom)
    regexes = [g.regex for g in grok]
    ex = ExtractOptions.model_construct(
        field=field,
        pattern=regexes[0] if len(regexes) == 1 else regexes,
        fields=None,
        target=None,
        remove=remove,
        on_miss=on_miss,
        when=when,
    )
    return ex, grok


def after_match(grok: list[GrokPattern], ns: Namespace) -> tuple[list[str], set[str]]:
    """Statements folding duplicate captures and converting typed fields, and the fields whose
    value so differs from the captured text (pushdown must not read them from the match)."""
    code: list[str] = []
    changed: set[str] = set()
    aliases = {a: f for g in grok for a, f in g.aliases.items()}
    converts = {f: t for g in grok for f, t in g.converts.items()}
    for alias, fld in aliases.items():
        code.append(f"_x = e.pop({alias!r}, None)\nif _x is not None:\n    e[{fld!r}] = _x")
        changed.add(fld)
    if converts:
        fns = {"int": ns.const(to_int, "to_int"), "float": ns.const(to_float, "to_float")}
        for fld, typ in converts.items():
            code.append(f"_x = e.get({fld!r})\nif _x is not None:\n    e[{fld!r}] = {fns[typ]}(_x)")
            changed.add(fld)
    return code, changed


def match_checks(grok: list[GrokPattern], ns: Namespace) -> list[str]:
    """Statements converting, on the match ``_m``, every capture a typed field may take its
    value from: they raise wherever ``after_match``'s conversions might (a filter pushed down
    before them must not drop an event they fail; ``pushdown.fuse_extract_filter``). Some
    captures are folded away before the conversion, so they may raise where it would not:
    the pushed filter is then just not decided on the match."""
    code: list[str] = []
    fns = {"int": ns.const(to_int, "to_int"), "float": ns.const(to_float, "to_float")}
    for g in grok:
        groups = re.compile(g.regex).groupindex
        for fld, typ in g.converts.items():
            for name in (fld, *(a for a, f in g.aliases.items() if f == fld)):
                if name in groups:
                    code.append(f"_c = _m[{name!r}]\nif _c is not None:\n    {fns[typ]}(_c)")
    return code


def grok_code(ex: ExtractOptions, grok: list[GrokPattern], ns: Namespace) -> list[str]:
    after, _ = after_match(grok, ns)
    return extract_code(ex, ns, after_build=after)


@registry.register("action", "grok", GrokOptions, shorthand=scalar_shorthand("pattern"))
def grok_action(opts: GrokOptions, ctx: RunContext) -> EventStep:
    """Match a field against grok patterns (%{COMBINEDAPACHELOG}, %{IP:client}, ...)."""
    ex, grok = extract_of(opts)
    ns = Namespace()
    return step(opts, grok_code(ex, grok, ns), ns)


def extract_of(opts: object) -> tuple[ExtractOptions, list[GrokPattern]]:
    """``grok`` options or ``parse: {format: grok}`` options as an extract."""
    on_miss = getattr(opts, "on_miss", None)
    if on_miss is None:  # parse's on-error: error | keep | drop
        on_miss = opts.on_error  # type: ignore[attr-defined]
    return as_extract(
        opts.field,  # type: ignore[attr-defined]
        opts.pattern,  # type: ignore[attr-defined]
        dict(opts.patterns or {}),  # type: ignore[attr-defined]
        remove=opts.remove,  # type: ignore[attr-defined]
        on_miss=on_miss,
        when=opts.when,  # type: ignore[attr-defined]
    )
