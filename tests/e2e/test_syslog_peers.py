"""Syslog as real senders send it: RFC 6587 octet counting, lenient decoding, UDP bursts.

The peers are real programs from Debian's packages, on loopback, each with its own config file
in the test's temp dir: ``rsyslogd`` (relaying what a test writes to its own Unix socket, with
newline and octet-counted framing, over TCP and UDP), util-linux ``logger`` and Python's
``logging.handlers.SysLogHandler``. ``scripts/peers-test.sh`` installs the packages that are
missing; a test is skipped (with the reason) only when its peer is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pipenb.engine.codecs import syslog_decode as syslog
from pipenb.engine.inputs.sockets import kernel_drops

from support.engines import pipe_doc, running
from support.files import read_ndjson
from support.waiting import async_wait_until, wait_until

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
)
NEEDS_RSYSLOG = pytest.mark.skipif(
    RSYSLOGD is None, reason="rsyslogd is not installed (scripts/peers-test.sh installs it)"
)
NEEDS_LOGGER = pytest.mark.skipif(
    shutil.which("logger") is None, reason="util-linux logger (bsdutils) is not installed"
)

# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (  # Python's SysLogHandler over TCP: <PRI>msg NUL, no timestamp, no host
            "<14>hello from python\x00",
            {"facility": "user", "severity": "info", "message": "hello from python"},
        ),
        (
            "<11>myapp[7]: it broke",
            {"facility": "user", "severity": "err", "app": "myapp", "pid": 7,
             "message": "it broke"},
        ),
        (  # Cisco IOS with a sequence number and a host
            "<189>52: router1: *Mar  1 18:46:11.123: %LINK-3-UPDOWN: Interface Gi0/1, up",
            {"facility": "local7", "severity": "notice", "sequence": 52, "host": "router1",
             "timestamp": "Mar  1 18:46:11.123", "app": "%LINK-3-UPDOWN",
             "message": "Interface Gi0/1, up"},
        ),
        (  # Cisco IOS with a time zone, no sequence
            "<187>Mar  1 18:46:11.123 UTC: %SYS-3-CPUHOG: Task ran for 2004 msec",
            {"facility": "local7", "severity": "err", "timestamp": "Mar  1 18:46:11.123 UTC",
             "app": "%SYS-3-CPUHOG", "message": "Task ran for 2004 msec"},
        ),
        (  # FortiGate: key=value pairs, kept whole in message
            '<189>date=2024-05-01 time=12:00:00 devname="FG100E" devid="FG1" type="traffic"',
            {"facility": "local7", "severity": "notice", "timestamp": "2024-05-01 12:00:00",
             "host": "FG100E",
             "message": 'date=2024-05-01 time=12:00:00 devname="FG100E" devid="FG1" type="traffic"'},
        ),
        (  # syslog-ng frac-digits(3): the fraction stays in the timestamp
            "<13>May  1 12:00:00.123 host app[1]: x",
            {"facility": "user", "severity": "notice", "timestamp": "May  1 12:00:00.123",
             "host": "host", "app": "app", "pid": 1, "message": "x"},
        ),
        (
            "<13>May 11 12:00:00.123456 host app: y",
            {"facility": "user", "severity": "notice", "timestamp": "May 11 12:00:00.123456",
             "host": "host", "app": "app", "message": "y"},
        ),
    ],
)  # fmt: skip
def test_lenient_decoding_of_real_world_forms(line, event):
    assert syslog.parse(line) == event


def test_keep_raw_keeps_the_original_line():
    events, rejects = syslog.decode_lines(["<13>May  1 12:00:00 h app: x", "junk"], keep_raw=True)
    assert events[0]["_raw"] == "<13>May  1 12:00:00 h app: x" and events[0]["app"] == "app"
    assert rejects[0]["_raw"] == "junk"


# ------------------------------------------------------------------------------ tcp framing


def octet(msg: str) -> bytes:
    data = msg.encode()
    return str(len(data)).encode() + b" " + data


def test_octet_counted_and_newline_framing_on_one_listener(tmp_path, data_dir):
    """Two connections to one listener: octet-counted frames (multi-line, split at odd places
    across writes) and newline-framed lines; every message arrives whole."""
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc(
        {"tcp": {"address": "127.0.0.1:0", "format": "syslog", "keep-raw": True}},
        out,
        errors=errors,
    )
    framed = [
        f"<134>1 2024-05-01T12:00:00Z h app - - - line {i}\nsecond ünï {i}" for i in range(50)
    ]
    blob = b"".join(octet(m) for m in framed)

    def send(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(0, len(blob), 37):  # frames cut across writes
                s.sendall(blob[i : i + 37])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"<13>May  1 12:00:00 h nl: one\n<13>May  1 12:00:00 h nl: two\n")

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(send, inp.port)
            await async_wait_until(lambda: len(read_ndjson(out)) == 52, what="52 messages")
            return inp.stats()

    stats = asyncio.run(asyncio.wait_for(scenario(), 60))
    events = read_ndjson(out)
    got = sorted(e["message"] for e in events if e["app"] == "app")
    assert got == sorted(f"line {i}\nsecond ünï {i}" for i in range(50))
    assert sorted(e["message"] for e in events if e["app"] == "nl") == ["one", "two"]
    assert {e["_raw"] for e in events if e["app"] == "app"} == set(framed)
    assert stats["octet_counted"] == 1 and stats["framing_errors"] == 0
    assert not errors.exists() or read_ndjson(errors) == []


def test_a_bad_frame_header_is_counted_and_the_rest_read_as_lines(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "format": "lines"}}, out)

    def send(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(octet("first") + b"12x not a frame\nlast\n")

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(send, inp.port)
            await async_wait_until(lambda: len(read_ndjson(out)) == 3, what="3 events")
            return inp.stats()

    stats = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [e["_raw"] for e in read_ndjson(out)] == ["first", "12x not a frame", "last"]
    assert stats["framing_errors"] == 1


@NEEDS_LOGGER
def test_logger_octet_count_over_tcp(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "format": "syslog"}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            for form in ("--rfc5424", "--rfc3164"):
                proc = await asyncio.create_subprocess_exec(
                    "logger", form, "--tcp", "--octet-count", "-n", "127.0.0.1",
                    "-P", str(inp.port), "-t", "oc", "-p", "local3.warning", f"octet {form}",
                )  # fmt: skip
                assert await asyncio.wait_for(proc.wait(), 20) == 0
            await async_wait_until(lambda: len(read_ndjson(out)) == 2, what="both messages")
            return inp.stats()

    stats = asyncio.run(asyncio.wait_for(scenario(), 60))
    events = read_ndjson(out)
    assert sorted(e["message"] for e in events) == ["octet --rfc3164", "octet --rfc5424"]
    assert {(e["facility"], e["severity"], e["app"]) for e in events} == {
        ("local3", "warning", "oc")
    }
    assert stats["octet_counted"] == 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_python_sysloghandler(tmp_path, data_dir, transport):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc({transport: {"address": "127.0.0.1:0", "format": "syslog"}}, out, errors=errors)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):

            def emit():
                kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
                handler = logging.handlers.SysLogHandler(("127.0.0.1", inp.port), socktype=kind)
                handler.ident = "pyapp: "
                logger = logging.getLogger(f"peers-{transport}")
                logger.propagate = False
                logger.addHandler(handler)
                try:
                    for i in range(100):
                        logger.warning("event %d ünï", i)
                    logger.error("multi\nline")
                finally:
                    logger.removeHandler(handler)
                    handler.close()

            await asyncio.to_thread(emit)
            await async_wait_until(lambda: len(read_ndjson(out)) == 101, what="101 records")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    events = read_ndjson(out)
    assert not errors.exists() or read_ndjson(errors) == []
    assert {e["app"] for e in events} == {"pyapp"}
    assert {e["facility"] for e in events} == {"user"}
    got = [e["message"] for e in events if e["severity"] == "warning"]
    assert sorted(got) == sorted(f"event {i} ünï" for i in range(100))
    # a datagram, or a NUL-terminated TCP message, is one message, newline and all
    assert [e["message"] for e in events if e["severity"] == "err"] == ["multi\nline"]


# ------------------------------------------------------------------------------ udp


def test_udp_burst_every_datagram_accounted_for(tmp_path, data_dir):
    """10,000 datagrams as fast as a socket sends them: each is received or counted as dropped
    (by the kernel, or by the full feed)."""
    out = tmp_path / "out.ndjson"
    n = 10_000
    pipe = pipe_doc({"udp": {"address": "127.0.0.1:0", "format": "syslog"}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):

            def burst():
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for i in range(n):
                        s.sendto(f"<13>May  1 12:00:00 h burst: seq={i}".encode(),
                                 ("127.0.0.1", inp.port))  # fmt: skip

            await asyncio.to_thread(burst)

            def accounted():
                st = inp.stats()
                return st["datagrams"] + st["kernel_dropped"] == n

            await async_wait_until(accounted, what="every datagram accounted for")
            await async_wait_until(
                lambda: len(read_ndjson(out)) == inp.datagrams - inp.dropped, what="all written"
            )
            return inp.stats()

    stats = asyncio.run(asyncio.wait_for(scenario(), 120))
    seqs = {int(e["message"].split("=")[1]) for e in read_ndjson(out)}
    assert len(seqs) + stats["dropped"] + stats["kernel_dropped"] == n
    assert stats["receive_buffer"] >= 1 << 20 or stats["kernel_dropped"] >= 0


def test_kernel_drop_counter_reads_proc_net_udp():
    """A socket nobody reads, sent more than its buffer holds: the kernel's count shows."""
    if not os.path.exists("/proc/net/udp"):
        pytest.skip("no /proc/net/udp (not Linux)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        assert kernel_drops(rx) == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(500):
                tx.sendto(b"x" * 500, rx.getsockname())
        assert kernel_drops(rx) > 0


# ------------------------------------------------------------------------------ rsyslog


def start_rsyslog(tmp_path: Path, port: int, protocol: str, framing: str) -> tuple:
    work = tmp_path / "rsyslog"
    work.mkdir()
    sock = work / "log.sock"
    framing_opt = f' TCP_Framing="{framing}"' if protocol == "tcp" else ""
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}" parser.escapeControlCharactersOnReceive="off"'
        ' maxMessageSize="64k")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        f'input(type="imuxsock" Socket="{sock}" RateLimit.Interval="0")\n'
        f'action(type="omfwd" target="127.0.0.1" port="{port}" protocol="{protocol}"'
        f'{framing_opt} template="RSYSLOG_SyslogProtocol23Format")\n'
    )
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "stderr.log", "wb"),  # noqa: SIM115
    )

    def started() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {(work / 'stderr.log').read_text()[-2000:]}")
        return sock.exists()

    try:
        wait_until(started, 30, "rsyslogd's socket", lambda: (work / "stderr.log").read_text())
    except AssertionError:
        proc.kill()
        raise
    return proc, sock


