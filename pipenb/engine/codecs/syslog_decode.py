"""Syslog decoding (``format: syslog``): RFC 5424 and RFC 3164 lines into events.

Shared by the ``tcp`` and ``udp`` inputs (through ``decode_chunk``) and open to any other user
(``parse`` returns one event or raises ``ValueError`` with a message fit for a dead letter).

Fields of an event, each present only when the message carries it:

``facility`` and ``severity`` (names: ``kern``, ``user``, ... ``local7``; ``emerg``, ``alert``,
``crit``, ``err``, ``warning``, ``notice``, ``info``, ``debug``), ``timestamp`` (as written),
``host``, ``app`` (APP-NAME, or the TAG of RFC 3164), ``pid`` (an integer when it is one),
``msgid`` and ``structured_data`` (RFC 5424 only; ``{SD-ID: {PARAM: VALUE}}``) and ``message``.
RFC 5424's ``-`` (nil) leaves a field out.

Decoding is lenient, as syslog-ng's is, because real senders are: what RFC 3164 leaves optional
is optional (Python's ``SysLogHandler`` sends only ``<PRI>msg``), fractional seconds in RFC 3164
timestamps are kept (``May  1 12:00:00.123``), Cisco IOS (``<189>52: host: *Mar  1
18:46:11.123: %SYS-5-CONFIG_I: text``: ``sequence``, ``app`` = the ``%MNEMONIC``) and FortiGate
(``<189>date=... time=... devname="fw" ...``: ``timestamp``, ``host``, ``message`` = the key=value
text) are read. Only a line without ``<PRI>`` (or with one out of range) is rejected.
"""

from __future__ import annotations

import re

from pipenb.engine.base import Event

FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    *(f"local{i}" for i in range(8)),
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(r"<(\d{1,3})>")
# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID [SP SD [SP MSG]]
_RFC5424 = re.compile(r"([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+)(?: (.*))?", re.DOTALL)
_TIMESTAMP_5424 = re.compile(r"-|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
# <PRI>Mmm dd hh:mm:ss SP HOSTNAME SP TAG[PID]: MSG (also with an RFC 3339 timestamp instead)
_RFC3164 = re.compile(
    r"([A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d{1,9})?"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) ?(.*)",
    re.DOTALL,
)
# Cisco IOS: [SEQ: ][HOST: ][*.]Mmm dd [yyyy ]hh:mm:ss[.fff][ TZ]: %FAC-SEV-MNEMONIC: text
_CISCO = re.compile(
    r"(?:(\d+): )?(?:([^\s:]+): )?[*.]?"
    r"([A-Z][a-z]{2} {1,2}\d{1,2} (?:\d{4} )?\d\d:\d\d:\d\d(?:\.\d{1,9})?(?: [A-Z]{2,5})?): "
    r"(%[A-Z0-9_]+-\d-[A-Z0-9_]+): ?(.*)",
    re.DOTALL,
)
# FortiGate: date=YYYY-MM-DD time=hh:mm:ss devname="name" ... (key=value pairs)
_FORTI = re.compile(r"date=(\d{4}-\d\d-\d\d) time=(\d\d:\d\d:\d\d)(?=\s|$)")
_FORTI_HOST = re.compile(r'\bdevname="?([^"\s]+)')
_LENIENT_TAG = re.compile(r"([^\s\[\]:]+)(?:\[([^\]]*)\])?: (.*)", re.DOTALL)
_TAG = re.compile(r"([^\s\[\]:]+)(?:\[([^\]]*)\])?: ?(.*)", re.DOTALL)
_SD_NAME = re.compile(r'[^\s="\]]+')


def parse(line: str) -> Event:
    """One syslog line as an event; ``ValueError`` (with a readable reason) when it is not one."""
    line = line.rstrip("\x00")
    m = _PRI.match(line)
    if m is None:
        raise ValueError("not syslog: a message starts with <PRI>, e.g. <13>")
    pri = int(m.group(1))
    if pri > 191:
        raise ValueError(f"not syslog: priority <{pri}> is out of range (0 to 191)")
    ev: Event = {"facility": FACILITIES[pri >> 3], "severity": SEVERITIES[pri & 7]}
    rest = line[m.end() :]
    m5 = _RFC5424.match(rest)
    if m5 is not None and _TIMESTAMP_5424.fullmatch(m5.group(2)):
        _rfc5424(ev, m5)
        return ev
    if "%" in rest and _cisco(ev, rest):
        return ev
    m3 = _RFC3164.match(rest)
    if m3 is not None:
        _rfc3164(ev, m3)
        return ev
    _lenient(ev, rest)
    return ev


def _cisco(ev: Event, rest: str) -> bool:
    """Cisco IOS's form (``sequence``, ``host``, ``timestamp``, ``app`` = ``%FAC-SEV-MNEMONIC``)."""
    mc = _CISCO.match(rest)
    if mc is None:
        return False
    seq, host, ts, mnemonic, msg = mc.groups()
    if seq is not None:
        ev["sequence"] = int(seq)
    if host is not None:
        ev["host"] = host
    ev["timestamp"] = ts
    ev["app"] = mnemonic
    if msg:
        ev["message"] = msg
    return True


