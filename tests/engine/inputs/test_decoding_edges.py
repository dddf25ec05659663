"""Decoding edges (issue 16 item 10): integers past 64 bits keep their digits, and
``http-server`` answers ``GET /health``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import requests

from pipenb.engine.codecs.lines import decode_chunk

from support.engines import pipe_doc, running
from support.waiting import async_wait_until

BIG = 123456789012345678901234567890


def test_integers_past_64_bits_keep_their_digits():
    chunk = b'{"a": %d}\n{"b": 1}\n{"c": -%d}\n' % (BIG, 2**64)
    events, rejects = decode_chunk(chunk, "json")
    assert events == [{"a": BIG}, {"b": 1}, {"c": -(2**64)}] and rejects == []
    # a long run of digits inside a string is a string still; a bad line is still a dead letter
    events, rejects = decode_chunk(b'{"s": "%d"}\n{"x": %d\n' % (BIG, BIG), "json")
    assert events == [{"s": str(BIG)}] and len(rejects) == 1


def test_a_big_integer_survives_files_to_file(tmp_path, data_dir):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b'{"id": %d, "n": 1}\n' % BIG)
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"files": {"path": str(src), "format": "json", "follow": False}}, out)
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    assert json.loads(out.read_text()) == {"id": BIG, "n": 1}  # the stdlib keeps every digit


def test_http_server_health(tmp_path, data_dir):
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "path": "/events"}},
                    tmp_path / "out.ndjson")  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            base = f"http://127.0.0.1:{inp.port}"
            health = await asyncio.to_thread(requests.get, base + "/health", timeout=10)
            other = await asyncio.to_thread(requests.get, base + "/nope", timeout=10)
            return health, other

    health, other = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert other.status_code == 404


@pytest.mark.parametrize("path", ["/proc/loadavg", "/proc/self/environ", "/proc/self/status"])
def test_files_on_proc_are_read_once_to_their_end(tmp_path, data_dir, path):
    """/proc files report size 0 but have content: read once, not re-read as "truncated"."""
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"files": {"path": path, "follow": False}}, out)
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 30))
    lines = out.read_bytes().count(b"\n") if out.exists() else 0
    # the same content once: as many events as the file has lines (environ: NULs, one line)
    expected = max(1, Path(path).read_bytes().count(b"\n"))
    assert 1 <= lines <= expected + 1


@pytest.mark.parametrize("kind", ["tcp", "http-server"])
def test_no_traceback_when_a_pipe_stops_with_a_sender_connected(tmp_path, data_dir, caplog, kind):
    import socket

    pipe = pipe_doc({kind: {"address": "127.0.0.1:0"}}, tmp_path / "out.ndjson")
    partial = (
        b"half a line" if kind == "tcp"
        else b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    )  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            sock = socket.create_connection(("127.0.0.1", inp.port), timeout=10)
            sock.sendall(partial)
            await async_wait_until(
                lambda: kind != "tcp" or inp.connections == 1, what="the connection"
            )
        sock.close()

    with caplog.at_level("DEBUG"):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not [r for r in caplog.records if r.exc_info or "CancelledError" in r.getMessage()]
