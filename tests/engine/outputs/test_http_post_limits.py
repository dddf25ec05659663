"""``http-post`` against receivers with limits: ``max-bytes``, a 413 splits, TLS verified.

The receiver (``support.httpsink``), like nginx's ``client_max_body_size``, answers 413 to a
body over its limit; over HTTPS it serves a trustme certificate.
"""

from __future__ import annotations

import asyncio
import ssl

import orjson
import pytest
import trustme

import pipenb

from support.files import read_ndjson
from support.httpsink import HttpSink, Request


def limited(limit: int):
    """An answer that refuses, as nginx does, a body over ``limit`` bytes."""

    def answer(request: Request) -> tuple[int, bytes, str]:
        if len(request.body) > limit:
            return 413, b"<html>413 Request Entity Too Large</html>", "text/html"
        return 200, b"", "application/json"

    return answer


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
    with HttpSink(limited(4000)) as rx:
        big = {"seq": -1, "msg": "y" * 5000}
        output = {"http-post": {"url": rx.url, "format": "ndjson", "batch": {"size": 1000}}}
        dead = run(output, [*EVENTS, big], tmp_path, data_dir)
    assert sorted(e["seq"] for e in rx.events()) == list(range(1000))
    assert rx.refused() > 0
    assert [d["seq"] for d in dead] == [-1]
    assert "HTTP 413" in dead[0]["_error"]["message"]


def test_max_bytes_keeps_every_request_under_the_limit(tmp_path, data_dir):
    with HttpSink(limited(3000)) as rx:
        for fmt in ("ndjson", "json"):
            output = {"http-post": {"url": rx.url, "format": fmt,
                                    "max-bytes": 3000, "batch": {"size": 1000}}}  # fmt: skip
            assert run(output, EVENTS, tmp_path, data_dir) == []
    assert rx.refused() == 0
    assert all(len(r.body) <= 3000 for r in rx.requests)
    assert sorted(e["seq"] for e in rx.events()) == sorted(list(range(1000)) * 2)


@pytest.fixture
def https_receiver(tmp_path):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with HttpSink(tls=ctx) as rx:
        yield rx, str(ca_file)


def test_https_with_the_receivers_ca(tmp_path, data_dir, https_receiver):
    rx, ca_file = https_receiver
    output = {"http-post": {"url": rx.url, "format": "ndjson", "tls": {"ca-file": ca_file}}}
    assert run(output, EVENTS[:10], tmp_path, data_dir) == []
    assert [e["seq"] for e in rx.events()] == list(range(10))


def test_an_untrusted_certificate_is_a_dead_letter_not_a_retry_for_ever(
    tmp_path, data_dir, https_receiver
):
    rx, _ = https_receiver
    output = {"http-post": {"url": rx.url, "format": "ndjson"}}
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

    def answer(request: Request) -> tuple[int, bytes]:
        return 200, b'[{"n": 1}, {"n": 2}]'

    out = tmp_path / "out.ndjson"
    with HttpSink(answer, tls=ctx) as server:
        for tls, want in (({"ca-file": str(ca_file)}, [{"n": 1}, {"n": 2}]), (None, [])):
            poll: dict = {"url": server.url, "interval": None}
            if tls:
                poll["tls"] = tls
            doc = {"name": "poll", "input": {"http-poll": poll},
                   "output": {"file": {"path": str(out)}}}  # fmt: skip
            out.unlink(missing_ok=True)
            pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
            asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
            assert (read_ndjson(out) if out.exists() else []) == want
