"""Encode events as syslog messages (RFC 5424 or RFC 3164) and frame them (RFC 6587).

The inverse of ``pipenb.engine.codecs.syslog_decode``: the fields that decoder writes (``facility``,
``severity``, ``timestamp``, ``host``, ``app``, ``pid``, ``msgid``, ``structured_data``,
``message``) are the ones read here, so what the syslog input decodes, the syslog output
re-encodes. A field that is missing gets the RFC's nil value or a sensible default (the local
host name, ``notice``, ``user``, now); an event without ``message`` is sent as its JSON.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from typing import Any

import orjson

from pipenb.engine.base import Event
from pipenb.engine.codecs.syslog_decode import FACILITIES, SEVERITIES

_FIELDS = frozenset(
    ("facility", "severity", "timestamp", "host", "app", "pid", "msgid", "structured_data",
     "message", "_raw", "_peer")
)  # fmt: skip
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_BSD = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NAME = re.compile(r"[!-~]+")  # PRINTUSASCII: RFC 5424's HOSTNAME, APP-NAME, PROCID, MSGID
_LOCAL_HOST = socket.gethostname() or "localhost"


def _code(value: Any, names: tuple[str, ...], default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, int) and 0 <= value < len(names):
        return value
    if isinstance(value, str):
        v = value.lower()
        if v in names:
            return names.index(v)
        if v.isdigit() and int(v) < len(names):
            return int(v)
        alias = {"warn": "warning", "error": "err", "emergency": "emerg", "critical": "crit",
                 "information": "info", "informational": "info", "panic": "emerg"}.get(v)  # fmt: skip
        if alias in names:
            return names.index(alias)
    raise ValueError(f"{what} {value!r} is not one of {', '.join(names)} (or 0-{len(names) - 1})")


def _when(value: Any) -> dt.datetime | None:
    """The event's timestamp as an aware datetime, when it is one we can read."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, str):
        if _ISO.fullmatch(value):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        m = _BSD.fullmatch(value)
        if m is not None:  # RFC 3164 has no year nor zone: this year, local time
            mon, day, hms, frac = m.groups()
            h, mi, s = map(int, hms.split(":"))
            now = dt.datetime.now().astimezone()
            us = int((frac or "0")[:6].ljust(6, "0"))
            return now.replace(month=_MONTHS.index(mon) + 1, day=int(day), hour=h, minute=mi,
                               second=s, microsecond=us)  # fmt: skip
    return None


def _name(value: Any, limit: int) -> str:
    if value is None or value == "":
        return "-"
    m = _NAME.search(str(value))
    return m.group()[:limit] if m else "-"


def _sd(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return "-"
    parts = []
    for sd_id, params in value.items():
        items = "".join(f' {_name(k, 32)}="{_escape(v)}"' for k, v in (params or {}).items())
        parts.append(f"[{_name(sd_id, 32)}{items}]")
    return "".join(parts)


def _escape(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _message(ev: Event) -> str:
    msg = ev.get("message")
    if msg is None:
        rest = {k: v for k, v in ev.items() if k not in _FIELDS}
        return orjson.dumps(rest, default=str).decode() if rest else ""
    return msg if isinstance(msg, str) else orjson.dumps(msg, default=str).decode()


def encode(ev: Event, fmt: str = "rfc5424") -> str:
    """One event as a syslog message (no framing); ``ValueError`` for a bad facility/severity."""
    fac = _code(ev.get("facility"), FACILITIES, 1, "facility")
    sev = _code(ev.get("severity"), SEVERITIES, 5, "severity")
    when = _when(ev.get("timestamp")) or dt.datetime.now(dt.timezone.utc)
    host = _name(ev.get("host") or _LOCAL_HOST, 255)
    msg = _message(ev)
    raw_ts = ev.get("timestamp")
    if fmt == "rfc5424":
        if isinstance(raw_ts, str) and _ISO.fullmatch(raw_ts):
            ts = raw_ts  # as written: a relay does not change it
        else:
            ts = when.isoformat(timespec="microseconds" if when.microsecond else "seconds")
            ts = ts.replace("+00:00", "Z")
        head = (
            f"<{fac * 8 + sev}>1 {ts} {host} {_name(ev.get('app'), 48)} "
            f"{_name(ev.get('pid'), 128)} {_name(ev.get('msgid'), 32)} "
            f"{_sd(ev.get('structured_data'))}"
        )
        return f"{head} {msg}" if msg else head
    if isinstance(raw_ts, str) and _BSD.fullmatch(raw_ts):
        ts = raw_ts
    else:
        ts = f"{_MONTHS[when.month - 1]} {when.day:>2} {when:%H:%M:%S}"
        if when.microsecond:
            ts += f".{when.microsecond // 1000:03d}"
    app = ev.get("app")
    tag = ""
    if app:
        tag = _name(app, 32)
        pid = ev.get("pid")
        if pid is not None and pid != "":
            tag += f"[{_name(pid, 128)}]"
        tag += ": "
    return f"<{fac * 8 + sev}>{ts} {host} {tag}{msg}"


def frame(message: str, framing: str) -> bytes:
    """RFC 6587 framing: ``LEN SP MSG`` (octet-counted) or ``MSG LF`` (newline: a newline inside
    the message is written as ``#012``, as rsyslog does, since it would end the frame)."""
    data = message.encode("utf-8", "replace")
    if framing == "octet-counted":
        return b"%d %s" % (len(data), data)
    return data.replace(b"\n", b"#012") + b"\n"
