"""Bad input at the edges, each on a real socket on 127.0.0.1; afterwards the process still
answers a normal request.

The control plane (a real ``pipenb server``): bodies over the limit however they come, malformed
JSON to every operation that takes a body, a check-in under another agent's id. The inputs (the
real engine on real sockets): lines over ``max-line-bytes``, bytes that are not UTF-8, binary
garbage, a slowloris client.

Already covered elsewhere, not repeated here: a 17 MiB body with a Content-Length and a client
hanging up mid-body (test_server_api.py), a minimal forged check-in (test_server_auth.py), tcp
lines with garbage and bad UTF-8, udp syslog garbage, http-server bodies over ``max-body`` and
undecodable JSON (test_inputs_network.py), files cutting long lines (test_inputs_files.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import select
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests

import pipenb
from pipenb.server.settings import ServerSettings

from support.edgekit import (
    World,
    agent_view,
    checkin,
    error_of,
    fill,
    make_world,
    operations,
    serves,
)
from support.engines import running
from support.files import read_ndjson
from support.serverproc import ServerProcess
from support.waiting import async_wait_until, wait_until

LIMIT = ServerSettings.max_pipe_body  # a pipe push: 1 MiB (a check-in: the same)
MiB = 1 << 20


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # a long poll interval: agents stay online through the test, so a state that changes says
    # something happened, not that time passed
    with ServerProcess(
        tmp_path_factory.mktemp("edges"), enroll_key="ek-edges", poll_interval=30
    ) as s:
        yield s


@pytest.fixture(scope="module")
def world(srv) -> World:
    return make_world(srv, "edge")


# ------------------------------------------------------------------------------ the server


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request by hand; everything the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_bodies_over_the_limit_get_a_json_413_however_they_come(srv, world):
    """Content-Length beyond tornado's own cap (it used to answer a bare 400 with no body), a
    chunked body with no length at all, and a claimed length far too big to ever read."""
    json_ct = {"Content-Type": "application/json"}

    r = srv.request("POST", "/pipes", data=b"x" * (LIMIT * 2 + MiB), headers=json_ct)
    err = error_of(r, 413, "too_large")
    assert err["message"] == f"request body over {LIMIT} bytes"
    serves(srv)

    def chunks():
        for _ in range(LIMIT // MiB + 2):
            yield b"y" * MiB

    r = srv.request("POST", "/agent/checkin", token=world.key_a, data=chunks(), headers=json_ct)
    error_of(r, 413, "too_large")
    serves(srv)

    # a 10 GB claim with one byte sent: refused from the headers, without waiting for the body
    started = time.monotonic()
    head = (
        b"POST /pipenb/api/v1/agent/enroll HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    )
    answer = raw_request(srv.port, head, b"{")
    assert time.monotonic() - started < 10
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Payload Too Large", answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in headers
    assert orjson.loads(body)["error"]["code"] == "too_large"
    serves(srv)
    assert checkin(srv, world.key_a, world.a).status_code == 200  # agents too

    # a Content-Length that is not a number: a JSON 400 saying so, not tornado's empty one
    head = (
        b"POST /pipenb/api/v1/agent/enroll HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: e*ps|9\r\n\r\n"
    )
    answer = raw_request(srv.port, head, b"{}")
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", answer
    error = orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "bad_request" and "Content-Length" in error["message"]
    serves(srv)


MALFORMED = {
    "truncated": (b'{"yaml": "x",', "unexpected end of data"),
    "trailing garbage": (b'{"id": "x"}}', "unexpected content after document"),
    "not UTF-8": (b'{"id": "caf\xc3"}', "not valid UTF-8"),
    "single quotes": (b"{'id': 'x'}", "expected a string key"),
    "NaN": (b'{"n": NaN}', "expected a JSON value"),
    "too deep": (b"[" * 2000 + b"]" * 2000, "depth limit exceeded"),
}


def test_malformed_json_to_every_operation_that_takes_a_body_is_a_400(srv, world):
    """Every POST/PUT/PATCH of the route table, authorised as it must be and aimed at resources
    that exist, so the only thing wrong is the body; operations that read no body (start, stop,
    create a key) refuse a broken one too rather than act on it."""
    before = agent_view(srv, world)
    auth = {"user": True, "agent": world.key_a, "none": None}
    checked = []
    for method, path, op in operations():
        if method not in ("POST", "PUT", "PATCH"):
            continue
        url = fill(path, world.ids)
        for what, (body, problem) in MALFORMED.items():
            r = srv.request(
                method,
                url,
                token=auth[op.auth],
                data=body,
                headers={"Content-Type": "application/json"},
            )
            err = error_of(r, 400, "invalid_json")
            assert err["message"].startswith("the body is not valid JSON: "), (url, what, err)
            assert problem in err["message"] and "line 1 column" in err["message"], err
        checked.append(f"{method} {path}")
    assert len(checked) >= 10, checked
    assert "POST /agent/checkin" in checked and "PATCH /agents/{agent_id}" in checked
    # nothing was acted on: no deployment stopped, no key made, no agent changed or enrolled
    assert agent_view(srv, world) == before
    ids = {a["id"] for a in srv.request("GET", "/agents").json()["agents"]}
    assert ids == {world.a, world.b}
    serves(srv)
    assert srv.request("POST", f"/deployments/{world.dep}/stop").status_code == 200
    assert srv.request("POST", f"/deployments/{world.dep}/start", json={}).status_code == 200


def test_a_checkin_under_another_agents_id_is_refused_and_changes_nothing(srv, world):
    """Agent a's valid key with agent b's id, carrying everything a check-in can write."""
    before = agent_view(srv, world)
    forged = checkin(
        srv,
        world.key_a,
        world.b,
        seq=2,
        full=True,
        attributes={"host": "forged"},
        pipes=[
            {
                "deployment_id": world.dep,
                "state": "failed",
                "error": "forged",
                "metrics": {"input": {"events": 0}},
                "checkpoint": {"owner": world.a, "offset": 0},
            }
        ],
        acks=[world.command],
        captures=[{"command_id": world.command, "events": [{"forged": True}]}],
        logs=[{"level": "error", "deployment_id": world.dep, "message": "forged line"}],
        leaving=True,
    )
    err = error_of(forged, (401, 403))
    assert world.a in err["message"] and world.b in err["message"]
    assert agent_view(srv, world) == before
    # b's own next check-in still gets its command, and a's own check-in works
    r = checkin(srv, world.key_b, world.b, seq=2, pipes=[world.report])
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["commands"]] == [world.command]
    assert checkin(srv, world.key_a, world.a).status_code == 200
    serves(srv)


# ------------------------------------------------------------------------------ the inputs


def pipe_of(inp: dict, out: Path, errors: Path | None = None) -> pipenb.Pipe:
    doc = {
        "name": "edge",
        "input": inp,
        "output": {"file": {"path": str(out), "batch": {"timeout": "10ms"}}},
    }
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "10ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


def raws(path: Path) -> list[str]:
    return [e["_raw"] for e in read_ndjson(path)]


def garbage(n: int, seed: int) -> bytes:
    """``n`` reproducible random bytes: NULs, invalid UTF-8, stray CRs and newlines."""
    return random.Random(seed).randbytes(n)


def test_files_cut_over_long_lines_count_them_and_replace_bad_utf8(tmp_path, data_dir, caplog):
    """An over-long line is handed on in pieces while it is still being written (it never
    waits whole in memory), counted once however it was cut, and logged; bytes that are not
    UTF-8 are replaced; the pipe keeps reading."""
    log_file, out = tmp_path / "app.log", tmp_path / "out.ndjson"
    log_file.write_bytes(b"before\n" + b"y" * 2500)  # a line longer than the limit, unfinished
    pipe = pipe_of(
        {
            "files": {
                "path": str(log_file),
                "max-line-bytes": 1000,
                "read-bytes": 700,
                "poll-interval": "10ms",
            }
        },
        out,
    )

    async def scenario():
        async with running(pipe, data_dir) as (engine, _):
            await async_wait_until(
                lambda: raws(out)[:2] == ["before", "y" * 1000], what="a first piece"
            )
            with open(log_file, "ab") as fh:  # it ends; then bad bytes, another long line
                fh.write(b"\ncaf\xc3 \xff\xfe end\n" + b"z" * 2500 + b"\nafter\n")
            await async_wait_until(lambda: "after" in raws(out), what="the line after")
            with open(log_file, "ab") as fh:  # the pipe keeps reading
                fh.write(b"later\n")
            await async_wait_until(lambda: "later" in raws(out), what="a later line")
            return engine.snapshot()

    with caplog.at_level(logging.WARNING, logger="pipenb.engine.files"):
        snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    got = raws(out)
    bad = got.index("caf\ufffd \ufffd\ufffd end")
    assert got[0] == "before" and got[-2:] == ["after", "later"]
    y_pieces, z_pieces = got[1:bad], got[bad + 1 : -2]
    assert "".join(y_pieces) == "y" * 2500 and "".join(z_pieces) == "z" * 2500
    assert all(0 < len(p) <= 1000 for p in y_pieces + z_pieces)
    assert snap["input"]["long_lines"] == 2  # two lines cut, each counted once
    assert snap["state"] == "running"
    (warning,) = [r.getMessage() for r in caplog.records]  # rate-limited: one, not one per cut
    assert "longer than max-line-bytes (1000)" in warning and str(log_file) in warning


def test_files_json_lines_that_are_not_utf8_go_to_dead_letters(tmp_path, data_dir):
    log_file, out, errors = tmp_path / "app.ndjson", tmp_path / "out", tmp_path / "errors"
    log_file.write_bytes(b'{"a": 1}\n{"s": "caf\xc3"}\n\xff\xfe\x00\n{"b": 2}\n')
    pipe = pipe_of(
        {"files": {"path": str(log_file), "format": "json", "follow": False}}, out, errors
    )
    snap = pipe.run(data_dir=data_dir)
    assert snap["state"] == "finished"
    assert read_ndjson(out) == [{"a": 1}, {"b": 2}]
    dead = read_ndjson(errors)
    assert [d["_raw"] for d in dead] == ['{"s": "caf\ufffd"}', "\ufffd\ufffd\x00"]
    assert all("not valid JSON" in d["_error"]["message"] for d in dead), dead
    assert all(d["_path"] == str(log_file) for d in dead)


def tcp_send(port: int, *chunks: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        for c in chunks:
            s.sendall(c)


def test_tcp_binary_garbage_bad_utf8_and_long_json_lines(tmp_path, data_dir, caplog):
    """JSON over TCP: what does not decode goes to dead letters with the reason, a line over
    ``max-line-bytes`` is cut, counted and logged, and the listener keeps serving."""
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_of(
        {"tcp": {"address": "127.0.0.1:0", "format": "json", "max-line-bytes": 1000}},
        out,
        errors,
    )
    # lines of garbage, none over the limit and none an accidental JSON object
    noise = garbage(64 * 1024, seed=7).replace(b"{", b"(").replace(b"\n", b" ")
    noise = b"\n".join(noise[i : i + 500] for i in range(0, len(noise), 500))

    async def scenario():
        async with running(pipe, data_dir) as (engine, inp):
            held = socket.create_connection(("127.0.0.1", inp.port), timeout=20)
            try:
                held.sendall(b'{"n": 1}\n')
                await asyncio.to_thread(
                    tcp_send,
                    inp.port,
                    noise,
                    b'\n{"s": "caf\xc3"}\n',
                    b'{"long": "' + b"x" * 5000 + b'"}\n',
                )
                held.sendall(b'{"n": 2}\n')  # a connection open through all that still works
                await asyncio.to_thread(tcp_send, inp.port, b'{"n": 3}\n')
                await async_wait_until(
                    lambda: len(read_ndjson(out)) == 3, what="the three good events"
                )
            finally:
                held.close()
            return engine.snapshot()

    with caplog.at_level(logging.WARNING, logger="pipenb.engine.sockets"):
        snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert sorted(e["n"] for e in read_ndjson(out)) == [1, 2, 3]
    dead = read_ndjson(errors)
    assert dead and all(d["_error"]["message"] for d in dead)
    assert any(d["_raw"] == '{"s": "caf\ufffd"}' for d in dead)
    assert snap["input"]["long_lines"] == 1 and snap["state"] == "running"
    assert any("longer than max-line-bytes (1000)" in r.getMessage() for r in caplog.records)


def test_udp_binary_garbage_and_bad_utf8(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_of({"udp": {"address": "127.0.0.1:0"}}, out)
    datagrams = [garbage(4096, seed=i) for i in range(20)]

    async def scenario():
        async with running(pipe, data_dir) as (engine, inp):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for d in datagrams:
                    s.sendto(d, ("127.0.0.1", inp.port))
                s.sendto(b"caf\xc3 \xff end", ("127.0.0.1", inp.port))
                s.sendto(b"after\n", ("127.0.0.1", inp.port))
            await async_wait_until(lambda: "after" in raws(out), what="the line after")
            return engine.snapshot()

    snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    got = raws(out)
    assert all(isinstance(r, str) for r in got)
    assert got[-2:] == ["caf\ufffd \ufffd end", "after"]
    assert snap["input"]["datagrams"] == 22 and snap["input"]["dropped"] == 0
    assert snap["state"] == "running"


# ------------------------------------------------------------------------------ slowloris


def slowloris(port: int, dribbling: list[int], results: list[float], stop: threading.Event):
    """Open a connection and dribble a request's headers one byte at a time, until the server
    closes it; record after how many seconds it did."""
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        for i, byte in enumerate(head):
            if i == 1:
                dribbling.append(1)
            if stop.is_set():
                return
            try:
                s.send(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([s], [], [], 0.05)  # paces the dribble
            if readable:
                try:
                    if s.recv(1024) == b"":
                        break
                except OSError:
                    break
        results.append(time.monotonic() - started)


def test_http_server_cuts_off_slowloris_clients_and_serves_the_others(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_of(
        {
            "http-server": {
                "address": "127.0.0.1:0",
                "format": "lines",
                "max-body": "4KiB",
                "header-timeout": "3s",
            }
        },
        out,
    )
    stop = threading.Event()
    dribbling: list[int] = []
    closed_after: list[float] = []

    def clients(port: int) -> dict[str, object]:
        slow = [
            threading.Thread(target=slowloris, args=(port, dribbling, closed_after, stop))
            for _ in range(8)
        ]
        for t in slow:
            t.start()
        url = f"http://127.0.0.1:{port}/"
        got: dict[str, object] = {}
        try:
            wait_until(lambda: len(dribbling) == 8, what="8 slow clients dribbling")
            took = []
            for i in range(3):  # served while the slow ones dribble
                started = time.monotonic()
                r = requests.post(url, data=f"hello {i}\n", timeout=20)
                took.append(time.monotonic() - started)
                assert r.status_code == 200 and r.json() == {"accepted": 1}, r.text
            got["took"] = took
            got["slow ones open meanwhile"] = 8 - len(closed_after)
            got["too long"] = requests.post(url, data=b"x" * 5000 + b"\n", timeout=20)
            got["bad utf8"] = requests.post(url, data=b"caf\xc3 \xff end\n", timeout=20)
            for t in slow:
                t.join(30)
            got["alive"] = [t.is_alive() for t in slow]
            got["after"] = requests.post(url, data=b"after\n", timeout=20)
        finally:
            stop.set()
        return got

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            got = await asyncio.to_thread(clients, inp.port)
            await async_wait_until(lambda: "after" in raws(out), what="the last request")
            return got

    got = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert got["slow ones open meanwhile"] == 8, got["took"]
    assert got["alive"] == [False] * 8
    assert len(closed_after) == 8
    assert all(2.5 <= t < 15 for t in closed_after), closed_after  # cut off at header-timeout
    err = got["too long"].json()["error"]  # type: ignore[union-attr]
    assert got["too long"].status_code == 413  # type: ignore[union-attr]
    assert err == {
        "code": "payload_too_large",
        "message": "the body is larger than max-body (4096 bytes)",
    }
    assert got["bad utf8"].json() == {"accepted": 1}  # type: ignore[union-attr]
    assert got["after"].json() == {"accepted": 1}  # type: ignore[union-attr]
    assert raws(out) == [*(f"hello {i}" for i in range(3)), "caf\ufffd \ufffd end", "after"]


def test_http_server_json_that_is_not_utf8_is_a_400_naming_it(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_of({"http-server": {"address": "127.0.0.1:0"}}, out)

    def calls(port: int) -> list[requests.Response]:
        url = f"http://127.0.0.1:{port}/"
        return [
            requests.post(url, data=b'{"s": "caf\xc3"}', timeout=20),
            requests.post(url, data=garbage(2000, seed=3), timeout=20),
            requests.post(url, data=b'{"ok": 1}', timeout=20),
        ]

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            answers = await asyncio.to_thread(calls, inp.port)
            await async_wait_until(lambda: read_ndjson(out), what="the good event")
            return answers

    bad, noise, good = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert bad.status_code == 400 and noise.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_body"
    assert "not valid UTF-8" in bad.json()["error"]["message"]
    assert noise.json()["error"]["message"].startswith("the body is not valid JSON")
    assert good.json() == {"accepted": 1}
    assert read_ndjson(out) == [{"ok": 1}]


def test_the_control_plane_cuts_off_slowloris_clients_and_serves_the_others(tmp_path):
    server = ServerProcess(tmp_path, extra=("--header-timeout", "2")).start()
    stop = threading.Event()
    dribbling: list[int] = []
    closed_after: list[float] = []
    slow = [
        threading.Thread(target=slowloris, args=(server.port, dribbling, closed_after, stop))
        for _ in range(8)
    ]
    try:
        for t in slow:
            t.start()
        wait_until(lambda: len(dribbling) == 8, what="8 slow clients dribbling")
        assert server.request("GET", "/health").status_code == 200  # served meanwhile
        for t in slow:
            t.join(30)
        assert [t.is_alive() for t in slow] == [False] * 8
        assert all(1.5 <= t < 15 for t in closed_after), closed_after  # cut off at the timeout
        assert server.request("GET", "/pipes").status_code == 200
    finally:
        stop.set()
        server.stop()
