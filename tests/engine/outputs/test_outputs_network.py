"""Network outputs ``http-post``, ``tcp`` and ``udp``, against real servers on 127.0.0.1.

Failures are made for real (a port that refuses connections, 500/429/503 answers, a receiver
that hangs up) and the engine's retries are observed through its metrics, never waited out by
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

import pipenb
from pipenb.engine.outputs.http_post import retry_after

from support.engines import FakeServer
from support.files import read_ndjson
from support.pipes import problems_of
from support.waiting import async_wait_until


def echo_pipe(events: list[dict], output: dict, *, errors: Path | None = None) -> pipenb.Pipe:
    doc: dict[str, Any] = {"name": "net-out", "input": {"echo": {"events": events}}}
    doc["output"] = output
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "10ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


def numbered(n: int) -> list[dict]:
    return [{"i": i, "msg": f"event {i}"} for i in range(n)]


# ------------------------------------------------------------------------------ http-post


def test_http_post_rides_out_refusals_500_429_and_503_and_delivers_everything(data_dir):
    answers = [
        (500, b"oops", {}),
        (500, b"oops", {}),
        (429, b"slow down", {"Retry-After": "0"}),
        (503, b"maintenance", {}),
    ]
    with FakeServer(answers=answers, listening=False) as srv:  # refuses connections at first
        pipe = echo_pipe(
            numbered(200),
            {"http-post": {"url": srv.url + "/in", "batch": {"size": 50}, "timeout": "5s"}},
        )
        engine = pipe.engine(data_dir=data_dir)

        async def scenario():
            task = asyncio.create_task(engine.run())
            await async_wait_until(lambda: engine.metrics.output.retries >= 2, what="refusals")
            srv.listen()
            await asyncio.wait_for(task, 45)  # echo is finite: run() returns once all is written

        asyncio.run(asyncio.wait_for(scenario(), 60))
        delivered = [e["i"] for body in srv.answered(200) for e in orjson.loads(body)]
        statuses = srv.statuses
    snap = engine.snapshot()
    assert sorted(set(delivered)) == list(range(200))  # every event at least once
    assert len(delivered) == 200  # and, as only refused batches were sent again, once
    assert statuses[:5] == [500, 500, 429, 503, 200]
    assert snap["state"] == "finished"
    assert snap["output"]["events"] == 200 and snap["output"]["errors"] == 0
    assert snap["output"]["retries"] >= 6  # two refusals, two 500s, a 429 and a 503
    assert snap["dead_letters"] == 0


def test_http_post_sends_4xx_batches_to_errors(tmp_path, data_dir):
    errors = tmp_path / "errors.ndjson"
    answers = [(200, b"", {}), (400, b'{"error": "field x is required"}', {}), (200, b"", {})]
    with FakeServer(answers=answers) as srv:
        pipe = echo_pipe(
            numbered(3),
            {"http-post": {"url": srv.url, "batch": {"size": 1}}},
            errors=errors,
        )
        snap = pipe.run(data_dir=data_dir)
        delivered = [e["i"] for body in srv.answered(200) for e in orjson.loads(body)]
    assert delivered == [0, 2]
    (dead,) = read_ndjson(errors)
    assert dead == {
        "i": 1,
        "msg": "event 1",
        "_error": {
            "stage": "output",
            "message": f'POST {srv.url}: HTTP 400 Bad Request: {{"error": "field x is required"}}',
        },
    }
    assert snap["output"]["errors"] == 1 and snap["output"]["retries"] == 0


@pytest.mark.parametrize(
    ("options", "content_type"),
    [
        ({"format": "json"}, "application/json"),
        ({"format": "ndjson", "gzip": True, "method": "PUT"}, "application/x-ndjson"),
        ({"headers": {"Content-Type": "application/vnd.x+json"}}, "application/vnd.x+json"),
    ],
)
def test_http_post_bodies_headers_and_gzip(data_dir, options, content_type):
    events = [{"a": 1, "s": "é"}, {"nested": {"b": [1, None]}}]
    with FakeServer() as srv:
        headers = {"X-Key": "k1", **options.get("headers", {})}
        out = {"http-post": {**options, "url": srv.url + "/x", "headers": headers}}
        echo_pipe(events, out).run(data_dir=data_dir)
        ((method, path, headers, body),) = srv.requests
    assert path == "/x" and method == options.get("method", "POST")
    assert headers["X-Key"] == "k1"
    assert headers["Content-Type"] == content_type
    if options.get("gzip"):
        assert headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(body)
    if options.get("format") == "ndjson":
        assert [orjson.loads(line) for line in body.splitlines()] == events
    else:
        assert orjson.loads(body) == events


def test_http_post_waits_out_retry_after(data_dir):
    with FakeServer(answers=[(503, b"", {"Retry-After": "1"})]) as srv:
        started = time.monotonic()
        snap = echo_pipe([{"a": 1}], {"http-post": {"url": srv.url}}).run(data_dir=data_dir)
        elapsed = time.monotonic() - started
        assert srv.statuses == [503, 200]
    assert elapsed >= 1.0
    assert snap["output"]["events"] == 1 and snap["output"]["retries"] == 1


def test_retry_after_reads_seconds_and_http_dates():
    def resp(value: str | None) -> HTTPResponse:
        headers = HTTPHeaders({"Retry-After": value} if value is not None else {})
        return HTTPResponse(HTTPRequest("http://x"), 503, headers=headers)

    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert retry_after(resp("7")) == 7.0
    assert 100 < retry_after(resp(soon)) <= 120
    assert retry_after(resp("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    assert retry_after(resp("soon")) is None
    assert retry_after(resp(None)) is None


# ------------------------------------------------------------------------------ tcp


class LineReceiver:
    """A TCP server in a thread that records the lines it reads. Bound at once; it accepts
    connections from ``listen()``; ``hang_up()`` closes the connections it has."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.connections: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def listen(self) -> None:
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("rb") as f:
                for line in f:
                    self.lines.append(line)
        except (OSError, ValueError):  # hung up by hang_up()
            pass

    def hang_up(self) -> None:
        for conn in self.connections:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_tcp_output_connects_late_reconnects_after_a_hang_up_and_delivers(data_dir):
    rx = LineReceiver()
    doc = {
        "name": "tcp-out",
        "input": {"echo": {"events": numbered(10), "interval": "200ms", "count": 3}},
        "output": {"tcp": {"address": f"127.0.0.1:{rx.port}", "batch": {"timeout": "5ms"}}},
    }
    engine = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).engine(data_dir=data_dir)

    async def scenario():
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.metrics.output.retries >= 1, what="a refusal")
        rx.listen()
        await async_wait_until(
            lambda: len(rx.lines) == engine.metrics.output.events >= 10,
            what="the first batch, read whole",
        )
        # Hang up between two batches: the next write finds the connection closed and makes
        # a new one. (A hang-up in the middle of a batch loses what the receiver did not read:
        # TCP has no acknowledgement of what the program on the other end took.)
        rx.hang_up()
        await asyncio.wait_for(task, 30)
        await async_wait_until(lambda: len(rx.lines) >= 30, what="the receiver to read all")

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        rx.close()
    got = [orjson.loads(line) for line in rx.lines]
    assert all(line.endswith(b"\n") for line in rx.lines)
    assert sorted(e["i"] for e in got) == sorted(list(range(10)) * 3)
    assert len(rx.connections) == 2 and engine.parts.output.connects == 2


