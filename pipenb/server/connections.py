"""A cap on the standalone server's open connections, and an accept loop that survives running
out of file descriptors.

Without them an anonymous client could open sockets until the process ran out of descriptors;
tornado's accept loop then raised (and logged a traceback) for every pending connection, many
thousand times a second. Here a connection over ``max_connections`` is answered
``503 Service Unavailable`` with ``Retry-After`` (up to ``REFUSE_SLOTS`` such answers at once;
past those it is closed unanswered), and the cap is kept below the process's ``RLIMIT_NOFILE``
so the database and the log files always find a descriptor. Should ``accept()`` still fail for
want of descriptors (another process's limit, the system's), accepting pauses for a moment with
one warning instead of spinning.

Inside Jupyter the HTTP server is Jupyter's: none of this applies there.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.httpserver
from tornado import httputil, iostream
from tornado.http1connection import HTTP1ConnectionParameters, HTTP1ServerConnection
from tornado.ioloop import IOLoop

from pipenb.server.handlers.base import error_body

log = logging.getLogger("pipenb.server.connections")

REFUSE_SLOTS = 64  # connections over the cap being answered 503 at once; more are just closed
RESERVE_FDS = 64  # descriptors kept for the database, log files and listening sockets
RETRY_AFTER = 1  # seconds, in the 503's Retry-After
OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered so the open connections, the 503 answers and a reserve fit under
    ``RLIMIT_NOFILE`` (the soft limit is raised towards the hard one first, when that helps)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + REFUSE_SLOTS + RESERVE_FDS
    if (
        soft != resource.RLIM_INFINITY
        and soft < need
        and (hard == resource.RLIM_INFINITY or hard > soft)
    ):
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    spare = min(REFUSE_SLOTS + RESERVE_FDS, soft // 2)
    return max(1, min(wanted, soft - spare))


class _ServiceUnavailable(httputil.HTTPMessageDelegate):
    """Answers any request 503 with ``Retry-After`` as soon as its headers are in."""

    def __init__(self, conn: Any):
        self.conn = conn

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        body = error_body(
            "unavailable",
            "the server has as many connections open as it allows; try again shortly",
            [{"retry_after": RETRY_AFTER}],
        )
        out = httputil.HTTPHeaders(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "Retry-After": str(RETRY_AFTER),
                "Connection": "close",
            }
        )
        self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 503, "Service Unavailable"), out, body
        )
        self.conn.finish()  # the body, if any, is dropped and the connection closed

    def data_received(self, chunk: bytes) -> None:
        pass

    def finish(self) -> None:
        pass

    def on_connection_close(self) -> None:
        pass


class _Refuser(httputil.HTTPServerConnectionDelegate):
    def __init__(self, server: CappedHTTPServer):
        self.server = server

    def start_request(self, server_conn: object, request_conn: Any) -> _ServiceUnavailable:
        return _ServiceUnavailable(request_conn)

    def on_close(self, server_conn: object) -> None:
        self.server.refusing -= 1


class CappedHTTPServer(tornado.httpserver.HTTPServer):
    """tornado's HTTPServer with at most ``max_connections`` connections served at once."""

    def initialize(self, *args: Any, max_connections: int = 1024, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.refusing = 0  # 503 answers under way
        self.refused = 0  # connections refused since the start
        self._warned = 0.0
        self._refuse_params = HTTP1ConnectionParameters(
            header_timeout=5.0, body_timeout=5.0, max_body_size=1 << 62, no_keep_alive=True
        )
        self._refuser = _Refuser(self)

    def open_connections(self) -> int:
        return len(self._connections)

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        if self.open_connections() < self.max_connections:
            super().handle_stream(stream, address)
            return
        self.refused += 1
        now = time.monotonic()
        if now - self._warned >= 10.0:
            self._warned = now
            log.warning(
                "%d connections open, the most allowed (--max-connections): answering 503 "
                "(%d refused so far)",
                self.open_connections(),
                self.refused,
            )
        if self.refusing >= REFUSE_SLOTS:
            stream.close()
            return
        self.refusing += 1
        context = tornado.httpserver._HTTPRequestContext(
            stream, address, self.protocol, self.trusted_downstream
        )
        HTTP1ServerConnection(stream, self._refuse_params, context).start_serving(self._refuser)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_connections(sock, self._handle_connection)


def accept_connections(
    sock: socket.socket, callback: Callable[[socket.socket, Any], None], pause: float = 0.25
) -> Callable[[], None]:
    """tornado's ``add_accept_handler``, except that running out of file descriptors pauses
    accepting for ``pause`` seconds with a warning, where tornado raised on every attempt."""
    io_loop = IOLoop.current()
    state = {"removed": False, "paused": False}

    def ready(fd: Any, events: int) -> None:
        for _ in range(128):  # as tornado: let other work run between bursts
            if state["removed"] or state["paused"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_FDS:
                    raise
                log.warning(
                    "cannot accept connections (%s); pausing for %.2f s", exc.strerror, pause
                )
                state["paused"] = True
                io_loop.remove_handler(sock)
                io_loop.call_later(pause, resume)
                return
            callback(connection, address)

    def resume() -> None:
        if not state["removed"]:
            state["paused"] = False
            io_loop.add_handler(sock, ready, IOLoop.READ)

    def remove() -> None:
        if not state["paused"] and not state["removed"]:
            io_loop.remove_handler(sock)
        state["removed"] = True

    io_loop.add_handler(sock, ready, IOLoop.READ)
    return remove
