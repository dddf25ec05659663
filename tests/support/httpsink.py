"""An HTTP server on 127.0.0.1 that pipes send to (``http-post``) or fetch from (``http-poll``).

One helper for every test that needs the far end of an HTTP output or input, so that each test
says only what its server answers (``answer``) and reads what arrived (``events``, ``requests``).
It records every request with the status it was given: what a sender delivered is what was
answered 2xx (a body refused with 413 or 503 was not delivered, and a sender must send it again).

HTTP/1.1 with a Content-Length on every answer, so senders keep their connections alive as they
do with real receivers; one thread per connection (``ThreadingHTTPServer``), so an ``answer`` that
takes its time (a receiver's simulated latency) does not hold the others up.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Request:
    """One request as the sink received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def lines(self) -> list[Any]:
        """The body's NDJSON lines, decoded (a JSON array body gives its items)."""
        if self.body.lstrip()[:1] == b"[":
            return list(orjson.loads(self.body))
        return [orjson.loads(x) for x in self.body.splitlines() if x.strip()]


# what to answer: (status, body) or (status, body, content type)
Answer = Callable[[Request], "tuple[int, bytes] | tuple[int, bytes, str]"]


def ok(request: Request) -> tuple[int, bytes]:
    """200 with an empty body, to anything."""
    return 200, b""


class HttpSink:
    """``with HttpSink(answer) as sink:`` a server at ``sink.url`` until the block ends."""

    def __init__(self, answer: Answer = ok, *, tls: ssl.SSLContext | None = None):
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, self.path, dict(self.headers), self.rfile.read(length)
                )
                status, body, *kind = answer(request)
                request.status = status
                with sink.lock:
                    sink.requests.append(request)
                self.send_response(status)
                self.send_header("Content-Type", kind[0] if kind else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[Request]:
        """The requests answered 2xx, in the order they were answered."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def events(self) -> list[Any]:
        """Every event delivered (answered 2xx), in the order the requests were answered."""
        return [e for r in self.delivered() for e in r.lines()]

    def refused(self) -> int:
        """How many requests were answered with anything but 2xx."""
        with self.lock:
            return sum(1 for r in self.requests if not 200 <= r.status < 300)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