def _lenient(ev: Event, rest: str) -> None:
    """What follows ``<PRI>`` when it is neither RFC nor Cisco: FortiGate, or ``[tag: ]msg``."""
    mf = _FORTI.match(rest)
    if mf is not None:
        ev["timestamp"] = f"{mf.group(1)} {mf.group(2)}"
        mh = _FORTI_HOST.search(rest)
        if mh is not None:
            ev["host"] = mh.group(1)
        ev["message"] = rest
        return
    # Python's SysLogHandler and other minimal senders: "<14>msg" or "<14>app[pid]: msg"
    mt = _LENIENT_TAG.fullmatch(rest)
    if mt is not None:
        app, pid, msg = mt.groups()
        ev["app"] = app
        if pid:
            ev["pid"] = int(pid) if pid.isdigit() else pid
        rest = msg
    if rest:
        ev["message"] = rest


def _rfc5424(ev: Event, m: re.Match[str]) -> None:
    _, ts, host, app, pid, msgid, rest = m.groups()
    for key, value in (("timestamp", ts), ("host", host), ("app", app)):
        if value != "-":
            ev[key] = value
    if pid != "-":
        ev["pid"] = int(pid) if pid.isdigit() else pid
    if msgid != "-":
        ev["msgid"] = msgid
    rest = rest or ""
    if rest.startswith("["):
        sd, end = _structured_data(rest)
        ev["structured_data"] = sd
        rest = rest[end:]
        if rest[:1] == " ":
            rest = rest[1:]
        elif rest:
            raise ValueError(
                f"RFC 5424: expected a space after STRUCTURED-DATA, found {rest[:20]!r}"
            )
    elif rest == "-" or rest.startswith("- "):
        rest = rest[2:]
    if rest.startswith("\ufeff"):  # MSG may start with a UTF-8 byte order mark
        rest = rest[1:]
    if rest:
        ev["message"] = rest


def _structured_data(s: str) -> tuple[dict[str, dict[str, str]], int]:
    """``[id k="v" ...][id2 ...]`` from the start of ``s``: the elements and where they end."""
    out: dict[str, dict[str, str]] = {}
    i, n = 0, len(s)
    while i < n and s[i] == "[":
        m = _SD_NAME.match(s, i + 1)
        if m is None:
            raise ValueError(f"RFC 5424: STRUCTURED-DATA element without an SD-ID at {i + 1}")
        params = out.setdefault(m.group(), {})
        i = m.end()
        while True:
            if i < n and s[i] == "]":
                i += 1
                break
            if i >= n or s[i] != " ":
                raise ValueError(f"RFC 5424: unterminated STRUCTURED-DATA element at {i}")
            m = _SD_NAME.match(s, i + 1)
            if m is None or s[m.end() : m.end() + 2] != '="':
                raise ValueError(f'RFC 5424: expected PARAM="VALUE" in STRUCTURED-DATA at {i + 1}')
            name, i = m.group(), m.end() + 2
            value: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("RFC 5424: unterminated PARAM-VALUE in STRUCTURED-DATA")
                c = s[i]
                if c == "\\" and i + 1 < n and s[i + 1] in '"\\]':
                    value.append(s[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    value.append(c)
                    i += 1
            params[name] = "".join(value)
    return out, i


def _rfc3164(ev: Event, m: re.Match[str]) -> None:
    ts, rest = m.groups()
    ev["timestamp"] = ts
    head, sep, tail = rest.partition(" ")
    # The HOSTNAME is often left out by local senders: a first word that looks like a tag
    # ("sshd[42]:", "cron:") is the tag, not a host.
    if sep and head and not head.endswith(":") and "[" not in head:
        ev["host"] = head
        rest = tail
    t = _TAG.fullmatch(rest)
    if t is not None:
        app, pid, msg = t.groups()
        ev["app"] = app
        if pid:
            ev["pid"] = int(pid) if pid.isdigit() else pid
        rest = msg
    if rest:
        ev["message"] = rest


def decode_lines(lines: list[str], keep_raw: bool = False) -> tuple[list[Event], list[Event]]:
    """Events and dead letters from text lines; blank lines are skipped.

    ``keep_raw`` keeps each original line in ``_raw``, so a relay loses nothing the decoder
    did not model.
    """
    from pipenb.engine.codecs.lines import reject

    events: list[Event] = []
    rejects: list[Event] = []
    for line in lines:
        try:
            ev = parse(line)
            if keep_raw:
                ev["_raw"] = line.rstrip("\x00")
            events.append(ev)
        except ValueError as exc:
            if line.strip():
                rejects.append(reject(line, str(exc)))
    return events, rejects
