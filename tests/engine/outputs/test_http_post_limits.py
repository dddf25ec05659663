"""``http-post`` against receivers with limits: ``max-bytes``, a 413 splits, TLS verified.

The receiver is a small ``http.server`` in a thread that, like nginx's
``client_max_body_size``, answers 413 to a body over its limit; over HTTPS it serves a trustme
certificate.
"""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading

import orjson
import pytest
import trustme

import pipenb

from support.files import read_ndjson


class Receiver:
    def __init__(self, limit: int, tls: ssl.SSLContext | None = None):
        self.bodies: list[bytes] = []
        self.refused = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(body) > limit:
                    outer.refused += 1
                    self.send_response(413)
                    self.end_headers()
                    self.wfile.write(b"<html>413 Request Entity Too Large</html>")
                    return
                outer.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [orjson.loads(x) for b in self.bodies for x in b.splitlines() if x.strip()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(output: dict, events: list[dict], tmp_path, data_dir) -> list[dict]:
    errors = tmp_path / "errors.ndjson"
    doc = {
        "name": "post",
        "input": {"echo": {"events": events}},
        "output": output,
        "errors": {"file": {"path": str(errors)}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    return read_ndjson(errors) if errors.exists() else []


EVENTS = [{"seq": i, "msg": "x" * 30} for i in range(1000)]


def test_a_413_splits_the_batch_until_it_fits(tmp_path, data_dir):
    rx = Receiver(limit=4000)
    try:
        big = {"seq": -1, "msg": "y" * 5000}
        output = {"http-post": {"url": f"http://127.0.0.1:{rx.port}/", "format": "ndjson",
                                "batch": {"size": 1000}}}  # fmt: skip
        dead = run(output, [*EVENTS, big], tmp_path, data_dir)
    finally:
        rx.close()
    assert sorted(e["seq"] for e in rx.events()) == list(range(1000))
    assert rx.refused > 0
    assert [d["seq"] for d in dead] == [-1]
    assert "HTTP 413" in dead[0]["_error"]["message"]


def test_max_bytes_keeps_every_request_under_the_limit(tmp_path, data_dir):
    rx = Receiver(limit=3000)
    try:
        for fmt in ("ndjson", "json"):
            output = {"http-post": {"url": f"http://127.0.0.1:{rx.port}/", "format": fmt,
                                    "max-bytes": 3000, "batch": {"size": 1000}}}  # fmt: skip
            assert run(output, EVENTS, tmp_path, data_dir) == []
    finally:
        rx.close()
    assert rx.refused == 0
    assert all(len(b) <= 3000 for b in rx.bodies)
    got = []
    for b in rx.bodies:
        doc = orjson.loads(b) if b.startswith(b"[") else [orjson.loads(x) for x in b.splitlines()]
        got += [e["seq"] for e in doc]
    assert sorted(got) == sorted(list(range(1000)) * 2)


@pytest.fixture
def https_receiver(tmp_path):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rx = Receiver(limit=1 << 20, tls=ctx)
    yield rx, str(ca_file)
    rx.close()


def test_https_with_the_receivers_ca(tmp_path, data_dir, https_receiver):
    rx, ca_file = https_receiver
    output = {"http-post": {"url": f"https://127.0.0.1:{rx.port}/", "format": "ndjson",
                            "tls": {"ca-file": ca_file}}}  # fmt: skip
    assert run(output, EVENTS[:10], tmp_path, data_dir) == []
    assert [e["seq"] for e in rx.events()] == list(range(10))


def test_an_untrusted_certificate_is_a_dead_letter_not_a_retry_for_ever(
    tmp_path, data_dir, https_receiver
):
    rx, _ = https_receiver
    output = {"http-post": {"url": f"https://127.0.0.1:{rx.port}/", "format": "ndjson"}}
    dead = run(output, EVENTS[:10], tmp_path, data_dir)  # finishes: not retried for ever
    assert [d["seq"] for d in dead] == list(range(10))
    assert "certificate is not trusted" in dead[0]["_error"]["message"]
    assert "tls: {ca-file" in dead[0]["_error"]["message"]
    assert rx.events() == []


def test_http_poll_over_https_with_the_servers_ca(tmp_path, data_dir):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'[{"n": 1}, {"n": 2}]'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out.ndjson"
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        for tls, want in (({"ca-file": str(ca_file)}, [{"n": 1}, {"n": 2}]), (None, [])):
            poll: dict = {"url": url, "interval": None}
            if tls:
                poll["tls"] = tls
            doc = {"name": "poll", "input": {"http-poll": poll},
                   "output": {"file": {"path": str(out)}}}  # fmt: skip
            out.unlink(missing_ok=True)
            pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
            asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
            assert (read_ndjson(out) if out.exists() else []) == want
    finally:
        server.shutdown()
        server.server_close()
