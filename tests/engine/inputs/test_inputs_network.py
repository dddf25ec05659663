"""Network inputs ``http-server``, ``http-poll``, ``tcp`` and ``udp``, and syslog decoding.

Every test runs the real engine on real sockets bound to 127.0.0.1 (port 0: a free port, read
back from the input's ``port``) and synchronises by polling conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.codecs import syslog_decode as syslog

from support.engines import FakeServer, pipe_doc, running
from support.files import read_ndjson
from support.pipes import problems_of
from support.waiting import async_wait_until

# ------------------------------------------------------------------------------ helpers


def in_threads(fn, n: int):
    """Run ``fn(i)`` for i in range(n), each in its own thread; awaitable results in order."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(n)
    futs = [loop.run_in_executor(pool, fn, i) for i in range(n)]
    pool.shutdown(wait=False)
    return asyncio.gather(*futs)


def post(port: int, body: bytes | str, *, path: str = "/", headers: dict | None = None):
    return requests.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, timeout=30)


# ------------------------------------------------------------------------------ syslog decoding

RFC5424_EXAMPLES = [
    (
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        "\ufeff'su root' failed for lonvick on /dev/pts/8",
        {
            "facility": "auth",
            "severity": "crit",
            "timestamp": "2003-10-11T22:14:15.003Z",
            "host": "mymachine.example.com",
            "app": "su",
            "msgid": "ID47",
            "message": "'su root' failed for lonvick on /dev/pts/8",
        },
    ),
    (
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
        {
            "facility": "local4",
            "severity": "notice",
            "timestamp": "2003-08-24T05:14:15.000003-07:00",
            "host": "192.0.2.1",
            "app": "myproc",
            "pid": 8710,
            "message": "%% It's time",
        },
    ),
    (
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 "
        'iut="3" eventSource="Application"][examplePriority@32473 class="high"] An event',
        {
            "facility": "local4",
            "severity": "notice",
            "timestamp": "2003-10-11T22:14:15.003Z",
            "host": "mymachine.example.com",
            "app": "evntslog",
            "msgid": "ID47",
            "structured_data": {
                "exampleSDID@32473": {"iut": "3", "eventSource": "Application"},
                "examplePriority@32473": {"class": "high"},
            },
            "message": "An event",
        },
    ),
    (
        r'<11>1 - - - app-1 - [x@1 q="a \"quoted\" \] and \\ here"]',
        {
            "facility": "user",
            "severity": "err",
            "pid": "app-1",
            "structured_data": {"x@1": {"q": 'a "quoted" ] and \\ here'}},
        },
    ),
]

RFC3164_EXAMPLES = [
    (
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        {
            "facility": "auth",
            "severity": "crit",
            "timestamp": "Oct 11 22:14:15",
            "host": "mymachine",
            "app": "su",
            "message": "'su root' failed for lonvick on /dev/pts/8",
        },
    ),
    (
        "<13>Feb  5 17:32:18 10.0.0.99 myapp[123]: Use the BFG!",
        {
            "facility": "user",
            "severity": "notice",
            "timestamp": "Feb  5 17:32:18",
            "host": "10.0.0.99",
            "app": "myapp",
            "pid": 123,
            "message": "Use the BFG!",
        },
    ),
    (  # no HOSTNAME, as local senders often write
        "<87>Feb  5 17:32:18 CRON[4242]: (root) CMD (run-parts /etc/cron.hourly)",
        {
            "facility": "authpriv",
            "severity": "debug",
            "timestamp": "Feb  5 17:32:18",
            "app": "CRON",
            "pid": 4242,
            "message": "(root) CMD (run-parts /etc/cron.hourly)",
        },
    ),
    (
        "<191>2024-05-01T12:00:00+02:00 web-1 nginx: GET /",
        {
            "facility": "local7",
            "severity": "debug",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "host": "web-1",
            "app": "nginx",
            "message": "GET /",
        },
    ),
]


