"""Turn raw bytes from line-oriented inputs into events: ``format: lines``, ``json`` or ``syslog``.

This is on the hot path of every file and socket input, so it works on whole chunks: one decode
per chunk for lines, and one tight ``orjson.loads`` loop for JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from pipenb.engine.base import Event

_loads = orjson.loads
_JSONError = orjson.JSONDecodeError
#: every digit as "0", everything else as " ": a run of 20 digits (an integer past 64 bits has
#: 20 or more) is then a plain substring search. On a 1 MiB chunk this takes about 1 ms where a
#: regular expression took 20 ms, which made the JSON path of every file input 1.8x slower.
#: digits become "0", the minus sign stays, everything else becomes a space
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else 45 if i == 45 else 32 for i in range(256))
_FOUR_DIGITS = b"0" * 4
_NINETEEN_DIGITS = b"0" * 19
_TWENTY_DIGITS = b"0" * 20
_MINUS_NINETEEN_DIGITS = b"-" + b"0" * 19


#: "}" "," "{" with JSON's whitespace between: where one object ends and the next starts
_TWO_OBJECTS = re.compile(rb"\}[ \t\r]*,[ \t\r]*\{")


def _has_long_digits(data: bytes) -> bool:
    """Might ``data`` hold an integer orjson would turn into a float? orjson keeps integers from
    -2**63 to 2**64-1 exact: past that there are 20 digits, or a minus sign and 19.

    Both of those contain 19 digits in a row, which ordinary data hardly ever has. Every 4th
    byte is looked at first: in a run of 19 digits the first byte taken lies within its first
    4 and the fourth 12 bytes further, still inside it, so without 4 digits in a row among the
    bytes taken there is no such run (a quarter of the bytes translated; W1's 64 KiB pieces
    15.7 -> 9.7 ms per 100,000 lines, none of them passing on). Only data that passes is
    translated whole and searched for that run, and only data that has it for the two exact
    shapes (one search instead of two: 0.17 -> 0.14 s over W1's 1M lines)."""
    if _FOUR_DIGITS not in data[::4].translate(_DIGITS_AS_ZERO):
        return False
    shape = data.translate(_DIGITS_AS_ZERO)
    return _NINETEEN_DIGITS in shape and (
        _TWENTY_DIGITS in shape or _MINUS_NINETEEN_DIGITS in shape
    )


def _loads_exact(line: bytes) -> Any:
    """``orjson.loads``, except that integers past 64 bits keep every digit (the stdlib's
    parser, for the few lines that hold one; orjson would make them floats)."""
    if _has_long_digits(line):
        try:
            return json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _JSONError(str(exc), line.decode("utf-8", "replace"), 0) from None
    return _loads(line)


def reject(raw: Any, message: str, stage: str = "input") -> Event:
    """A dead-letter record for something that never became an event."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    return {"_raw": raw, "_error": {"stage": stage, "message": message}}


def decode_chunk(
    chunk: bytes,
    fmt: str,
    max_line: int | None = None,
    on_cut: Callable[[list[int]], None] | None = None,
    keep_raw: bool = False,
    invalid_utf8: str = "error",
) -> tuple[list[Event], list[Event]]:
    """Events and rejects from a chunk of complete lines (no trailing partial line).

    Lines longer than ``max_line`` (bytes for JSON, characters for text) are cut into pieces;
    ``on_cut`` is then called with the indices of the lines that were cut. ``keep_raw`` keeps
    each syslog line in ``_raw``. A JSON line with invalid UTF-8 is a reject of its own
    (``invalid_utf8="error"``) or decoded with U+FFFD in place of the bad bytes (``"replace"``);
    the other lines of the chunk are never affected.
    """
    if not chunk:
        return [], []
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    if chunk.endswith(b"\n"):
        chunk = chunk[:-1]
    if fmt == "lines":
        lines = chunk.decode("utf-8", "replace").split("\n")
        if max_line and len(chunk) > max_line and max(map(len, lines)) > max_line:
            lines = _cut(lines, max_line, on_cut)
        return [{"_raw": line} for line in lines], []
    if fmt == "syslog":
        from pipenb.engine.codecs.syslog_decode import decode_lines as syslog_lines

        lines = chunk.decode("utf-8", "replace").split("\n")
        if max_line and len(chunk) > max_line and max(map(len, lines)) > max_line:
            lines = _cut(lines, max_line, on_cut)
        return syslog_lines(lines, keep_raw)
    raw = chunk.split(b"\n")
    if max_line and len(chunk) > max_line and max(map(len, raw)) > max_line:
        raw = _cut(raw, max_line, on_cut)
    if _has_long_digits(chunk):  # orjson turns integers past 64 bits into floats
        return _decode_each(raw, invalid_utf8)
    # One orjson call for the chunk as an array ("\n" -> ","), where it surely gives each
    # line's own object (W1's 1M lines: 1.55 s of CPU against 1.66 s a call per line, the test
    # below included; 1.43 s without that test, which was wrong): every line starts with "{"
    # and ends with "}", the array holds one object per line, and no line holds "}" "," "{"
    # with only whitespace between (in a string or not). That is enough: were some line not one
    # object alone, a comma put between two lines would be nested in a value, so one of the
    # array's top-level commas would lie inside a line, between the "}" that ends an object and
    # the "{" that starts the next. (Without that last test, '{"a": [{"d": 1}' and '{"e": 2}]}'
    # nested into one element while '{"x": 1}, {"y": 2}' split into two: the count matched.)
    n = len(raw)
    if (
        raw[0][:1] == b"{"
        and raw[-1][-1:] == b"}"
        and chunk.count(b"\n{") == n - 1
        and chunk.count(b"}\n") == n - 1
        and _TWO_OBJECTS.search(chunk) is None
    ):
        try:
            events = _loads(b"[" + chunk.replace(b"\n", b",") + b"]")
        except _JSONError:
            return _decode_each(raw, invalid_utf8)
        if len(events) == n and set(map(type, events)) == {dict}:
            return events, []
    return _decode_each(raw, invalid_utf8)


def _cut(lines: list, size: int, on_cut: Callable[[list[int]], None] | None = None) -> list:
    out = []
    cut = []
    for n, line in enumerate(lines):
        if len(line) <= size:
            out.append(line)
        else:
            cut.append(n)
            out.extend(line[i : i + size] for i in range(0, len(line), size))
    if on_cut is not None:
        on_cut(cut)
    return out


def json_reject(line: bytes, exc: Exception) -> Event:
    """The dead letter of a JSON line orjson refused, saying whether its bytes or its JSON are
    at fault (the event-batch path and the engine's chunk path both use it)."""
    bad = _bad_utf8(line)
    if bad is None:
        return reject(line, f"not valid JSON: {exc}")
    return reject(line, f"invalid UTF-8 at byte {bad}; set invalid-utf8: replace to keep such "
                        "lines (U+FFFD for the bad bytes)")  # fmt: skip


def _decode_each(raw: list[bytes], invalid_utf8: str = "error") -> tuple[list[Event], list[Event]]:
    events: list[Event] = []
    rejects: list[Event] = []
    append = events.append
    loads = _loads_exact if any(map(_has_long_digits, raw)) else _loads
    for line in raw:
        try:
            ev = loads(line)
        except _JSONError as exc:
            if not line.strip():
                continue
            if invalid_utf8 != "replace" or _bad_utf8(line) is None:
                rejects.append(json_reject(line, exc))
                continue
            try:
                ev = loads(line.decode("utf-8", "replace").encode())
            except _JSONError as exc2:
                rejects.append(reject(line, f"not valid JSON: {exc2}"))
                continue
        if type(ev) is dict:
            append(ev)
        else:
            rejects.append(reject(line, 'a JSON line must be an object, e.g. {"msg": "..."}'))
    return events, rejects


def _bad_utf8(line: bytes) -> int | None:
    """The offset of the first byte that is not UTF-8, or None when the line is valid."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def decode_message(
    data: bytes, fmt: str, keep_raw: bool = False, invalid_utf8: str = "error"
) -> tuple[list[Event], list[Event]]:
    """One whole message (an octet-counted frame, a syslog datagram) that may hold newlines."""
    if data.endswith(b"\n"):
        data = data[:-1]
    text = data.decode("utf-8", "replace")
    if fmt == "lines":
        return [{"_raw": text}], []
    if fmt == "syslog":
        from pipenb.engine.codecs.syslog_decode import decode_lines as syslog_lines

        return syslog_lines([text], keep_raw)
    return _decode_each([data], invalid_utf8)


def decode_lines(lines: list[str], fmt: str) -> tuple[list[Event], list[Event]]:
    """Events from already split text lines (echo, exec)."""
    if fmt == "lines":
        return [{"_raw": s} for s in lines], []
    return decode_chunk("\n".join(lines).encode(), fmt)
