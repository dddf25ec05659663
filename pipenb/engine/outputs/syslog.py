"""``syslog`` output: events as syslog messages to a relay or a SIEM, over TCP, UDP or TLS.

It re-encodes what the syslog input decodes (``pipenb.engine.codecs.syslog_encode``), and reuses the
``tcp`` and ``udp`` outputs' connection handling (reconnects, backoff, datagram limits).
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import model_validator

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.codecs.syslog_encode import encode, frame
from pipenb.engine.net import RemoteAddress
from pipenb.engine.outputs.common import OutputOptions
from pipenb.engine.outputs.disk import maybe_disk
from pipenb.engine.outputs.sockets import TcpOutput, UdpOutput
from pipenb.engine.tlsopts import SendTls, client_context
from pipenb.lang.registry import registry
from pipenb.lang.types import Duration


class SyslogOutputOptions(OutputOptions):
    """Options of the ``syslog`` output.

    ``address``: ``host:port`` of the receiver. ``protocol``: ``tcp`` (default), ``udp`` or
    ``tls`` (RFC 5425; ``tls: {ca-file, cert, key, verify}`` as for the ``tcp`` output).
    ``framing`` (TCP and TLS): ``octet-counted`` (default, RFC 6587: messages may hold
    newlines) or ``newline`` (a newline inside a message is written as ``#012``). ``format``:
    ``rfc5424`` (default) or ``rfc3164``. Each event's ``facility``, ``severity`` (names or
    numbers), ``timestamp``, ``host``, ``app``, ``pid``, ``msgid``, ``structured_data`` and
    ``message`` make the message, as the syslog input decodes them; missing ones take the RFC's
    nil or a default (``user``, ``notice``, now, this host); an event without ``message`` is
    sent as the JSON of its other fields. An event with a facility or severity that is not one
    goes to ``errors:``. Delivery as for ``tcp`` and ``udp``: TCP retries whole batches on a
    broken connection (a receiver may see one twice); UDP has no delivery guarantee.
    """

    address: RemoteAddress
    protocol: Literal["tcp", "udp", "tls"] = "tcp"
    framing: Literal["octet-counted", "newline"] = "octet-counted"
    format: Literal["rfc5424", "rfc3164"] = "rfc5424"
    timeout: Duration = 30.0
    tls: SendTls | None = None

    @model_validator(mode="after")
    def _tls_fits(self) -> SyslogOutputOptions:
        if self.tls is not None and self.protocol == "udp":
            raise ValueError("tls: is for protocol tcp or tls, not udp (DTLS is not supported)")
        return self


def _encode_many(events: list[Event], o: SyslogOutputOptions) -> tuple[bytes, list]:
    parts: list[bytes] = []
    rejects: list[tuple[Event, str]] = []
    for e in events:
        try:
            parts.append(frame(encode(e, o.format), o.framing))
        except ValueError as exc:
            rejects.append((e, f"syslog output: {exc}"))
    return b"".join(parts), rejects


class SyslogStreamOutput(TcpOutput):
    """Over TCP or TLS, one connection, framed messages."""

    kind = "syslog"

    def _ssl(self) -> ssl.SSLContext | None:
        o = self.options
        if o.protocol != "tls" and o.tls is None:
            return None
        if self._ssl_context is None:
            self._ssl_context = client_context(o.tls or SendTls(), "syslog output")
        return self._ssl_context

    def encode(self, events: list[Event]) -> tuple[bytes, list[tuple[Event, str]]]:
        return _encode_many(events, self.options)


class SyslogDatagramOutput(UdpOutput):
    """Over UDP, one message per datagram (no framing)."""

    kind = "syslog"

    def encode_one(self, e: Event) -> bytes:
        return encode(e, self.options.format).encode("utf-8", "replace")


@registry.register("output", "syslog", SyslogOutputOptions)
def syslog_output(opts: SyslogOutputOptions, ctx: RunContext) -> Output:
    """Send events as syslog messages (RFC 5424 or 3164) over TCP, UDP or TLS."""
    if opts.protocol == "udp":
        return maybe_disk(SyslogDatagramOutput(opts, ctx))  # type: ignore[arg-type]
    return maybe_disk(SyslogStreamOutput(opts, ctx))  # type: ignore[arg-type]