@pytest.mark.parametrize(("line", "event"), RFC5424_EXAMPLES + RFC3164_EXAMPLES)
def test_syslog_decodes_rfc5424_and_rfc3164(line, event):
    assert syslog.parse(line) == event


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("plain text", "not syslog: a message starts with <PRI>"),
        ("<200>1 2024-01-01T00:00:00Z h a - - - m", "priority <200> is out of range"),
        ('<13>1 2024-01-01T00:00:00Z h a - - [x k="v] m', "unterminated PARAM-VALUE"),
        ("<13>1 2024-01-01T00:00:00Z h a - - [x k=v] m", 'expected PARAM="VALUE"'),
    ],
)
def test_syslog_rejects_what_it_cannot_read_with_a_reason(line, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        syslog.parse(line)


# ------------------------------------------------------------------------------ tcp


def tcp_send(port: int, *chunks: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for c in chunks:
            s.sendall(c)


def test_tcp_syslog_decodes_both_forms_and_dead_letters_the_rest(tmp_path, data_dir):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc(
        {"tcp": {"address": "127.0.0.1:0", "format": "syslog", "metadata": True}},
        out,
        errors=errors,
    )
    lines = [line for line, _ in RFC5424_EXAMPLES + RFC3164_EXAMPLES]

    async def scenario():
        async with running(pipe, data_dir) as (engine, inp):
            payload = "\r\n".join(lines[:3]).encode() + b"\r\n"
            await asyncio.to_thread(tcp_send, inp.port, payload, b"\xff\xfe\x00garbage\n")
            # a new connection after the garbage is served as well; the last line has no "\n"
            await asyncio.to_thread(tcp_send, inp.port, "\n".join(lines[3:]).encode())
            await async_wait_until(
                lambda: len(read_ndjson(out)) == len(lines) and read_ndjson(errors),
                what="every line",
            )
            return engine.snapshot()

    snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    events = read_ndjson(out)
    assert all(e.pop("_peer").startswith("127.0.0.1:") for e in events)
    expected = [e for _, e in RFC5424_EXAMPLES + RFC3164_EXAMPLES]
    assert sorted(events, key=orjson.dumps) == sorted(expected, key=orjson.dumps)
    (dead,) = read_ndjson(errors)
    assert dead["_raw"] == "\ufffd\ufffd\x00garbage"
    assert "not syslog" in dead["_error"]["message"]
    assert snap["input"]["errors"] == 1
    assert snap["state"] == "running"


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger is not installed")
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_syslog_from_the_real_logger_command(tmp_path, data_dir, transport):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({transport: {"address": "127.0.0.1:0", "format": "syslog"}}, out)
    flag = "--tcp" if transport == "tcp" else "--udp"

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            for form in ("--rfc5424", "--rfc3164"):
                proc = await asyncio.create_subprocess_exec(
                    "logger", form, flag, "-n", "127.0.0.1", "-P", str(inp.port),
                    "-t", "pipenb-test", "--id=4242", "-p", "local3.warning", f"hello {form}",
                )  # fmt: skip
                assert await asyncio.wait_for(proc.wait(), 20) == 0
            await async_wait_until(lambda: len(read_ndjson(out)) == 2, what="both messages")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    by_message = {e["message"]: e for e in read_ndjson(out)}
    new, old = by_message["hello --rfc5424"], by_message["hello --rfc3164"]
    for e in (new, old):
        assert (e["facility"], e["severity"], e["app"], e["pid"]) == (
            "local3",
            "warning",
            "pipenb-test",
            4242,
        )
        assert e["host"]
    assert new["timestamp"][:2] == "20" and "T" in new["timestamp"]
    assert "timeQuality" in new["structured_data"]
    assert old["timestamp"][:3].isalpha() and old["timestamp"][-3] == ":"


def test_tcp_lines_survive_garbage_long_lines_and_bad_utf8(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "max-line-bytes": 1000}}, out)
    garbage = bytes(range(256)).replace(b"\n", b"") * 20  # 5100 bytes, no newline

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(tcp_send, inp.port, b"first\n", garbage, b"\nok \xc3\n")
            await asyncio.to_thread(tcp_send, inp.port, b"after\r\n")
            await async_wait_until(
                lambda: any(e["_raw"] == "after" for e in read_ndjson(out)), what="the last line"
            )
            return inp.long_lines

    long_lines = asyncio.run(asyncio.wait_for(scenario(), 60))
    raws = [e["_raw"] for e in read_ndjson(out)]
    assert raws[0] == "first" and raws[-2:] == ["ok \ufffd", "after"]
    pieces = raws[1:-2]  # one line too long, cut into pieces, each bad byte replaced
    assert [len(p) for p in pieces] == [1000] * 5 + [100]
    assert (
        "".join(pieces).replace("\ufffd", "").encode() == bytes(range(128)).replace(b"\n", b"") * 20
    )
    assert long_lines == 1


