"""The server's listening side: HTTPS settings, and a clear answer to the wrong protocol.

A client that speaks plain HTTP to an HTTPS port (or TLS to a plain one) would otherwise wait:
the TLS side sees no handshake, the HTTP side reads a ClientHello as the start of a header that
never ends, and both hold the connection until a timeout. So the server looks at the first byte
of every connection before tornado takes it: 0x16 opens a TLS handshake, anything else is plain
HTTP. On a mismatch it answers at once in the language the client spoke wrongly (an HTTP 400
naming the fix, whose bytes a TLS client reports as "not TLS") and closes.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import tornado.httpserver
from tornado.ioloop import IOLoop

from pipenb.server.handlers.base import error_body
from pipenb.tls import HTTPS_REQUIRED

TLS_HANDSHAKE = 0x16
#: Seconds the server keeps draining a wrongly-spoken connection before it closes it.
LINGER = 2.0


def server_context(cert: str, key: str | None, client_ca: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ with the certificate chain in ``cert``; ``client_ca``: require client
    certificates issued by that CA (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _answer(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


HTTPS_ONLY = _answer(
    "400 Bad Request",
    "application/json",
    error_body(
        HTTPS_REQUIRED,
        "this pipenb server speaks HTTPS, not plain HTTP: use an https:// URL",
    ),
)
HTTP_ONLY = _answer(
    "400 Bad Request",
    "text/plain",
    b"this pipenb server speaks plain HTTP, not HTTPS: use an http:// URL\n",
)


class SniffingHTTPServer(tornado.httpserver.HTTPServer):
    """tornado's HTTPServer, which first checks that a connection speaks its protocol."""

    def initialize(self, *args: Any, sniff_timeout: float = 60.0, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.sniff_timeout = sniff_timeout
        self.sniffing = 0  # connections whose first byte has not come yet

    def skip_sniffing(self) -> bool:
        """Hand a new connection straight to tornado (a subclass with a connection cap says so
        when it is full, so that the refusal is answered without waiting for a first byte)."""
        return False

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        if self.skip_sniffing():
            super()._handle_connection(connection, address)
            return
        loop = IOLoop.current()
        fd = connection.fileno()
        self.sniffing += 1

        def give_up() -> None:  # said nothing: as tornado does with a silent client
            self.sniffing -= 1
            loop.remove_handler(fd)
            connection.close()

        timer = loop.call_later(self.sniff_timeout, give_up)

        def readable(_fd: Any, _events: int) -> None:
            self.sniffing -= 1
            loop.remove_handler(fd)
            loop.remove_timeout(timer)
            try:
                first = connection.recv(1, socket.MSG_PEEK)
            except OSError:
                connection.close()
                return
            if not first:
                connection.close()
                return
            speaks_tls = first[0] == TLS_HANDSHAKE
            if speaks_tls == (self.ssl_options is not None):
                super(SniffingHTTPServer, self)._handle_connection(connection, address)
                return
            self._refuse(connection, HTTP_ONLY if speaks_tls else HTTPS_ONLY)

        loop.add_handler(fd, readable, IOLoop.READ)

    @staticmethod
    def _refuse(connection: socket.socket, answer: bytes) -> None:
        """Answer, then read what the client still sends until it closes (closing a socket
        with unread bytes resets it, and the client could lose the answer)."""
        loop = IOLoop.current()
        fd = connection.fileno()
        try:
            connection.recv(65536)
            connection.send(answer)
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            connection.close()
            return

        def close() -> None:
            loop.remove_handler(fd)
            connection.close()

        timer = loop.call_later(LINGER, close)

        def drain(_fd: Any, _events: int) -> None:
            try:
                more = connection.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                more = b""
            if not more:
                loop.remove_timeout(timer)
                close()

        loop.add_handler(fd, drain, IOLoop.READ)
