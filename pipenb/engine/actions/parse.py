"""``parse``: decode a text field as JSON, CSV, key=value pairs, logfmt or syslog into fields."""

from __future__ import annotations

import copy
import csv
import re
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import model_validator

from pipenb.engine.actions.common import get_src, pop_code, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand
from pipenb.lang.types import FieldName

Format = Literal["json", "csv", "kv", "logfmt", "syslog", "grok"]


class ParseOptions(ActionOptions):
    """Options of ``parse``.

    ``format`` is ``json``, ``csv``, ``kv``, ``logfmt`` or ``syslog`` (RFC 3164 and RFC 5424:
    facility, severity, timestamp, host, app, pid, msgid, structured_data, message) (``- parse: json`` is short for
    ``- parse: {format: json}``). ``field`` (default ``_raw``) is decoded; a missing or null field
    is left alone. Without ``target`` the decoded keys are merged into the event's top level (so
    the value must decode to an object); with ``target`` the decoded value is put under that
    (dotted) field. ``remove: true`` deletes ``field`` after a successful parse. Values stay
    strings: use ``convert`` to cast them.

    - ``csv``: one line; ``columns`` names the values in order, values beyond them are named
      ``column_N`` (N counts from 1 in the whole row) and missing ones are absent. ``delimiter``
      is one character, ``,`` by default.
    - ``kv``: ``a=1 b="two words"``: every ``key=value`` pair is picked out and other text is
      ignored; quoted values are unquoted. ``delimiter`` separates pairs (whitespace by default),
      ``separator`` separates a key from its value (``=`` by default).
    - ``logfmt``: ``level=info msg="a \\"quoted\\" word" debug``: quoted values with escapes; a
      bare key is ``true``.

    - ``grok``: ``pattern`` is a grok expression (or a list, first match wins), e.g.
      ``"%{COMBINEDAPACHELOG}"``, with ``patterns`` for custom named patterns; the same as the
      ``grok`` action (see there), where a line that does not match is an error unless
      ``on-error`` says otherwise. No ``target``.

    ``on-error`` says what happens to an event whose field cannot be decoded: send it to
    ``errors:`` (``error``, the default), ``keep`` it unchanged, or ``drop`` it.
    """

    field: FieldName = "_raw"
    format: Format
    target: FieldName | None = None
    remove: bool = False
    columns: list[FieldName] | None = None
    delimiter: str | None = None
    separator: str | None = None
    on_error: Literal["error", "keep", "drop"] = "error"
    pattern: str | list[str] | None = None
    patterns: dict[str, str] | None = None

    @model_validator(mode="after")
    def _per_format(self) -> ParseOptions:
        if self.format == "grok":
            if self.pattern is None:
                raise ValueError(
                    'format: grok needs pattern:, e.g. pattern: "%{COMBINEDAPACHELOG}"'
                )
            if self.target is not None:
                raise ValueError("target does not apply to format: grok (fields go top-level)")
            from pipenb.engine.actions.grok import compiled

            compiled(self.pattern, dict(self.patterns or {}))
        elif self.pattern is not None or self.patterns is not None:
            raise ValueError(f"pattern and patterns apply to format: grok, not {self.format}")
        if self.columns is not None and self.format != "csv":
            raise ValueError(f"columns applies to format: csv, not {self.format}")
        if self.separator is not None and self.format != "kv":
            raise ValueError(f"separator applies to format: kv, not {self.format}")
        if self.delimiter is not None:
            if self.format not in ("csv", "kv"):
                raise ValueError(f"delimiter applies to format: csv or kv, not {self.format}")
            if self.format == "csv" and len(self.delimiter) != 1:
                raise ValueError(f"the csv delimiter must be one character, got {self.delimiter!r}")
            if not self.delimiter:
                raise ValueError("delimiter must not be empty")
        if self.separator is not None and not self.separator:
            raise ValueError("separator must not be empty")
        return self


# ---------------------------------------------------------------------------------- decoders
# Each decoder takes the field's value and returns the decoded value or raises ValueError.


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    raise ValueError(f"expected text, got {_kind(v)}")


