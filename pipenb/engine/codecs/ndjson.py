"""NDJSON serialisation that isolates bad events: what the outputs write, and ``http-server``'s
answers. An event orjson cannot encode becomes a reject for ``errors:``, never a failed batch."""

from __future__ import annotations

import orjson

from pipenb.engine.base import Event

_NL = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps


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
        try:
            parts.append(_dumps(e, option=_NL))
        except TypeError as exc:
            try:
                parts.append(_dumps(e, default=str, option=_NL))
            except TypeError:
                exact = _exact_json(e)  # integers past 64 bits: orjson refuses them
                if exact is None:
                    rejects.append((e, f"cannot encode event as JSON: {exc}"))
                else:
                    parts.append(exact)
    return b"".join(parts), rejects


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