def test_tcp_json_lines_with_bad_ones_dead_lettered(tmp_path, data_dir):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "format": "json"}}, out, errors=errors)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(tcp_send, inp.port, b'{"a": 1}\n[1]\n\x00\x01\x02\n{"b": 2}\n')
            await async_wait_until(
                lambda: len(read_ndjson(out)) == 2 and len(read_ndjson(errors)) == 2,
                what="events and rejects",
            )

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert read_ndjson(out) == [{"a": 1}, {"b": 2}]
    assert [d["_raw"] for d in read_ndjson(errors)] == ["[1]", "\x00\x01\x02"]


def test_tcp_holds_a_fast_sender_back_while_the_output_is_blocked(tmp_path, data_dir):
    """Memory stays bounded: a blocked output stops the input reading, so the sender blocks."""
    with FakeServer() as target:
        target.gate.clear()  # the output's first request hangs until the gate opens
        pipe = pipe_doc(
            {"tcp": {"address": "127.0.0.1:0", "buffer": "64KiB"}},
            tmp_path / "unused",
            output={"http-post": {"url": target.url, "batch": {"size": 100, "timeout": "10ms"}}},
        )
        sent = {"bytes": 0}
        line = b"x" * 99 + b"\n"

        def flood(port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.settimeout(0.5)
                try:
                    for _ in range(200_000):  # 20 MB unless held back
                        s.sendall(line * 100)
                        sent["bytes"] += 10_000
                except TimeoutError:
                    return "held back"
            return "sent all"

        async def scenario():
            async with running(pipe, data_dir) as (engine, inp):
                result = await asyncio.to_thread(flood, inp.port)
                held = sent["bytes"]
                events_in = engine.metrics.input_events
                target.gate.set()
                await async_wait_until(
                    lambda: engine.metrics.output.events >= events_in, what="the backlog"
                )
                return result, held, events_in

        result, held, events_in = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert result == "held back"
    # what the pipe took in is a few batches, not the 20 MB the sender had to send
    assert events_in * 100 < 8 << 20
    assert held < 16 << 20


# ------------------------------------------------------------------------------ udp


def udp_send(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def test_udp_datagrams_of_lines_syslog_and_garbage(tmp_path, data_dir):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc(
        {"udp": {"address": "127.0.0.1:0", "format": "syslog", "metadata": True}},
        out,
        errors=errors,
    )

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(
                udp_send,
                inp.port,
                RFC5424_EXAMPLES[0][0].encode(),  # one message, no newline
                b"\x8f\xff\x00\x13binary",
                (RFC3164_EXAMPLES[0][0] + "\n" + RFC3164_EXAMPLES[1][0] + "\n").encode(),
            )
            await async_wait_until(
                lambda: len(read_ndjson(out)) == 3 and read_ndjson(errors), what="3 events"
            )
            return inp.datagrams, inp.dropped

    datagrams, dropped = asyncio.run(asyncio.wait_for(scenario(), 60))
    events = read_ndjson(out)
    assert {e["_peer"].split(":")[0] for e in events} == {"127.0.0.1"}
    assert [e["app"] for e in events] == ["su", "su", "myapp"]
    (dead,) = read_ndjson(errors)
    assert dead["_raw"] == "\ufffd\ufffd\x00\x13binary" and "_peer" in dead
    assert (datagrams, dropped) == (3, 0)


def test_udp_lines_format(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"udp": {"address": "127.0.0.1:0"}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(udp_send, inp.port, b"a\nb\n", b"c", b"\xff")
            await async_wait_until(lambda: len(read_ndjson(out)) == 4, what="4 lines")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert sorted(e["_raw"] for e in read_ndjson(out)) == ["a", "b", "c", "\ufffd"]


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        ({"tcp": {"address": "localhost"}}, "expected an address as host:port"),
        ({"udp": {"address": "1.2.3.4:99999"}}, "expected an address as host:port"),
        ({"tcp": {"address": "::1:80"}}, "write an IPv6 address in brackets, as [::1]:80"),
        ({"tcp": {"address": ":5140", "format": "xml"}}, "tcp.format"),
        ({"http-server": {"path": "events"}}, "a path starts with '/'"),
        ({"http-poll": {"url": "example.com"}}, "url must start with http://"),
        ({"http-poll": {"url": "http://x", "body": "q"}}, "a body is sent with method: POST"),
    ],
)
def test_network_input_validation(inp, message):
    doc = orjson.dumps({"name": "t", "input": inp, "output": {"discard": {}}}).decode()
    problems = problems_of(doc)
    assert any(message in p.message for p in problems), problems


# ------------------------------------------------------------------------------ http-server


def test_http_server_loses_nothing_under_concurrent_clients(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "path": "/ingest"}}, out)
    threads, per_thread = 20, 50

    def client(port: int, t: int) -> list[str]:
        acked: list[str] = []
        with requests.Session() as s:
            for i in range(per_thread):
                ids = [f"{t}-{i}-{k}" for k in range(2)]
                body = orjson.dumps([{"id": x, "t": t} for x in ids])
                while True:
                    r = s.post(f"http://127.0.0.1:{port}/ingest", data=body, timeout=30)
                    if r.status_code != 503:
                        break
                    threading.Event().wait(0.01)  # poll: the pipe asked us to come back
                assert r.status_code == 200, r.text
                assert r.json() == {"accepted": 2}
                acked.extend(ids)
        return acked

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            port = inp.port
            acked = [x for ids in await in_threads(lambda t: client(port, t), threads) for x in ids]
            await async_wait_until(
                lambda: len(read_ndjson(out)) >= len(acked), what="every acknowledged event"
            )
            return acked, inp.accepted

    acked, accepted = asyncio.run(asyncio.wait_for(scenario(), 60))
    written = [e["id"] for e in read_ndjson(out)]
    assert len(acked) == threads * per_thread * 2
    assert sorted(written) == sorted(acked)  # every acknowledged event, once
    assert accepted == threads * per_thread


