"""Request bodies for receivers with a format of their own: Elasticsearch/OpenSearch ``_bulk``,
Grafana Loki's push API and OpenTelemetry's OTLP/HTTP JSON logs (``http-post``'s ``codec``).

Each follows the body format its receiver documents:

- ``elasticsearch``: NDJSON, an action line ``{"index": {"_index": INDEX}}`` before each
  document, ending in a newline (``POST /_bulk``, ``Content-Type: application/x-ndjson``);
- ``loki``: ``{"streams": [{"stream": {LABELS}, "values": [[NANOSECONDS, LINE], ...]}]}``
  (``POST /loki/api/v1/push``), one stream per distinct label set;
- ``otlp``: ``{"resourceLogs": [{"resource": ..., "scopeLogs": [{"scope": ...,
  "logRecords": [...]}]}]}`` (``POST /v1/logs``), with ``timeUnixNano`` as a string, the
  message as ``body.stringValue`` and the other fields as ``attributes``.

For Loki and OTLP the line is the event's ``message`` (or its JSON when it has none), and the
time its ``timestamp`` (Unix seconds, or ISO 8601) or now.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson

from pipenb.engine.base import Event

CONTENT_TYPES = {
    "elasticsearch": "application/x-ndjson",
    "loki": "application/json",
    "otlp": "application/json",
}

# OTLP severity numbers (the first of each range) by syslog-style name
_SEVERITY = {"trace": 1, "debug": 5, "info": 9, "notice": 10, "warning": 13, "warn": 13,
             "err": 17, "error": 17, "crit": 21, "critical": 21, "alert": 22, "emerg": 23,
             "fatal": 21}  # fmt: skip


def _nanos(ev: Event) -> int:
    ts = ev.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return int(ts * 1e9) if ts < 1e12 else int(ts)
    if isinstance(ts, str):
        try:
            when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return int(when.timestamp() * 1e9)
    return time.time_ns()


def _line(ev: Event) -> str:
    msg = ev.get("message")
    if isinstance(msg, str):
        return msg
    return orjson.dumps(ev, default=str).decode()


def elasticsearch(events: list[Event], index: str) -> bytes:
    action = orjson.dumps({"index": {"_index": index}})
    parts = []
    for e in events:
        parts.append(action)
        parts.append(orjson.dumps(e, default=str))
    return b"\n".join(parts) + b"\n"


def loki(events: list[Event], labels: dict[str, str], label_fields: list[str]) -> bytes:
    streams: dict[tuple, list[list[str]]] = {}
    for e in events:
        key = tuple(sorted({**labels, **{f: str(e[f]) for f in label_fields if f in e}}.items()))
        streams.setdefault(key, []).append([str(_nanos(e)), _line(e)])
    return orjson.dumps({"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]})


def _any_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": _attributes(v)}}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_any_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attributes(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _any_value(v)} for k, v in d.items() if v is not None]


def otlp(events: list[Event], service: str) -> bytes:
    records = []
    for e in events:
        rec: dict[str, Any] = {"timeUnixNano": str(_nanos(e)), "body": {"stringValue": _line(e)}}
        sev = e.get("severity") or e.get("level")
        if isinstance(sev, str):
            rec["severityText"] = sev
            if sev.lower() in _SEVERITY:
                rec["severityNumber"] = _SEVERITY[sev.lower()]
        rest = {k: v for k, v in e.items() if k not in ("message", "timestamp")}
        if rest:
            rec["attributes"] = _attributes(rest)
        records.append(rec)
    resource = {"attributes": _attributes({"service.name": service})}
    return orjson.dumps(
        {"resourceLogs": [{"resource": resource,
                           "scopeLogs": [{"scope": {"name": "pipenb"}, "logRecords": records}]}]}
    )  # fmt: skip
