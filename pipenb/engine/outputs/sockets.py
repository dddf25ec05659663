"""``tcp`` and ``udp`` outputs: events as NDJSON lines to a ``host:port``.

``tcp`` keeps one connection; when it breaks the write raises ``OSError``, the engine retries
with backoff (holding the input back) and the retry connects again. ``udp`` sends one datagram
per event and cannot know whether it arrived.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import orjson

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.net import RemoteAddress, split_address
from pipenb.engine.netguard import checked_address
from pipenb.engine.outputs.common import OutputOptions
from pipenb.engine.outputs.disk import maybe_disk
from pipenb.engine.tlsopts import SendTls, client_context
from pipenb.lang.registry import registry
from pipenb.lang.types import Duration

log = logging.getLogger("pipenb.engine.sockets")

MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4
_NL = orjson.OPT_APPEND_NEWLINE


# ------------------------------------------------------------------------------ tcp


class TcpOutputOptions(OutputOptions):
    """Options of the ``tcp`` output.

    ``address``: ``host:port`` to connect to. Each event is written as one JSON line.
    ``timeout``: for connecting and for the receiver to take a batch. When the connection
    cannot be made or breaks, the engine retries with backoff and holds the input back; the
    retry connects again, and the batch is sent again whole (so the receiver may see a batch
    twice). ``tls: {ca-file, cert, key, verify}`` sends over TLS, verifying the receiver
    (a certificate it does not trust is an error naming the fix, retried like any other). TCP
    does not acknowledge what the receiving program read: bytes still in flight
    when a connection breaks can be lost without an error. ``batch: {size, timeout}`` as for
    every output.
    """

    address: RemoteAddress
    timeout: Duration = 30.0
    tls: SendTls | None = None


class TcpOutput(Output):
    #: what the connection errors and log lines call this output
    kind = "tcp"

    def __init__(self, options: TcpOutputOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.host, self.port = split_address(options.address)
        self.connects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ssl_context: ssl.SSLContext | None = None

    async def open(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        self._drop()
        try:
            host, port = await asyncio.wait_for(
                checked_address(
                    self.ctx,
                    "tcp address",
                    self.options.address,
                    self.host,
                    self.port,
                    socket.SOCK_STREAM,
                ),
                self.options.timeout,
            )
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl(),
                    server_hostname=self.host if self._ssl() else None,
                ),
                self.options.timeout,
            )
        except asyncio.TimeoutError:
            raise ConnectionError(
                f"{self.kind} {self.options.address}: no connection after {self.options.timeout}s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionError(
                f"{self.kind} {self.options.address}: the receiver's certificate is not trusted "
                f"({exc.verify_message}); give its CA as tls: {{ca-file: ...}}"
            ) from exc
        self.connects += 1

    def _ssl(self) -> ssl.SSLContext | None:
        tls = getattr(self.options, "tls", None)
        if tls is None:
            return None
        if self._ssl_context is None:
            self._ssl_context = client_context(tls, f"{self.kind} output")
        return self._ssl_context

    def encode(self, events: list[Event]) -> tuple[bytes, list[tuple[Event, str]]]:
        """The bytes to send for a batch, and the events that cannot be encoded."""
        return ndjson(events)

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    def _broken(self) -> bool:
        w, r = self._writer, self._reader
        return w is None or r is None or w.is_closing() or r.at_eof()

    def lines_refusal(self) -> str:
        if type(self).encode is not TcpOutput.encode:  # (syslog frames each event)
            return "it frames each event itself"
        return ""

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        data, rejects = self.encode(events)
        if data:
            await self._send(data)
        return rejects

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Lines encoded elsewhere (the engine's fast path): what ``write`` sends."""
        await self._send(data)
        return []

    async def _send(self, data: bytes) -> None:
        if self._broken():  # the receiver closed (or never was): connect again
            await self._connect()
        assert self._writer is not None
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.options.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._drop()
            raise ConnectionError(
                f"{self.kind} {self.options.address}: {exc or 'receiver too slow'}"
            ) from exc

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, asyncio.TimeoutError):
                pass


