"""Outputs that take the lines the engine's fast path encodes: ``http-post``, ``tcp``, ``udp``,
``buffer: disk``.

The fast path (and with it ``workers:``) hands the output NDJSON lines its loop encoded, maybe in
another process (``write_ndjson``), instead of events. These tests run one ``files`` pipe on the
batch path (``fast=False``), on the fast path and with two workers against real receivers
(``support.httpsink``, a TCP server) and compare what arrived: for ``http-post`` request by
request, the same bodies in the same order (``batch.size`` lines a request, ``max-bytes``,
``format: json`` arrays, ``gzip``), the same halves after a 413, the same events in ``errors:``
when the receiver refuses them, and the same counts; for ``tcp`` the same bytes; for ``udp``
the same datagrams and the same event refused as too long for one. An output that
shapes what it sends from the events (a ``codec``, ``concurrency`` above 1, syslog's framing)
keeps the batch path and says why.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from engine.outputs.test_outputs_network import LineReceiver

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.checkpoints import MemoryCheckpointStore
from pipenb.engine.runtime import Engine

from support.httpsink import HttpSink, Request
from support.waiting import wait_until


def lines(n: int) -> list[bytes]:
    """JSON lines, a bad one and a non-object among them, levels in turn."""
    levels = ["INFO", "WARN", "ERROR", "DEBUG"]
    out = [
        orjson.dumps({"seq": i, "level": levels[i % 4], "msg": "m" * (i % 50)}) for i in range(n)
    ]
    out.insert(7, b"{not json")
    out.insert(20, b"[1, 2]")
    return out


PIPE: dict[str, Any] = {
    "name": "to-http",
    "input": {"files": {"path": "IN", "follow": False, "format": "json", "read-bytes": 4096}},
    "actions": [{"filter": 'level != "DEBUG"'}, {"add": {"env": "prod"}}],
    "output": {"http-post": {"url": "URL", "format": "ndjson", "batch": {"size": 50}}},
    "errors": {"file": {"path": "ERRORS"}},
}


def run(doc: dict, src: Path, out_dir: Path, url: str, **engine: Any) -> dict[str, Any]:
    """``doc`` reading ``src``, sending to ``url`` (``http-post``) or ``address`` (``tcp``)."""
    doc = copy.deepcopy(doc)
    doc["input"]["files"]["path"] = str(src)
    out = next(iter(doc["output"].values()))
    out["url" if "http-post" in doc["output"] else "address"] = url
    doc["errors"]["file"]["path"] = str(out_dir / "errors.ndjson")
    pipe = pipenb.Pipe.from_yaml(yaml.safe_dump(doc, sort_keys=False))
    ctx = RunContext(pipe=pipe.name, data_dir=str(out_dir), values=pipe.spec.values)
    eng = Engine(pipe.spec, ctx, checkpoints=MemoryCheckpointStore(), **engine)
    asyncio.run(asyncio.wait_for(eng.run(), 60))
    assert eng.state == "finished", eng.error
    snap = eng.snapshot()
    errors = out_dir / "errors.ndjson"
    # each run has a server of its own: its address is left out of the messages compared
    text = errors.read_bytes().replace(url.encode(), b"URL") if errors.exists() else b""
    return {
        "fast": eng._fast is not None,
        "workers": eng.workers,
        "why": eng.workers_reason,
        "errors": [orjson.loads(x) for x in text.splitlines()],
        "output": {k: v for k, v in snap["output"].items() if k in ("events", "errors")},
        "dropped": [a["dropped"] for a in snap["actions"]],
    }


def bodies(requests: list[Request]) -> list[tuple[int, bytes]]:
    """Each request's status and body, unzipped."""
    out = []
    for r in requests:
        body = r.body
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        out.append((r.status, body))
    return out


