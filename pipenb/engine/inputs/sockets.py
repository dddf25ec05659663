"""``tcp`` and ``udp``: newline-framed listeners; ``format: syslog`` decodes RFC 3164 and 5424.

Both read into one bounded feed that the input's ``batches`` drains. A TCP connection whose data
finds the feed full stops being read, so the sender is held back by TCP itself; UDP cannot hold a
sender back, so datagrams that find the feed full are dropped and counted (``dropped``).

The ``host:port`` options and the ``_peer`` field come from ``pipenb.engine.net``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field

from pipenb.engine.base import Batch, Event, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk, decode_message
from pipenb.engine.net import Address, format_peer, split_address
from pipenb.engine.tlsopts import ListenTls, server_context
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Size

log = logging.getLogger("pipenb.engine.sockets")

READ_BYTES = 1 << 16
BATCH_EVENTS = 10_000  # a batch merges what waits in the feed, up to this many events


# ------------------------------------------------------------------------------ the feed


class Feed:
    """A bounded buffer of decoded chunks between socket readers and ``batches``.

    ``limit`` bounds the raw bytes held; a single chunk is always let in when the feed is empty,
    so a chunk larger than the limit cannot wedge it.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0
        self._items: deque[tuple[list[Event], list[Event], int]] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def full(self) -> bool:
        return bool(self._items) and self.bytes >= self.limit

    def offer(self, events: list[Event], rejects: list[Event], nbytes: int) -> bool:
        """Add without waiting; False (nothing added) when the feed is full."""
        if self.full():
            return False
        self._items.append((events, rejects, nbytes))
        self.bytes += nbytes
        self._ready.set()
        if self.full():
            self._room.clear()
        return True

    async def put(self, events: list[Event], rejects: list[Event], nbytes: int) -> None:
        """Add, waiting while the feed is full (this is what holds a TCP sender back)."""
        while not self.offer(events, rejects, nbytes):
            await self._room.wait()

    async def take(self) -> Batch:
        """Everything waiting (up to ``BATCH_EVENTS`` events) as one batch."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        events: list[Event] = []
        rejects: list[Event] = []
        nbytes = 0
        while self._items and len(events) < BATCH_EVENTS:
            evs, rjs, n = self._items.popleft()
            events.extend(evs)
            rejects.extend(rjs)
            nbytes += n
        self.bytes -= nbytes
        if not self.full():
            self._room.set()
        return Batch(events, None, nbytes, rejects)


def _decode(
    data: bytes,
    fmt: str,
    peer: str | None,
    max_line: int,
    keep_raw: bool = False,
    whole: bool = False,
) -> tuple[list, list]:
    """Events from complete lines, or (``whole``) from one message that may hold newlines."""
    if whole:
        events, rejects = decode_message(data, fmt, keep_raw)
    else:
        events, rejects = decode_chunk(data, fmt, max_line, keep_raw=keep_raw)
    if peer is not None:
        for ev in events:
            ev["_peer"] = peer
        for r in rejects:
            r["_peer"] = peer
    return events, rejects


# ------------------------------------------------------------------------------ tcp


class TcpOptions(Options):
    """Options of ``tcp``.

    ``address``: ``host:port`` to listen on (``:5140`` or ``0.0.0.0:5140`` for every
    interface; port 0 picks a free port). The framing is detected per connection (RFC 6587):
    a connection whose first byte is a digit sends octet-counted frames (``LEN SP MSG``, as
    rsyslog's ``TCP_Framing="octet-counted"``, syslog-ng's ``syslog()`` driver and
    ``logger --octet-count`` do); each frame is one event, newlines inside it included.
    Otherwise each newline-terminated line is one event (``\\r\\n`` works too; a last line
    without a newline counts when the sender closes); with ``format: syslog`` a NUL before the
    next ``<`` or at the end of what arrived ends a message too (Python's ``SysLogHandler``).
    ``keep-raw: true`` (syslog) keeps each original message in ``_raw``. ``tls: {cert, key,
    client-ca}`` serves TLS (RFC 5425 syslog over TLS is octet-counted TCP inside it); with
    ``client-ca`` a client must show a certificate that CA signed. ``format``:
    ``lines`` (``{"_raw": line}``), ``json`` (one object per line) or ``syslog`` (RFC 5424 and
    RFC 3164: ``facility``, ``severity``, ``timestamp``, ``host``, ``app``, ``pid``, ``msgid``,
    ``structured_data``, ``message``). Lines that do not decode go to ``errors:``. Bytes that are
    not UTF-8 are replaced, never fatal. ``max-line-bytes``: a longer line is cut into pieces of
    that size (counted, and logged). ``metadata: true`` adds ``_peer`` (the sender's
    ``ip:port``). ``buffer``: bytes held for the engine; when full, connections stop being read
    (TCP then slows the senders). No checkpoint: what senders sent while the pipe was down is
    theirs to resend.
    """

    address: Address
    format: Literal["lines", "json", "syslog"] = "lines"
    max_line_bytes: Size = Field(default=1 << 16, ge=1)
    metadata: bool = False
    buffer: Size = Field(default=4 << 20, ge=1)
    keep_raw: bool = False
    tls: ListenTls | None = None


class TcpInput(Input):
    def __init__(self, options: TcpOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.host, self.port = split_address(options.address)
        self.long_lines = 0  # lines cut because they were longer than max-line-bytes
        self.connections = 0  # connections served so far
        self.octet_counted = 0  # of them, connections that sent octet-counted frames
        self.nul_framed = 0  # of them, syslog connections whose messages end in NUL
        self.framing_errors = 0  # octet-counted connections whose frame header was not LEN SP
        self._logged_long = -1e9
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def stats(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "octet_counted": self.octet_counted,
            "nul_framed": self.nul_framed,
            "framing_errors": self.framing_errors,
            "long_lines": self.long_lines,
        }

    async def batches(self) -> AsyncIterator[Batch]:
        feed = Feed(self.options.buffer)
        from pipenb.engine.netguard import check_listen_first, check_listener

        check_listen_first(self.ctx, "tcp address", self.host, self.port)
        tls = self.options.tls
        self._server = await asyncio.start_server(
            lambda r, w: self._serve(r, w, feed),
            self.host or None,
            self.port,
            reuse_address=True,
            ssl=server_context(tls, "tcp input") if tls is not None else None,
        )
        try:
            for sock in self._server.sockets:
                check_listener(self.ctx, "tcp address", self.host, sock.getsockname())
        except Exception:
            self._server.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("tcp: listening on %s:%d", self.host or "*", self.port)
        try:
            while True:
                yield await feed.take()
        finally:
            await self.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, feed: Feed
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        o = self.options
        peer = format_peer(writer.get_extra_info("peername")) if o.metadata else None
        max_line = o.max_line_bytes
        nul_ends = o.format == "syslog"
        rest = b""
        in_long = False  # inside a line already cut (and counted)
        try:
            first = await reader.read(READ_BYTES)
            if first[:1].isdigit():
                self.octet_counted += 1
                first = await self._octet_counted(reader, first, feed, peer)
            elif nul_ends and _nul_framed(first):
                self.nul_framed += 1
                first = await self._nul_framed(reader, first, feed, peer)
            pending: bytes | None = first
            while True:
                if pending is not None:
                    data, pending = pending, None
                else:
                    data = await reader.read(READ_BYTES)
                if not data:
                    break
                buf = rest + data if rest else data
                if nul_ends and b"\x00" in buf:
                    buf = buf.replace(b"\x00<", b"\n<")
                    if buf.endswith(b"\x00"):
                        buf = buf[:-1] + b"\n"
                cut = buf.rfind(b"\n")
                if cut < 0:
                    rest = buf
                    if len(rest) >= max_line:  # a line longer than allowed: emit its pieces
                        if not in_long:
                            self._count_long(1, peer)
                            in_long = True
                        keep = len(rest) - len(rest) % max_line
                        await feed.put(*_decode_pieces(rest[:keep], o.format, peer, max_line))
                        rest = rest[keep:]
                    continue
                chunk, rest = buf[: cut + 1], buf[cut + 1 :]
                if len(chunk) > max_line:
                    lens = [len(line) for line in chunk.split(b"\n")]
                    long = sum(1 for n in lens if n > max_line)
                    if in_long and lens[0] > max_line:
                        long -= 1  # the end of the line counted already
                    if long:
                        self._count_long(long, peer)
                in_long = False
                events, rejects = _decode(chunk, o.format, peer, max_line, o.keep_raw)
                await feed.put(events, rejects, len(chunk))
            if rest:
                await feed.put(*_decode(rest, o.format, peer, max_line, o.keep_raw), len(rest))
        except (ConnectionError, OSError) as exc:
            log.debug("tcp: connection from %s ended: %s", peer, exc)
        except asyncio.CancelledError:
            # the input is closing: end quietly. (A cancelled handler task makes asyncio's
            # StreamReaderProtocol log a CancelledError traceback for every open connection.)
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _octet_counted(
        self, reader: asyncio.StreamReader, buf: bytes, feed: Feed, peer: str | None
    ) -> bytes:
        """Serve ``LEN SP MSG`` frames until the sender closes (returns ``b""``) or a header is
        not one (then logged, counted, and the rest of the connection read as lines: returned).

        A frame longer than ``max-line-bytes`` is cut into pieces, counted as a long line.
        """
        o = self.options
        max_line = o.max_line_bytes
        while True:
            events: list[Event] = []
            rejects: list[Event] = []
            nbytes = 0
            while True:  # every whole frame in the buffer
                sp = buf.find(b" ", 0, 11)
                if sp < 0:
                    if len(buf) > 10 or (buf and not buf.isdigit()):
                        return await self._bad_frame(buf, events, rejects, nbytes, feed, peer)
                    break
                head = buf[:sp]
                if not head.isdigit():
                    return await self._bad_frame(buf, events, rejects, nbytes, feed, peer)
                size = int(head)
                end = sp + 1 + size
                if len(buf) < end:
                    break
                frame, buf = buf[sp + 1 : end], buf[end:]
                if len(frame) > max_line:
                    self._count_long(1, peer)
                    evs, rjs, _ = _decode_pieces(
                        frame[: len(frame) - len(frame) % max_line], o.format, peer, max_line
                    )
                    events += evs
                    rejects += rjs
                    frame = frame[len(frame) - len(frame) % max_line :]
                if frame:
                    evs, rjs = _decode(frame, o.format, peer, max_line, o.keep_raw, whole=True)
                    events += evs
                    rejects += rjs
                nbytes += end
                # a newline or NUL after a frame is tolerated (some senders add one)
                while buf[:1] in (b"\n", b"\x00", b"\r"):
                    buf = buf[1:]
                    nbytes += 1
            if events or rejects:
                await feed.put(events, rejects, nbytes)
            data = await reader.read(READ_BYTES)
            if not data:
                if buf:
                    await feed.put(*_decode(buf, o.format, peer, max_line, o.keep_raw), len(buf))
                return b""
            buf += data

    async def _nul_framed(
        self, reader: asyncio.StreamReader, buf: bytes, feed: Feed, peer: str | None
    ) -> bytes:
        """Serve NUL-terminated messages (Python's ``SysLogHandler``), newlines kept inside."""
        o = self.options
        max_line = o.max_line_bytes
        while True:
            cut = buf.rfind(b"\x00")
            if cut >= 0:
                events: list[Event] = []
                rejects: list[Event] = []
                for msg in buf[:cut].split(b"\x00"):
                    if msg.strip():
                        evs, rjs = _decode(msg, o.format, peer, max_line, o.keep_raw, whole=True)
                        events += evs
                        rejects += rjs
                await feed.put(events, rejects, cut + 1)
                buf = buf[cut + 1 :]
            elif len(buf) > max_line:
                self._count_long(1, peer)
                await feed.put(*_decode(buf, o.format, peer, 0, o.keep_raw, whole=True), len(buf))
                buf = b""
            data = await reader.read(READ_BYTES)
            if not data:
                if buf.strip():
                    await feed.put(
                        *_decode(buf, o.format, peer, max_line, o.keep_raw, whole=True), len(buf)
                    )
                return b""
            buf += data

    async def _bad_frame(
        self,
        buf: bytes,
        events: list[Event],
        rejects: list[Event],
        nbytes: int,
        feed: Feed,
        peer: str | None,
    ) -> bytes:
        self.framing_errors += 1
        log.warning(
            "tcp: octet-counted frame header expected (LEN SP MSG)%s, got %r: "
            "reading the rest of the connection as lines",
            f" from {peer}" if peer else "",
            buf[:20],
        )
        if events or rejects:
            await feed.put(events, rejects, nbytes)
        return buf

    def _count_long(self, n: int, peer: str | None) -> None:
        self.long_lines += n
        now = time.monotonic()
        if now - self._logged_long >= 10.0:  # a flood of garbage must not flood the log
            self._logged_long = now
            log.warning(
                "tcp: line(s)%s longer than max-line-bytes (%d) cut into pieces (%d so far)",
                f" from {peer}" if peer else "",
                self.options.max_line_bytes,
                self.long_lines,
            )

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


def _decode_pieces(
    data: bytes, fmt: str, peer: str | None, max_line: int
) -> tuple[list[Event], list[Event], int]:
    """Pieces of one over-long line (``data`` is a multiple of ``max_line`` bytes)."""
    joined = b"\n".join(data[i : i + max_line] for i in range(0, len(data), max_line))
    events, rejects = _decode(joined, fmt, peer, 0)
    return events, rejects, len(data)


# ------------------------------------------------------------------------------ udp


class UdpOptions(Options):
    """Options of ``udp``.

    ``address``: ``host:port`` to listen on (port 0 picks a free port). Each datagram holds one
    or more lines (a trailing newline is optional); each line is one event. With ``format:
    syslog`` a datagram is one message, newlines inside it included (it is split only before a
    line that starts a new message with ``<PRI>``, as some senders pack several). ``format``:
    ``lines``, ``json`` or ``syslog``, as for ``tcp``; ``keep-raw`` as for ``tcp``. Bytes that
    are not UTF-8 are replaced; lines that do not decode go to ``errors:``. ``metadata: true``
    adds ``_peer`` (the sender's ``ip:port``). ``receive-buffer``: the kernel's socket buffer
    (``SO_RCVBUF``; 8 MiB by default, as a burst of 10,000 syslog messages needs a few MiB),
    which holds a burst while the pipe is busy; datagrams the kernel had to drop because it was
    full are counted in the input's ``kernel_dropped``. ``buffer``: bytes held for the engine;
    UDP cannot slow a sender down, so datagrams arriving while it is full are dropped, counted
    (``dropped``) and logged. No checkpoint.
    """

    address: Address
    format: Literal["lines", "json", "syslog"] = "lines"
    max_line_bytes: Size = Field(default=1 << 16, ge=1)
    metadata: bool = False
    buffer: Size = Field(default=8 << 20, ge=1)
    receive_buffer: Size = Field(default=8 << 20, ge=4096)
    keep_raw: bool = False


READ_DATAGRAMS = 512  # datagrams read per wake-up of the event loop


class UdpInput(Input):
    def __init__(self, options: UdpOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.host, self.port = split_address(options.address)
        self.datagrams = 0  # datagrams received
        self.dropped = 0  # datagrams dropped because the pipe was backed up
        self.receive_buffer = 0  # the socket buffer the kernel granted (bytes)
        self._sock: socket.socket | None = None
        self._kernel_dropped_at_start = 0

    def stats(self) -> dict[str, Any]:
        return {
            "datagrams": self.datagrams,
            "dropped": self.dropped,
            "kernel_dropped": self.kernel_dropped(),
            "receive_buffer": self.receive_buffer,
        }

    def kernel_dropped(self) -> int:
        """Datagrams the kernel dropped for this socket (its receive buffer was full)."""
        sock = self._sock
        if sock is None or sock.fileno() < 0:
            return 0
        n = kernel_drops(sock)
        return 0 if n is None else n

    async def batches(self) -> AsyncIterator[Batch]:
        feed = Feed(self.options.buffer)
        loop = asyncio.get_running_loop()
        from pipenb.engine.netguard import check_listen_first, check_listener

        check_listen_first(self.ctx, "udp address", self.host, self.port)
        host = self.host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.receive_buffer = set_receive_buffer(sock, self.options.receive_buffer)
            sock.bind((host, self.port))
            sock.setblocking(False)
            check_listener(self.ctx, "udp address", self.host, sock.getsockname())
        except Exception:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        if self.receive_buffer < self.options.receive_buffer:
            log.warning(
                "udp: the kernel granted a receive buffer of %d bytes, not the %d asked for "
                "(raise net.core.rmem_max, or run with CAP_NET_ADMIN)",
                self.receive_buffer,
                self.options.receive_buffer,
            )
        loop.add_reader(sock.fileno(), self._readable, sock, feed)
        log.info("udp: listening on %s:%d", self.host or "*", self.port)
        try:
            while True:
                yield await feed.take()
        finally:
            await self.close()

    def _readable(self, sock: socket.socket, feed: Feed) -> None:
        """Read what waits, up to ``READ_DATAGRAMS`` datagrams, in one wake-up."""
        recv = sock.recvfrom
        for _ in range(READ_DATAGRAMS):
            try:
                data, addr = recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp: %s", exc)
                return
            self._datagram(feed, data, addr)

    def _datagram(self, feed: Feed, data: bytes, addr: Any) -> None:
        self.datagrams += 1
        if feed.full():
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "udp: pipe backed up, %d datagram(s) dropped so far (buffer: %d bytes)",
                    self.dropped,
                    self.options.buffer,
                )
            return
        o = self.options
        peer = format_peer(addr) if o.metadata else None
        if o.format == "syslog":
            events, rejects = [], []
            for msg in _syslog_messages(data):
                evs, rjs = _decode(msg, o.format, peer, o.max_line_bytes, o.keep_raw, whole=True)
                events += evs
                rejects += rjs
        else:
            events, rejects = _decode(data, o.format, peer, o.max_line_bytes)
        feed.offer(events, rejects, len(data))

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()


def _nul_framed(first: bytes) -> bool:
    """Whether a syslog connection ends its messages in NUL: a NUL comes before any newline."""
    nul = first.find(b"\x00")
    if nul < 0 or first[:1] != b"<":
        return False
    nl = first.find(b"\n")
    return nl < 0 or nul < nl


_NEXT_MESSAGE = re.compile(rb"\r?\n(?=<\d{1,3}>)")


def _syslog_messages(data: bytes) -> list[bytes]:
    """The messages of a syslog datagram: one, unless a line starts a new ``<PRI>``."""
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if b"\n<" not in data:
        return [data]
    return _NEXT_MESSAGE.split(data)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; the size the kernel granted.

    ``SO_RCVBUFFORCE`` passes ``net.core.rmem_max`` when the process may (CAP_NET_ADMIN); else
    ``SO_RCVBUF`` gets what ``rmem_max`` allows. Linux reports twice the payload it keeps.
    """
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted // 2 if sys.platform.startswith("linux") else granted


def kernel_drops(sock: socket.socket) -> int | None:
    """The ``drops`` column of ``/proc/net/udp`` (or udp6) for this socket; None off Linux."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == inode:
                        return int(cols[-1])
        except OSError:
            continue
    return None


@registry.register("input", "tcp", TcpOptions)
def tcp_input(opts: TcpOptions, ctx: RunContext) -> TcpInput:
    """Listen for newline-framed lines over TCP (lines, JSON or syslog)."""
    return TcpInput(opts, ctx)


@registry.register("input", "udp", UdpOptions)
def udp_input(opts: UdpOptions, ctx: RunContext) -> UdpInput:
    """Listen for UDP datagrams of one or more lines (lines, JSON or syslog)."""
    return UdpInput(opts, ctx)
