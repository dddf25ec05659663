"""Turn raw bytes from line-oriented inputs into events: ``format: lines`` or ``format: json``.

This is on the hot path of every file and socket input, so it works on whole chunks: one decode
per chunk for lines, and one tight ``orjson.loads`` loop for JSON.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from pipenb.engine.base import Event

LineFormat = Literal["lines", "json"]
_loads = orjson.loads
_JSONError = orjson.JSONDecodeError


def reject(raw: Any, message: str, stage: str = "input") -> Event:
    """A dead-letter record for something that never became an event."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    return {"_raw": raw, "_error": {"stage": stage, "message": message}}


def decode_chunk(chunk: bytes, fmt: str) -> tuple[list[Event], list[Event]]:
    """Events and rejects from a chunk of complete lines (no trailing partial line)."""
    if not chunk:
        return [], []
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    if chunk.endswith(b"\n"):
        chunk = chunk[:-1]
    if fmt == "lines":
        text = chunk.decode("utf-8", "replace")
        return [{"_raw": line} for line in text.split("\n")], []
    # One orjson call for the whole chunk parses ~20% faster than a call per line; any bad
    # line (or a non-object) sends us to the per-line loop, which isolates it.
    try:
        events = _loads(b"[" + chunk.replace(b"\n", b",") + b"]")
    except _JSONError:
        pass
    else:
        if set(map(type, events)) == {dict}:
            return events, []
    return _decode_each(chunk)


def _decode_each(chunk: bytes) -> tuple[list[Event], list[Event]]:
    events: list[Event] = []
    rejects: list[Event] = []
    append = events.append
    for line in chunk.split(b"\n"):
        try:
            ev = _loads(line)
        except _JSONError as exc:
            if not line.strip():
                continue
            rejects.append(reject(line, f"not valid JSON: {exc}"))
            continue
        if type(ev) is dict:
            append(ev)
        else:
            rejects.append(reject(line, 'a JSON line must be an object, e.g. {"msg": "..."}'))
    return events, rejects


def decode_lines(lines: list[str], fmt: str) -> tuple[list[Event], list[Event]]:
    """Events from already split text lines (echo, exec)."""
    if fmt == "lines":
        return [{"_raw": s} for s in lines], []
    return decode_chunk("\n".join(lines).encode(), fmt)