# ------------------------------------------------------------------------------ udp


class UdpOutputOptions(OutputOptions):
    """Options of the ``udp`` output.

    ``address``: ``host:port`` to send to. Each event is one datagram holding one JSON line.
    An event larger than a datagram can carry (65,507 bytes) goes to ``errors:``. UDP has no
    delivery guarantee: datagrams lost on the way, or sent while nothing listens, are gone
    without an error. ``batch: {size, timeout}`` as for every output.
    """

    address: RemoteAddress


class _Sender(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.can_write = asyncio.Event()
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def error_received(self, exc: Exception) -> None:
        log.debug("udp output: %s", exc)  # e.g. nothing listening there (ICMP unreachable)

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()


class UdpOutput(Output):
    kind = "udp"

    def __init__(self, options: UdpOutputOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.host, self.port = split_address(options.address)
        self.sent = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: _Sender | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        addr = await checked_address(
            self.ctx,
            "udp address",
            self.options.address,
            self.host,
            self.port,
            socket.SOCK_DGRAM,
        )
        self._transport, self._sender = await loop.create_datagram_endpoint(
            _Sender, remote_addr=addr
        )

    def lines_refusal(self) -> str:
        if type(self).encode_one is not UdpOutput.encode_one:  # (syslog frames each event)
            return "it frames each event itself"
        return ""

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        datagrams: list[tuple[bytes, Event | None]] = []
        rejects: list[tuple[Event, str]] = []
        for e in events:
            try:
                datagrams.append((self.encode_one(e), e))
            except ValueError as exc:
                rejects.append((e, str(exc)))
        return await self._send(datagrams, rejects)

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Lines encoded elsewhere (the engine's fast path): a datagram each, as ``write``
        sends an event; a line too long for one is decoded again for ``errors:``."""
        return await self._send([(line + b"\n", None) for line in data.split(b"\n") if line], [])

    async def _send(
        self, datagrams: list[tuple[bytes, Event | None]], rejects: list[tuple[Event, str]]
    ) -> list[tuple[Event, str]]:
        """Each datagram (with its event, or None to decode it from the datagram if it must
        be refused), then ``rejects`` and those refused here, logged."""
        if self._transport is None or self._transport.is_closing():
            await self.open()
        transport, sender = self._transport, self._sender
        assert transport is not None and sender is not None
        for data, e in datagrams:
            if len(data) > MAX_DATAGRAM:
                rejects.append((orjson.loads(data) if e is None else e, _too_big(len(data))))
                continue
            transport.sendto(data)
            self.sent += 1
            if not sender.can_write.is_set():  # the socket buffer is full: wait for room
                await sender.can_write.wait()
        if rejects:
            log.warning(
                "%s output: %d event(s) not sent: %s", self.kind, len(rejects), rejects[0][1]
            )
        return rejects

    def encode_one(self, e: Event) -> bytes:
        """One event as one datagram; ``ValueError`` when it cannot be encoded."""
        try:
            return orjson.dumps(e, option=_NL)
        except TypeError:
            data, bad = ndjson([e])
            if bad:
                raise ValueError(bad[0][1]) from None
            return data

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


def _too_big(n: int) -> str:
    return f"event is {n} bytes as JSON, more than a UDP datagram carries ({MAX_DATAGRAM})"


@registry.register("output", "tcp", TcpOutputOptions)
def tcp_output(opts: TcpOutputOptions, ctx: RunContext) -> TcpOutput:
    """Send events as NDJSON lines over a TCP connection; reconnects when it breaks."""
    return maybe_disk(TcpOutput(opts, ctx))


@registry.register("output", "udp", UdpOutputOptions)
def udp_output(opts: UdpOutputOptions, ctx: RunContext) -> UdpOutput:
    """Send each event as one NDJSON datagram over UDP."""
    return maybe_disk(UdpOutput(opts, ctx))