@NEEDS_RSYSLOG
@pytest.mark.parametrize(
    ("protocol", "framing"), [("tcp", "octet-counted"), ("tcp", "traditional"), ("udp", None)]
)
def test_rsyslog_relays_10k_messages(tmp_path, data_dir, protocol, framing):
    """rsyslogd takes 10,000 messages (non-ASCII; multi-line where the framing carries it) on
    its own Unix socket and forwards them as RFC 5424; every one arrives with its fields."""
    n = 10_000
    multiline = framing != "traditional"  # newline framing cannot carry a newline
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = pipe_doc({protocol: {"address": "127.0.0.1:0", "format": "syslog"}}, out, errors=errors)

    def text(i: int) -> str:
        return f"seq={i} grüße ✓" + ("\nsecond line" if multiline else "")

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            proc, sock = await asyncio.to_thread(
                start_rsyslog, tmp_path, inp.port, protocol, framing or ""
            )
            try:

                def send():
                    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                        for i in range(n):
                            s.sendto(f"<165>relay[{i % 100}]: {text(i)}".encode(), str(sock))

                await asyncio.to_thread(send)
                if protocol == "udp":
                    await async_wait_until(
                        lambda: inp.stats()["datagrams"] + inp.stats()["kernel_dropped"] >= n,
                        timeout=60, what="every datagram accounted for",
                    )  # fmt: skip
                else:
                    await async_wait_until(
                        lambda: len(read_ndjson(out)) >= n, timeout=90, what="10k messages"
                    )
                await async_wait_until(
                    lambda: len(read_ndjson(out)) == inp.stats().get("datagrams", n) - inp.stats().get("dropped", 0),
                    what="all written",
                )  # fmt: skip
                return inp.stats()
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 20)

    stats = asyncio.run(asyncio.wait_for(scenario(), 180))
    events = read_ndjson(out)
    assert not errors.exists() or read_ndjson(errors) == []
    seqs = sorted(int(e["message"].split()[0].split("=")[1]) for e in events)
    assert len(set(seqs)) == len(seqs)
    for e in events[:100]:
        i = int(e["message"].split()[0].split("=")[1])
        assert e["message"].lstrip(" ") == text(i)  # rsyslog's %msg% keeps the space after ":"
        assert (e["facility"], e["severity"], e["app"], e["pid"]) == (
            "local4",
            "notice",
            "relay",
            i % 100,
        )
    if protocol == "tcp":
        assert seqs == list(range(n))
        assert stats["octet_counted"] == (1 if framing == "octet-counted" else 0)
    else:
        assert len(seqs) + stats["dropped"] + stats["kernel_dropped"] == n