def _kind(v: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if v is None:
        return "null"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return "a number"
    return kinds.get(type(v), type(v).__name__)


def _json_decoder(copy_decoded: bool) -> Callable[[Any], Any]:
    loads = orjson.loads

    def decode(v: Any) -> Any:
        if isinstance(v, (str, bytes, bytearray)):
            return loads(v)
        if isinstance(v, (dict, list)):  # already decoded, e.g. by a json input
            return copy.deepcopy(v) if copy_decoded else v
        raise ValueError(f"expected JSON text, got {_kind(v)}")

    return decode


def _csv_decoder(columns: tuple[str, ...], delimiter: str) -> Callable[[Any], dict]:
    reader = csv.reader
    ncols = len(columns)

    def decode(v: Any) -> dict:
        try:
            row = next(reader((_text(v),), delimiter=delimiter, strict=True), [])
        except csv.Error as exc:
            if "new-line" in str(exc):
                raise ValueError("a line break outside quotes (csv reads one line)") from None
            raise ValueError(str(exc)) from None
        out = dict(zip(columns, row))
        for i in range(ncols, len(row)):
            out[f"column_{i + 1}"] = row[i]
        return out

    return decode


_QUOTED = r'"(?P<dq>(?:[^"\\]|\\.)*)"|\'(?P<sq>(?:[^\'\\]|\\.)*)\''
_KV_UNESCAPE = re.compile(r"\\([\"'\\])")


def _kv_pattern(delimiter: str | None, separator: str) -> re.Pattern:
    s = re.escape(separator)
    if delimiter is None:
        start, key, bare = r"(?<!\S)", rf"(?:(?!{s})\S)+", r"\S*"
    else:
        d = re.escape(delimiter)
        start, key, bare = rf"(?:^|(?<={d}))\s*", rf"(?:(?!{s}|{d}).)+", rf"(?:(?!{d}).)*"
    return re.compile(rf"{start}(?P<k>{key}){s}(?:{_QUOTED}|(?P<v>{bare}))", re.S)


def _kv_decoder(delimiter: str | None, separator: str) -> Callable[[Any], dict]:
    rx = _kv_pattern(delimiter, separator)
    strip = delimiter is not None

    def decode(v: Any) -> dict:
        out = {}
        for m in rx.finditer(_text(v)):
            key, dq, sq, bare = m.group("k", "dq", "sq", "v")
            if strip:
                key = key.strip()
            if bare is not None:
                if bare[:1] in ("'", '"'):
                    raise ValueError(f"unterminated quote in the value of {key!r}")
                out[key] = bare.strip() if strip else bare
            else:
                q = dq if dq is not None else sq
                out[key] = _KV_UNESCAPE.sub(r"\1", q) if "\\" in q else q
        return out

    return decode


_LOGFMT = re.compile(
    r'\s*(?P<k>[^\s="]+)(?:=(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>[^\s"]*)))?(?=\s|$)', re.S
)
_LOGFMT_ESC = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "a": "\a", "v": "\v"}


def _unescape(m: re.Match) -> str:
    s = m.group(1)
    if len(s) > 1:
        return chr(int(s[1:], 16))
    return _ESCAPES.get(s, s)


def _logfmt(v: Any) -> dict:
    text = _text(v)
    out: dict[str, Any] = {}
    pos, end = 0, len(text)
    match = _LOGFMT.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            if not text[pos:].strip():
                break
            rest = text[pos:].lstrip()
            raise ValueError(f"cannot read logfmt at column {end - len(rest) + 1}: {rest[:20]!r}")
        key, q, bare = m.group("k", "q", "v")
        if q is not None:
            out[key] = _LOGFMT_ESC.sub(_unescape, q) if "\\" in q else q
        else:
            out[key] = True if bare is None else bare
        pos = m.end()
    return out


def _syslog(v: Any) -> dict:
    """RFC 5424 or RFC 3164, the same decoder as the tcp/udp inputs' ``format: syslog``."""
    from pipenb.engine.codecs.syslog_decode import parse as parse_syslog

    return parse_syslog(v if isinstance(v, str) else str(v))


def _decoder(opts: ParseOptions) -> Callable[[Any], Any]:
    """The step's decoder: returns the decoded value or raises EventError saying why."""
    fmt, field = opts.format, opts.field
    if fmt == "json":
        decode = _json_decoder(copy_decoded=not opts.remove)
    elif fmt == "csv":
        decode = _csv_decoder(tuple(opts.columns or ()), opts.delimiter or ",")
    elif fmt == "kv":
        decode = _kv_decoder(opts.delimiter, opts.separator or "=")
    elif fmt == "syslog":
        decode = _syslog
    else:
        decode = _logfmt
    merge = opts.target is None
    hint = "; fix the input, or set on-error: keep or drop to let such events through"

    def parse(v: Any) -> Any:
        try:
            out = decode(v)
        except ValueError as exc:
            raise EventError(f"parse: field {field!r} is not valid {fmt}: {exc}{hint}") from None
        if merge and not isinstance(out, dict):
            raise EventError(
                f"parse: field {field!r} holds {_kind(out)} in JSON, not an object, so its keys "
                "cannot be merged into the event; set target: to put it under a field"
            )
        return out

    return parse


@registry.register("action", "parse", ParseOptions, shorthand=scalar_shorthand("format"))
def parse_action(opts: ParseOptions, ctx: RunContext) -> EventStep:
    """Decode a field as json, csv, kv, logfmt, syslog or grok into event fields."""
    if opts.format == "grok":
        from pipenb.engine.actions.grok import extract_of, grok_code

        ex, grok = extract_of(opts)
        gns = Namespace()
        return step(opts, grok_code(ex, grok, gns), gns)
    ns = Namespace()
    parse = ns.const(_decoder(opts), "parse")
    apply: list[str] = []
    if opts.remove:
        apply.append(pop_code(opts.field, ns))
    apply.append(set_code(opts.target, "_d", ns) if opts.target else "e.update(_d)")
    if opts.on_error == "error":
        body = [f"_d = {parse}(_v)", *apply]
    else:
        failed = "DROP" if opts.on_error == "drop" else "pass"
        body = [f"try:\n    _d = {parse}(_v)\nexcept _EventError:\n{_indent([failed])}"]
        body.append(f"else:\n{_indent(apply)}")
        body = ["\n".join(body)]
    code = [f"_v = {get_src(opts.field)}", f"if _v is not None:\n{_indent(body)}"]
    return step(opts, code, ns)


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + sub for stmt in lines for sub in stmt.split("\n"))