def test_http_server_refuses_what_it_cannot_take(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc(
        {
            "http-server": {
                "address": "127.0.0.1:0",
                "token": "s3cret",
                "max-body": "1KiB",
                "metadata": True,
            }
        },
        out,
    )
    auth = {"Authorization": "Bearer s3cret"}

    def calls(port):
        r = {}
        r["no token"] = post(port, b'{"a": 1}')
        r["wrong token"] = post(port, b'{"a": 1}', headers={"Authorization": "Bearer nope"})
        r["too big"] = post(port, orjson.dumps({"x": "y" * 2000}), headers=auth)
        r["far too big"] = post(port, b"x" * (4 << 20), headers=auth)
        r["bad json"] = post(port, b'{"a": ', headers=auth)
        r["array of non-objects"] = post(port, b'[{"a": 1}, 2]', headers=auth)
        r["scalar"] = post(port, b'"just a string"', headers=auth)
        r["wrong path"] = post(port, b"{}", path="/other", headers=auth)
        r["GET"] = requests.get(f"http://127.0.0.1:{port}/", headers=auth, timeout=30)
        r["empty"] = post(port, b"", headers=auth)
        r["ok"] = post(port, b'[{"a": 1}, {"a": 2}]', headers=auth)
        r["gzip"] = post(
            port, gzip.compress(b'{"a": 3}'), headers={**auth, "Content-Encoding": "gzip"}
        )
        r["gzip bomb"] = post(
            port,
            gzip.compress(b'{"a": "' + b"0" * 100_000 + b'"}'),
            headers={**auth, "Content-Encoding": "gzip"},
        )
        return r

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            r = await asyncio.to_thread(calls, inp.port)
            await async_wait_until(lambda: len(read_ndjson(out)) == 3, what="3 events")
            return r, inp.pending

    r, pending = asyncio.run(asyncio.wait_for(scenario(), 60))
    status = {k: v.status_code for k, v in r.items()}
    assert status == {
        "no token": 401,
        "wrong token": 401,
        "too big": 413,
        "far too big": 413,
        "bad json": 400,
        "array of non-objects": 400,
        "scalar": 400,
        "wrong path": 404,
        "GET": 405,
        "empty": 200,
        "ok": 200,
        "gzip": 200,
        "gzip bomb": 413,
    }
    assert r["no token"].headers["WWW-Authenticate"].startswith("Bearer")
    assert r["no token"].json()["error"]["code"] == "unauthorized"
    assert r["too big"].json()["error"] == {
        "code": "payload_too_large",
        "message": "the body is larger than max-body (1024 bytes)",
    }
    assert r["bad json"].json()["error"]["message"].startswith("the body is not valid JSON")
    assert r["array of non-objects"].json()["error"]["message"] == (
        "element 1 of the array is not a JSON object: 2"
    )
    assert r["wrong path"].json()["error"]["message"] == "events are accepted at /"
    assert r["empty"].json() == {"accepted": 0}
    assert r["ok"].json() == {"accepted": 2}
    events = read_ndjson(out)
    assert [e["a"] for e in events] == [1, 2, 3]
    assert all(e["_peer"].startswith("127.0.0.1:") for e in events)
    assert pending == 0  # every slot given back


@pytest.mark.parametrize(
    ("fmt", "body", "expected", "status"),
    [
        ("ndjson", b'{"a": 1}\r\n\n{"a": 2}\n', [{"a": 1}, {"a": 2}], 200),
        ("ndjson", b'{"a": 1}\nnot json\n', [], 400),
        ("lines", b"one\ntwo \xff\n", [{"_raw": "one"}, {"_raw": "two \ufffd"}], 200),
    ],
)
def test_http_server_ndjson_and_lines(tmp_path, data_dir, fmt, body, expected, status):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "format": fmt}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            r = await asyncio.to_thread(post, inp.port, body)
            if expected:
                await async_wait_until(lambda: read_ndjson(out), what="the events")
            return r

    r = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert r.status_code == status
    if status == 400:
        assert (
            "1 line(s) are not JSON objects; the first, 'not json'" in r.json()["error"]["message"]
        )
    assert read_ndjson(out) == expected