def three_ways(doc: dict, src: Path, tmp_path: Path, answer: Any = None) -> dict[str, Any]:
    """The pipe on the batch path, the fast path and two workers, each against a new server."""
    results = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {}), ("two", {"workers": 2})):
        d = tmp_path / label
        d.mkdir()
        with HttpSink(*([answer] if answer else [])) as rx:
            res = run(doc, src, d, rx.url, **opts)
        res["requests"] = bodies(rx.requests)
        results[label] = res
    return results


def agree(results: dict[str, Any]) -> None:
    base = results["batches"]
    assert not base["fast"]
    assert results["fast"]["fast"] and results["two"]["workers"] == 2, results["two"]["why"]
    for label in ("fast", "two"):
        r = results[label]
        assert r["requests"] == base["requests"], label
        assert r["errors"] == base["errors"], label
        assert r["output"] == base["output"], label
        assert r["dropped"] == base["dropped"], label


@pytest.mark.parametrize(
    "options",
    [
        {"format": "ndjson"},
        {"format": "json"},
        {"format": "ndjson", "gzip": True},
        {"format": "json", "max-bytes": 700},
        {"format": "ndjson", "max-bytes": 700, "batch": {"size": 7}},
    ],
    ids=["ndjson", "json", "gzip", "json-max-bytes", "max-bytes-size-7"],
)
def test_requests_are_the_batch_paths(options, tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(900)) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"]["http-post"].update(options)
    results = three_ways(doc, src, tmp_path)
    agree(results)
    base = results["batches"]
    sent = [e for _, body in base["requests"] for e in _decode(body)]
    assert [e["seq"] for e in sent] == [i for i in range(900) if i % 4 != 3]
    assert all(e["env"] == "prod" for e in sent)
    size = options.get("batch", {}).get("size", 50)
    assert all(len(_decode(body)) <= size for _, body in base["requests"])
    if "max-bytes" in options:
        assert all(len(body) <= options["max-bytes"] for _, body in base["requests"])
    assert [d["_error"]["stage"] for d in base["errors"]] == ["input", "input"]


def _decode(body: bytes) -> list[Any]:
    if body[:1] == b"[":
        return list(orjson.loads(body))
    return [orjson.loads(x) for x in body.splitlines()]


def test_a_413_splits_in_the_same_halves_and_a_refusal_dead_letters_the_same_events(tmp_path):
    """Over 3,000 bytes: 413 (the request is split); an event with ``"seq": 333``: 422."""

    def answer(req: Request) -> tuple[int, bytes]:
        if len(req.body) > 3000:
            return 413, b"too large"
        if b'"seq":333,' in req.body:
            return 422, b"no 333 here"
        return 200, b""

    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(600)) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"]["http-post"]["batch"] = {"size": 200}
    results = three_ways(doc, src, tmp_path, answer)
    agree(results)
    base = results["batches"]
    assert sum(1 for status, _ in base["requests"] if status == 413) > 0
    refused = [d for d in base["errors"] if d["_error"]["stage"] == "output"]
    assert 333 in [d["seq"] for d in refused]
    assert all("HTTP 422" in d["_error"]["message"] for d in refused)
    assert results["fast"]["output"]["errors"] == len(refused)


def test_the_disk_buffer_takes_the_lines_as_they_are(tmp_path):
    """``buffer: disk``: the fast path appends its lines to the log, which the drain sends."""
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(300)) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"]["http-post"]["buffer"] = "disk"
    results = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {})):
        d = tmp_path / label
        d.mkdir()
        with HttpSink() as rx:
            res = run(doc, src, d, rx.url, **opts)
            res["events"] = rx.events()
        results[label] = res
    assert not results["batches"]["fast"] and results["fast"]["fast"]
    assert results["fast"]["events"] == results["batches"]["events"]
    assert [e["seq"] for e in results["fast"]["events"]] == [i for i in range(300) if i % 4 != 3]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"codec": "loki"}, "the output http-post: codec: loki shapes the body from the events"),
        (
            {"concurrency": 4},
            "the output http-post: concurrency: 4 keeps batches of events in flight",
        ),
    ],
)
def test_an_output_that_needs_the_events_keeps_the_batch_path(options, why, tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(100)) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"]["http-post"].update(options)
    with HttpSink() as rx:
        res = run(doc, src, tmp_path, rx.url, workers=2)
    assert not res["fast"] and res["workers"] == 1
    assert why in res["why"]
    assert rx.delivered()  # and it still sends