# ------------------------------------------------------------------------------ udp


def test_udp_output_one_datagram_per_event_and_oversized_ones_to_errors(tmp_path, data_dir):
    errors = tmp_path / "errors.ndjson"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        port = rx.getsockname()[1]
        events = [{"i": 1}, {"big": "x" * 70_000}, {"i": 2, "s": "é\n"}]
        snap = echo_pipe(events, {"udp": {"address": f"127.0.0.1:{port}"}}, errors=errors).run(
            data_dir=data_dir
        )
        datagrams = [rx.recv(1 << 17), rx.recv(1 << 17)]
    assert [orjson.loads(d) for d in datagrams] == [events[0], events[2]]
    assert all(d.endswith(b"\n") and d.count(b"\n") == 1 for d in datagrams)
    (dead,) = read_ndjson(errors)
    assert dead["_error"]["message"] == (
        "event is 70011 bytes as JSON, more than a UDP datagram carries (65507)"
    )
    assert snap["output"]["events"] == 2 and snap["output"]["errors"] == 1


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ({"tcp": {"address": ":5140"}}, "expected a host and a port to send to"),
        ({"udp": {"address": "127.0.0.1:0"}}, "expected a host and a port to send to"),
        ({"http-post": {"url": "ftp://x"}}, "url must start with http://"),
        ({"http-post": {"url": "http://x", "format": "csv"}}, "http-post.format"),
    ],
)
def test_network_output_validation(out, message):
    doc = orjson.dumps({"name": "t", "input": {"echo": {"lines": ["a"]}}, "output": out})
    problems = problems_of(doc.decode())
    assert any(message in p.message for p in problems), problems