def test_http_server_answers_503_with_bounded_memory_while_the_output_blocks(tmp_path, data_dir):
    """Requests wait for the engine up to ``max-pending``; beyond it they get 503 at once."""
    with FakeServer() as target:
        target.gate.clear()  # the http-post output hangs until the gate opens
        pipe = pipe_doc(
            {"http-server": {"address": "127.0.0.1:0", "max-pending": 4}},
            tmp_path / "unused",
            output={"http-post": {"url": target.url, "batch": {"size": 1, "timeout": "10ms"}}},
        )
        clients = 40
        results: dict[int, requests.Response] = {}

        def client(port: int, i: int) -> None:
            results[i] = requests.post(
                f"http://127.0.0.1:{port}/", data=orjson.dumps({"i": i}), timeout=30
            )

        async def scenario():
            async with running(pipe, data_dir) as (engine, inp):
                port = inp.port
                done = in_threads(lambda i: client(port, i), clients)
                most = 0

                def refused():
                    nonlocal most
                    most = max(most, inp.pending)
                    return sum(r.status_code == 503 for r in results.values()) >= 10

                await async_wait_until(refused, what="503s while the output blocks")
                held = engine._queue.qsize()
                target.gate.set()
                await done
                acked = {i for i, r in results.items() if r.status_code == 200}
                await async_wait_until(
                    lambda: len(target.requests) >= len(acked), what="acknowledged events"
                )
                return most, held, acked, inp.busy

        most, held, acked, busy = asyncio.run(asyncio.wait_for(scenario(), 60))
        delivered = {orjson.loads(body)[0]["i"] for *_, body in target.requests}
    refused = {i for i, r in results.items() if r.status_code == 503}
    assert refused and acked and refused | acked == set(range(clients))
    assert all(results[i].headers["Retry-After"] == "1" for i in refused)
    assert results[min(refused)].json()["error"]["code"] == "backed_up"
    assert busy == len(refused)
    assert most <= 4  # never more than max-pending requests held
    assert held <= 4  # and never more than the engine's queue of batches
    assert delivered == acked  # everything acknowledged arrived; nothing refused did


