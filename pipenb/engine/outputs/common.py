"""What every output shares: ``batch:`` options and NDJSON serialisation that isolates bad events."""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import Field

from pipenb.engine.base import Event
from pipenb.lang.registry import Options
from pipenb.lang.types import Duration, Size

_NL = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps


class BatchOptions(Options):
    """``batch: {size: N, timeout: DURATION}``: write when N events wait or the oldest waited."""

    size: int = Field(default=1000, ge=1)
    timeout: Duration = 0.25


class OutputOptions(Options):
    """``buffer: disk`` (http-post, tcp, udp, syslog, file) keeps what the sink has not taken
    on disk (``pipenb.engine.outputs.disk``), bounded by ``buffer-size``."""

    batch: BatchOptions = BatchOptions()
    buffer: Literal["memory", "disk"] = "memory"
    buffer_size: Size = Field(default=1 << 30, ge=1 << 16)


def ndjson(events: list[Event]) -> tuple[bytes, list[tuple[Event, str]]]:
    """One NDJSON blob; events orjson cannot encode are returned as rejects, not raised."""
    try:
        # One orjson call for the batch; its "},{" separators become newlines. When the count
        # of "},{" shows one inside an event (a string, an array of objects), encode one by one.
        blob = _dumps(events)
    except TypeError:
        pass
    else:
        if blob.count(b"},{") == len(events) - 1:
            return blob[1:-1].replace(b"},{", b"}\n{") + b"\n", []
        return b"".join([_dumps(e, option=_NL) for e in events]), []
    parts: list[bytes] = []
    rejects: list[tuple[Event, str]] = []
    for e in events:
        line = encode_one(e)
        if type(line) is bytes:
            parts.append(line)
        else:
            rejects.append((e, line))
    return b"".join(parts), rejects


def encode_one(e: Event) -> bytes | str:
    """One event as an NDJSON line, or why it cannot be one (the reject reason)."""
    try:
        return _dumps(e, option=_NL)
    except TypeError as exc:
        try:
            return _dumps(e, default=str, option=_NL)
        except TypeError:
            exact = _exact_json(e)  # integers past 64 bits: orjson refuses them
            return f"cannot encode event as JSON: {exc}" if exact is None else exact


def _exact_json(e: Event) -> bytes | None:
    """The stdlib's JSON of an event (every digit of a big integer kept), or None."""
    import json

    try:
        text = json.dumps(
            e, ensure_ascii=False, default=str, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError, RecursionError):
        return None
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode() + b"\n"