def test_tcp_sends_the_same_bytes(tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(2000)) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"] = {"tcp": {"address": "ADDRESS", "batch": {"size": 64}}}
    sent = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {}), ("two", {"workers": 2})):
        d = tmp_path / label
        d.mkdir()
        rx = LineReceiver()
        rx.listen()
        try:
            res = run(doc, src, d, f"127.0.0.1:{rx.port}", **opts)
            assert res["fast"] == (label != "batches") and res["output"]["events"] == 1500
            wait_until(lambda rx=rx: len(rx.lines) >= 1500, what="every line at the receiver")
        finally:
            rx.close()
        sent[label] = b"".join(rx.lines)
    assert sent["fast"] == sent["batches"] == sent["two"]
    assert [orjson.loads(x)["seq"] for x in sent["fast"].splitlines()] == [
        i for i in range(2000) if i % 4 != 3
    ]


def test_syslog_frames_events_and_keeps_the_batch_path(tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines(100)) + b"\n")
    doc = copy.deepcopy(PIPE)
    rx = LineReceiver()
    rx.listen()
    doc["output"] = {
        "syslog": {"address": f"127.0.0.1:{rx.port}", "protocol": "tcp", "framing": "newline"}
    }
    try:
        doc["input"]["files"]["path"] = str(src)
        doc["errors"]["file"]["path"] = str(tmp_path / "errors.ndjson")
        pipe = pipenb.Pipe.from_yaml(yaml.safe_dump(doc, sort_keys=False))
        ctx = RunContext(pipe=pipe.name, data_dir=str(tmp_path), values=pipe.spec.values)
        eng = Engine(pipe.spec, ctx, checkpoints=MemoryCheckpointStore(), workers=2)
        asyncio.run(asyncio.wait_for(eng.run(), 60))
        assert eng.state == "finished", eng.error
        assert eng._fast is None and eng.workers == 1
        assert "the output syslog: it frames each event itself" in eng.workers_reason
        wait_until(lambda: len(rx.lines) >= 75, what="the syslog lines")
    finally:
        rx.close()


def test_udp_sends_the_same_datagrams_and_refuses_the_same_events(tmp_path):
    """A datagram a line, as a datagram an event; a line too long for one is the same dead
    letter as its event."""
    src = tmp_path / "in.ndjson"
    raw = lines(300)
    raw.insert(40, orjson.dumps({"seq": 9999, "level": "WARN", "msg": "x" * 70_000}))
    src.write_bytes(b"\n".join(raw) + b"\n")
    doc = copy.deepcopy(PIPE)
    doc["output"] = {"udp": {"address": "ADDRESS"}}
    got = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {}), ("two", {"workers": 2})):
        d = tmp_path / label
        d.mkdir()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(10)
            res = run(doc, src, d, f"127.0.0.1:{rx.getsockname()[1]}", **opts)
            assert res["fast"] == (label != "batches")
            res["datagrams"] = [rx.recv(1 << 17) for _ in range(res["output"]["events"])]
        got[label] = res
    base = got["batches"]
    assert len(base["datagrams"]) == 225 and base["output"]["errors"] == 1
    for label in ("fast", "two"):
        for key in ("datagrams", "errors", "output", "dropped"):
            assert got[label][key] == base[key], (label, key)
    (big,) = [d for d in base["errors"] if d["_error"]["stage"] == "output"]
    assert big["seq"] == 9999 and "more than a UDP datagram carries" in big["_error"]["message"]