def test_http_server_stops_cleanly(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0"}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (engine, inp):
            port = inp.port
            assert (await asyncio.to_thread(post, port, b'{"a": 1}')).status_code == 200
        assert engine.state == "stopped"
        with pytest.raises(requests.ConnectionError):
            await asyncio.to_thread(post, port, b'{"a": 2}')
        return port

    port = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert read_ndjson(out) == [{"a": 1}]
    with socket.socket() as s:  # nothing listens there any more: a restart can bind it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_http_server_closed_generator_answers_503_to_what_it_did_not_confirm():
    pipe = pipenb.Pipe.from_yaml(
        "name: t\ninput: {http-server: {address: '127.0.0.1:0'}}\noutput: {discard: {}}\n"
    )
    spec = pipe.spec.input
    inp = spec.component.factory(spec.options, RunContext(pipe="t"))

    async def scenario():
        agen = inp.batches()
        first = asyncio.ensure_future(agen.__anext__())
        await async_wait_until(lambda: inp.port, what="the listener")
        a = asyncio.ensure_future(asyncio.to_thread(post, inp.port, b'{"n": 1}'))
        batch = await asyncio.wait_for(first, 20)  # handed out, never confirmed by a resume
        b = asyncio.ensure_future(asyncio.to_thread(post, inp.port, b'{"n": 2}'))
        await async_wait_until(lambda: inp.pending == 2, what="the second request to wait")
        await agen.aclose()
        await inp.close()
        with pytest.raises(requests.ConnectionError):
            await asyncio.to_thread(post, inp.port, b"{}")
        return batch, await a, await b

    batch, a, b = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert batch.events == [{"n": 1}]
    for r in (a, b):
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "stopping"
    assert inp.pending == 0


def test_http_server_port_in_use_fails_the_pipe(tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        pipe = pipe_doc({"http-server": {"address": f"127.0.0.1:{taken}"}}, tmp_path / "o")
        with pytest.raises(pipenb.PipeRuntimeError, match=r"input http-server: .*in use"):
            pipe.run(data_dir=data_dir)


# ------------------------------------------------------------------------------ http-poll


def test_http_poll_json_object_array_ndjson_and_lines(tmp_path, data_dir):
    answers = {
        "json": (b'{"a": 1}', [{"a": 1}]),
        "array": (b'[{"a": 1}, 2, "x", null]', [{"a": 1}, {"value": 2}, {"value": "x"}, {}]),
        "ndjson": (b'{"a": 1}\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),
        "lines": (b"l1\r\nl2", [{"_raw": "l1"}, {"_raw": "l2"}]),
    }
    answers["array"][1][3] = {"value": None}
    for fmt, (body, expected) in answers.items():
        out = tmp_path / f"{fmt}.ndjson"
        with FakeServer(default=(200, body, {})) as srv:
            inp = {
                "http-poll": {
                    "url": srv.url + "/data",
                    "format": "json" if fmt == "array" else fmt,
                    "interval": "20ms",
                }
            }

            async def scenario(out=out, inp=inp, expected=expected):
                async with running(pipe_doc(inp, out), data_dir, listening=False):
                    await async_wait_until(
                        lambda: len(read_ndjson(out)) >= 2 * len(expected), what="two polls"
                    )

            asyncio.run(asyncio.wait_for(scenario(), 60))
        assert read_ndjson(out)[: 2 * len(expected)] == expected * 2, fmt


def test_http_poll_post_with_a_json_body_and_headers(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    with FakeServer(default=(200, b'{"ok": true}', {})) as srv:
        inp = {
            "http-poll": {
                "url": srv.url + "/q",
                "method": "POST",
                "body": {"query": "up"},
                "headers": {"Authorization": "Bearer t"},
            }
        }

        async def scenario():
            async with running(pipe_doc(inp, out), data_dir, listening=False):
                await async_wait_until(lambda: read_ndjson(out), what="the first poll")

        asyncio.run(asyncio.wait_for(scenario(), 60))
        method, path, headers, body = srv.requests[0]
    assert (method, path, orjson.loads(body)) == ("POST", "/q", {"query": "up"})
    assert headers["Authorization"] == "Bearer t"
    assert headers["Content-Type"] == "application/json"
    assert read_ndjson(out) == [{"ok": True}]  # interval 60s: one poll so far


def test_http_poll_errors_are_dead_lettered_and_polling_goes_on(tmp_path, data_dir):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    answers = [(500, b"database down", {}), (404, b"", {}), (200, b"{not json", {})]
    with FakeServer(default=(200, b'{"fine": 1}', {}), answers=answers) as srv:
        pipe = pipe_doc(
            {"http-poll": {"url": srv.url + "/x", "interval": "20ms"}}, out, errors=errors
        )

        async def scenario():
            async with running(pipe, data_dir, listening=False) as (engine, _):
                await async_wait_until(lambda: read_ndjson(out), what="a good poll")
                return engine.snapshot()

        snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    dead = read_ndjson(errors)
    messages = [d["_error"]["message"] for d in dead]
    assert messages[0] == f"GET {srv.url}/x: HTTP 500 Internal Server Error: database down"
    assert messages[1] == f"GET {srv.url}/x: HTTP 404 Not Found: "
    assert messages[2].startswith("the answer is not valid JSON")
    assert read_ndjson(out)[0] == {"fine": 1}
    assert snap["input"]["errors"] == 3


def test_http_poll_connection_refused_keeps_polling(tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = s.getsockname()[1]
        errors = tmp_path / "errors.ndjson"
        url = f"http://127.0.0.1:{port}/"
        pipe = pipe_doc(
            {"http-poll": {"url": url, "interval": "10ms", "timeout": "2s"}},
            tmp_path / "out.ndjson",
            errors=errors,
        )

        async def scenario():
            async with running(pipe, data_dir, listening=False) as (_, inp):
                await async_wait_until(lambda: len(read_ndjson(errors)) >= 3, what="3 failures")
                return inp.polls

        polls = asyncio.run(asyncio.wait_for(scenario(), 60))
    dead = read_ndjson(errors)
    assert dead[0]["_error"]["message"] == f"GET {url}: request failed: connection refused"
    assert dead[0]["_raw"] == f"GET {url}"
    assert polls >= 3


def test_http_poll_preview_polls_once(tmp_path):
    with FakeServer(default=(200, b'[{"a": 1}, {"a": 2}]', {})) as srv:
        pipe = pipenb.Pipe.from_yaml(
            f"name: p\ninput: {{http-poll: {{url: '{srv.url}'}}}}\noutput: {{discard: {{}}}}\n"
        )
        result = pipe.preview()
        assert len(srv.requests) == 1
    assert result.events == [{"a": 1}, {"a": 2}]


def test_input_counters_reach_the_engine_snapshot(tmp_path, data_dir):
    """The udp input's own counters (datagrams, dropped) are part of the pipe's metrics."""
    pipe = pipenb.Pipe.from_yaml(
        "name: udp-stats\ninput: {udp: {address: '127.0.0.1:0'}}\n"
        f"output: {{file: {{path: '{tmp_path / 'out.ndjson'}', batch: {{timeout: 20ms}}}}}}\n"
    )

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.parts.input.port, what="the udp port")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(3):
            sock.sendto(f"line {i}\n".encode(), ("127.0.0.1", engine.parts.input.port))
        sock.close()
        await async_wait_until(
            lambda: engine.snapshot()["input"].get("datagrams") == 3, what="3 datagrams counted"
        )
        snap = engine.snapshot()["input"]
        engine.stop()
        await task
        return snap

    snap = asyncio.run(scenario())
    assert snap["datagrams"] == 3 and snap["dropped"] == 0
