"""A pipe's engine running on the test's own event loop, pipe documents for the network inputs,
and a scripted HTTP server to send to or poll from.

Every test that runs an engine on real loopback sockets uses ``running``: it waits (polling, with
a deadline) until a listening input accepts connections and always stops the engine again.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

import pipenb

from support.waiting import async_wait_until, stop_engine


def pipe_doc(inp: dict, out: Path, *, errors: Path | None = None, output: dict | None = None):
    doc: dict[str, Any] = {
        "name": "net",
        "input": inp,
        "output": output or {"file": {"path": str(out), "batch": {"timeout": "10ms"}}},
    }
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "10ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


@contextlib.asynccontextmanager
async def running(
    pipe: pipenb.Pipe, data_dir: str, *, listening: bool | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """The pipe's engine, running on this loop; with ``listening`` (by default: when the input has
    a ``port``), once its input accepts connections. Raises what failed if it stopped at once."""
    engine = pipe.engine(data_dir=data_dir)
    task = asyncio.create_task(engine.run())
    inp = engine.parts.input
    if listening is None:
        listening = hasattr(inp, "port")
    if listening:
        await async_wait_until(lambda: inp.port or task.done(), what="the listener")
    if task.done():
        task.result()  # raises what failed
    try:
        yield engine, inp
    finally:
        if not task.done():
            await stop_engine(engine, task)


class FakeServer:
    """A scripted HTTP server on 127.0.0.1, in a thread.

    ``answers`` (status, body, headers) are used one per request, then ``default``. Requests are
    recorded as (method, path, headers, body) in ``requests``, their statuses in ``statuses``.
    While ``gate`` is clear, requests wait before being answered. With ``listening=False`` the
    port is bound but refuses connections until ``listen()``.
    """

    def __init__(self, default=(200, b"", {}), answers=(), *, listening: bool = True):
        self.default = default
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.statuses: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.listening = listening
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.gate.wait(30)
                status, data, headers = outer.answers.pop(0) if outer.answers else outer.default
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                outer.statuses.append(status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), Handler, bind_and_activate=False
        )
        self.httpd.daemon_threads = True
        self.httpd.server_bind()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def listen(self) -> None:
        self.httpd.server_activate()
        self.thread.start()

    def answered(self, status: int = 200) -> list[bytes]:
        """Bodies of the requests answered with ``status``."""
        return [r[3] for r, s in zip(self.requests, self.statuses) if s == status]

    def __enter__(self):
        if self.listening:
            self.listen()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
