"""``http-server``: each request body (JSON, NDJSON or lines) becomes events.

A request is answered ``200 {"accepted": N}`` only once its events were taken by the engine's
queue: the handler waits until ``batches`` resumes after yielding the batch that holds them (the
engine asks for the next batch only after it queued the last one). While the pipe is backed up,
requests pile up in a bounded set of pending requests (``max-pending``); past it, requests are
refused with ``503`` and ``Retry-After: 1`` without keeping their bodies, so memory stays bounded
however hard clients push. Runs tornado's ``HTTPServer`` on the engine's own asyncio loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler, stream_request_body

from pipenb.engine.base import Batch, Event, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.engine.diskbuffer import SegmentLog
from pipenb.engine.inputs.sockets import BATCH_EVENTS
from pipenb.engine.net import Address, format_peer, split_address
from pipenb.engine.netguard import check_listen_first, check_listener
from pipenb.engine.tlsopts import ListenTls, server_context
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Duration, Size

log = logging.getLogger("pipenb.engine.http_server")

MiB = 1 << 20


class HttpServerOptions(Options):
    """Options of ``http-server``.

    ``address``: ``host:port`` to listen on (default ``127.0.0.1:8080``; ``0.0.0.0:8080`` for
    every interface; port 0 picks a free port). ``path``: where events are POSTed (or PUT);
    other paths answer 404. ``format``: ``json`` (the body is one object or an array of
    objects), ``ndjson`` (one object per line) or ``lines`` (each line becomes
    ``{"_raw": line}``). A body that does not decode is refused whole with 400 and a message
    saying why; nothing of it is kept. ``token``: when set, requests must carry
    ``Authorization: Bearer TOKEN`` (401 otherwise). ``max-body``: larger bodies get 413.
    ``Content-Encoding: gzip`` bodies are accepted (``max-body`` applies to the unzipped size).
    ``max-pending``: requests waiting for the engine; past it the server answers 503 with
    ``Retry-After: 1``. ``header-timeout``: a client has this long to send a request's headers
    (and a kept-alive connection is closed after this long without a new request), so slow
    clients that dribble their headers (slowloris) are cut off instead of holding connections
    open; a body must then arrive within 120 s. The answer ``200 {"accepted": N}`` comes only
    after the engine took the events into its queue (in memory: like any batch in flight, they
    are lost if the pipe's process dies before the output wrote them); a client that got
    anything else, or no answer, should send again. ``metadata: true`` adds ``_peer`` (the
    client's ``ip:port``). No checkpoint (with ``buffer: memory``).

    ``buffer: disk`` makes acknowledged mean durable: a request's events are appended to a
    segment log under the data dir (``buffers/PIPE/input``) and fsynced (requests arriving
    together share one fsync) before the 200; the engine reads from that log and checkpoints
    on it, so a crash or kill replays from disk what was acknowledged but not yet written by the
    output (no loss; the output may see some events twice). ``buffer-size`` bounds what the log
    holds unwritten; past it requests get 503 with ``Retry-After: 1``. ``tls: {cert, key,
    client-ca}`` serves HTTPS (with ``client-ca``, clients must show a certificate it signed).
    ``GET /health`` answers 200 ``{"status": "ok"}`` while events are taken, 503 otherwise.
    """

    address: Address = "127.0.0.1:8080"
    path: str = "/"
    format: Literal["json", "ndjson", "lines"] = "json"
    token: str | None = None
    max_body: Size = Field(default=10 * MiB, ge=1)
    max_pending: int = Field(default=64, ge=1)
    header_timeout: Duration = Field(default=10.0, gt=0)
    metadata: bool = False
    buffer: Literal["memory", "disk"] = "memory"
    buffer_size: Size = Field(default=1 << 30, ge=1 << 16)
    tls: ListenTls | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"a path starts with '/', e.g. /events; got {v!r}")
        return v


class _Pending:
    """One request's events, waiting for the engine; owns one of the ``max-pending`` slots."""

    __slots__ = ("events", "nbytes", "owner", "taken")

    def __init__(self, owner: HttpServerInput, events: list[Event], nbytes: int):
        self.owner = owner
        self.events = events
        self.nbytes = nbytes
        self.taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def done(self, taken: bool) -> None:
        if not self.taken.done():
            self.taken.set_result(taken)
            self.owner.pending -= 1


class HttpServerInput(Input):
    def __init__(self, options: HttpServerOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.host, self.port = split_address(options.address)
        self.pending = 0  # requests admitted and not yet taken by the engine (<= max-pending)
        self.busy = 0  # requests refused with 503 because the pipe was backed up
        self.accepted = 0  # requests answered 200
        self._open = False

        self._ready: deque[_Pending] = deque()
        self._inflight: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._active = 0  # handlers not yet finished
        self._idle: asyncio.Event | None = None
        self._server: Any = None
        self.disk: SegmentLog | None = None
        self._restored: int | None = None

    # ---------------------------------------------------------------- the engine's side
    def stats(self) -> dict[str, Any]:
        out = {"requests_accepted": self.accepted, "requests_busy": self.busy}
        if self.disk is not None:
            out["buffer_bytes"] = self.disk.backlog()
            out["buffer_commits"] = self.disk.commits
        return out

    def restore(self, position: Any) -> None:
        if isinstance(position, int):
            self._restored = position

    def committed(self, position: Any) -> None:
        if self.disk is not None and isinstance(position, int):
            self.disk.committed(position)

    def _open_disk(self) -> SegmentLog:
        if not self.ctx.data_dir:
            raise ValueError("http-server buffer: disk needs a data dir (run with --data-dir)")
        import os

        where = os.path.join(self.ctx.data_dir, "buffers", self.ctx.pipe, "input")
        disk = SegmentLog(where, self.options.buffer_size)
        if self._restored is not None:
            disk.restore(self._restored)
        return disk

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        app = Application(
            [
                (re.escape(o.path), _EventsHandler, {"owner": self}),
                *([("/health", _HealthHandler, {"owner": self})] if o.path != "/health" else []),
            ],
            default_handler_class=_NotFoundHandler,
            default_handler_args={"path": o.path},
            log_function=_log_request,
        )
        self._server = HTTPServer(
            app,
            ssl_options=server_context(o.tls, "http-server") if o.tls is not None else None,
            decompress_request=True,
            # bodies up to twice max-body are read (and dropped) to answer 413 cleanly
            max_body_size=2 * o.max_body + MiB,
            idle_connection_timeout=o.header_timeout,
            body_timeout=120,
        )
        if o.buffer == "disk":
            self.disk = self._open_disk()
        check_listen_first(self.ctx, "http-server address", self.host, self.port)
        sockets = bind_sockets(self.port, self.host or None)
        try:
            for sock in sockets:
                check_listener(self.ctx, "http-server address", self.host, sock.getsockname())
        except Exception:
            for sock in sockets:
                sock.close()
            raise
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._open = True
        log.info("http-server: listening on %s:%d%s", self.host or "*", self.port, o.path)
        try:
            while self.disk is not None:
                data, pos = await self.disk.read()
                events, _ = decode_chunk(data, "json")
                yield Batch(events, pos, len(data))
            while True:
                while not self._ready:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                taken: list[_Pending] = []
                events = []
                nbytes = 0
                while self._ready and len(events) < BATCH_EVENTS:
                    p = self._ready.popleft()
                    taken.append(p)
                    events.extend(p.events)
                    nbytes += p.nbytes
                self._inflight = taken
                yield Batch(events, None, nbytes)
                # resumed: the engine queued that batch and asks for the next one
                self._inflight = []
                for p in taken:
                    p.done(True)
        finally:
            self._shutdown()

    def _enqueue(self, p: _Pending) -> None:
        self._ready.append(p)
        if self._wakeup is not None:
            self._wakeup.set()

    def _shutdown(self) -> None:
        """Stop listening and answer 503 to every request the engine did not take."""
        self._open = False
        if self._server is not None:
            self._server.stop()
        for p in (*self._inflight, *self._ready):
            p.done(False)
        self._inflight = []
        self._ready.clear()

    async def close(self) -> None:
        self._shutdown()
        server, self._server = self._server, None
        if server is None:
            return
        if self._idle is not None and not self._idle.is_set():
            try:  # let handlers send their answers before the connections close
                await asyncio.wait_for(self._idle.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
        try:
            await asyncio.wait_for(server.close_all_connections(), 5.0)
        except asyncio.TimeoutError:
            log.warning("http-server: connections still open after 5s at close")

    # ---------------------------------------------------------------- the handlers' side
    def _started(self) -> None:
        self._active += 1
        if self._idle is not None:
            self._idle.clear()

    def _ended(self) -> None:
        self._active -= 1
        if self._active == 0 and self._idle is not None:
            self._idle.set()

    def _decode(self, body: bytes, peer: str | None) -> list[Event]:
        """The events of a body; ``ValueError`` with the reason when it does not decode."""
        fmt = self.options.format
        if not body.strip():
            return []
        if fmt == "json":
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"the body is not valid JSON: {exc}") from None
            if type(doc) is dict:
                events = [doc]
            elif type(doc) is list:
                for i, e in enumerate(doc):
                    if type(e) is not dict:
                        raise ValueError(
                            f"element {i} of the array is not a JSON object: "
                            f"{orjson.dumps(e)[:80].decode('utf-8', 'replace')}"
                        )
                events = doc
            else:
                raise ValueError("the body must be a JSON object or an array of objects")
        elif fmt == "ndjson":
            events, rejects = decode_chunk(body, "json")
            if rejects:
                first = rejects[0]
                raise ValueError(
                    f"{len(rejects)} line(s) are not JSON objects; the first, "
                    f"{first['_raw'][:80]!r}: {first['_error']['message']}"
                )
        else:
            events, _ = decode_chunk(body, "lines")
        if peer is not None:
            for e in events:
                e["_peer"] = peer
        return events


def _log_request(handler: Any) -> None:
    status = handler.get_status()
    level = logging.WARNING if status >= 500 and status != 503 else logging.DEBUG
    log.log(level, "%d %s", status, handler._request_summary())


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


@stream_request_body
class _EventsHandler(RequestHandler):
    SUPPORTED_METHODS = ("POST", "PUT")

    def initialize(self, owner: HttpServerInput) -> None:
        self.owner = owner
        self.chunks: list[bytes] = []
        self.size = 0
        self.refusal: tuple[int, str, str] | None = None
        self.slot = False  # holds one of the owner's max-pending slots
        self.counted = False  # counted among the owner's active handlers

    def prepare(self) -> None:
        owner, o = self.owner, self.owner.options
        owner._started()
        self.counted = True
        if o.token is not None and not _bearer_ok(
            self.request.headers.get("Authorization", ""), o.token
        ):
            self.refusal = (401, "unauthorized", "missing or wrong bearer token")
        elif not owner._open:
            self.refusal = (503, "stopping", "the pipe is stopping; send again later")
        elif owner.pending >= o.max_pending:
            owner.busy += 1
            self.refusal = (503, "backed_up", "the pipe is backed up; send again later")
        else:
            owner.pending += 1
            self.slot = True
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > o.max_body:
            self._too_large()
            if int(length) > 2 * o.max_body + MiB:
                # too big even to read and drop: answer now, then close the connection
                conn = self.request.connection
                if isinstance(conn, HTTP1Connection):  # what tornado's HTTPServer serves
                    conn.set_max_body_size(int(length))
                self._answer()

    def _too_large(self) -> None:
        self._release()
        self.chunks = []
        if self.refusal is None or self.refusal[0] == 503:
            self.refusal = (
                413,
                "payload_too_large",
                f"the body is larger than max-body ({self.owner.options.max_body} bytes)",
            )

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.refusal is not None:
            return  # read and dropped, so the client gets its answer cleanly
        if self.size > self.owner.options.max_body:
            self._too_large()
            return
        self.chunks.append(chunk)

    async def post(self) -> None:
        owner = self.owner
        if self.refusal is None and not owner._open:
            self.refusal = (503, "stopping", "the pipe is stopping; send again later")
        if self.refusal is not None:
            self._answer()
            return
        body = b"".join(self.chunks)
        self.chunks = []
        peer = None
        if owner.options.metadata:
            conn = self.request.connection
            context = conn.context if isinstance(conn, HTTP1Connection) else None
            peer = format_peer(getattr(context, "address", None))
        try:
            events = owner._decode(body, peer)
        except ValueError as exc:
            self.refusal = (400, "invalid_body", str(exc))
            self._answer()
            return
        if not events:
            self._release()
            self._send(200, orjson.dumps({"accepted": 0}))
            return
        if owner.disk is not None:
            await self._to_disk(owner.disk, events)
            return
        pending = _Pending(owner, events, len(body))
        self.slot = False  # the slot is the pending request's now
        owner._enqueue(pending)
        if await pending.taken:
            owner.accepted += 1
            self._send(200, orjson.dumps({"accepted": len(events)}))
        else:
            self.refusal = (503, "stopping", "the pipe is stopping; send again later")
            self._answer()

    put = post

    async def _to_disk(self, disk: SegmentLog, events: list[Event]) -> None:
        """Acknowledge only once the events are fsynced to the disk buffer."""
        if disk.full():
            self.owner.busy += 1
            self.refusal = (503, "buffer_full", "the disk buffer is full; send again later")
            self._answer()
            return
        from pipenb.engine.codecs.ndjson import ndjson

        data, bad = ndjson(events)
        try:
            await disk.append(data)
        except Exception as exc:  # a full disk, an I/O error: not acknowledged
            log.warning("http-server: disk buffer append failed: %s", exc)
            self.refusal = (503, "buffer_error", f"the disk buffer failed: {exc}")
            self._answer()
            return
        self._release()
        self.owner.accepted += 1
        self._send(200, orjson.dumps({"accepted": len(events) - len(bad)}))

    def _answer(self) -> None:
        assert self.refusal is not None
        status, code, message = self.refusal
        self._release()
        if status == 503:
            self.set_header("Retry-After", "1")
        elif status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="pipenb"')
        self._send(status, _error_body(code, message))

    def _send(self, status: int, body: bytes) -> None:
        if self._finished:
            return
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def _release(self) -> None:
        if self.slot:
            self.slot = False
            self.owner.pending -= 1

    def _end(self) -> None:
        self._release()
        if self.counted:
            self.counted = False
            self.owner._ended()

    def on_finish(self) -> None:
        self._end()

    def on_connection_close(self) -> None:
        self._end()


class _HealthHandler(RequestHandler):
    """``GET /health``: 200 while the input takes events (503 while the pipe stops, or while
    the disk buffer is full), for load balancers; no token needed and nothing about the pipe
    is told beyond that."""

    def initialize(self, owner: HttpServerInput) -> None:
        self.owner = owner

    def get(self) -> None:
        owner = self.owner
        disk_full = owner.disk is not None and owner.disk.full()
        ok = owner._open and not disk_full
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"status": "ok" if ok else "unavailable"}))


class _NotFoundHandler(RequestHandler):
    def initialize(self, path: str) -> None:
        self.path = path

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(_error_body("not_found", f"events are accepted at {self.path}"))


def _bearer_ok(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


@registry.register("input", "http-server", HttpServerOptions)
def http_server_input(opts: HttpServerOptions, ctx: RunContext) -> HttpServerInput:
    """Listen for HTTP requests; each body (JSON, NDJSON or lines) becomes events."""
    return HttpServerInput(opts, ctx)
