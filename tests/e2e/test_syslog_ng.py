"""syslog-ng (Debian's ``syslog-ng-core``, unpacked by ``scripts/peers-test.sh`` because the
package conflicts with rsyslog) as a sender into pipenb and as a receiver of the ``syslog``
output, with its own config file, on loopback.

Sending: 10,000 messages each, written to syslog-ng's own Unix socket and relayed with its
``syslog()`` driver (RFC 5424, octet-counted, over TCP and TLS) and its ``network()`` driver
(RFC 3164 with ``frac-digits(3)``, newline-framed TCP, and UDP).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import orjson
import pytest

import pipenb

from support.engines import pipe_doc, running
from support.files import read_ndjson
from support.processes import free_port
from support.tlskit import trustme_certs as certs
from support.waiting import async_wait_until, wait_until

SNG = (
    Path(os.environ.get("PIPENB_PEERS_DIR", Path.home() / ".cache" / "pipenb-peers")) / "syslog-ng"
)
BINARY = SNG / "usr" / "sbin" / "syslog-ng"

pytestmark = pytest.mark.skipif(
    not BINARY.exists(),
    reason=f"syslog-ng is not unpacked at {SNG} (scripts/peers-test.sh does it with apt-get)",
)


class SyslogNg:
    """One syslog-ng process with ``body`` as its config (sources, destinations, log paths)."""

    def __init__(self, work: Path, body: str):
        self.work = work
        work.mkdir(exist_ok=True)
        conf = work / "syslog-ng.conf"
        conf.write_text(
            "@version: 3.38\n"
            "options { keep-hostname(yes); chain-hostnames(no); frac-digits(3);"
            " log-msg-size(65536); };\n" + body
        )
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{SNG}/usr/lib/syslog-ng:{SNG}/usr/lib/x86_64-linux-gnu"
        self.stderr = work / "stderr.log"
        self.proc = subprocess.Popen(
            [str(BINARY), "-F", "-f", str(conf), f"--module-path={SNG}/usr/lib/syslog-ng/3.38",
             "-R", str(work / "persist"), "-p", str(work / "pid"), "-c", str(work / "ctl"),
             "--no-caps"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.stderr.open("wb"),
        )  # fmt: skip

    def wait_for(self, ready, what: str) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"syslog-ng exited: {self.stderr.read_text()[-2000:]}")
            return bool(ready())

        try:
            wait_until(up, 30, f"syslog-ng: {what}", lambda: self.stderr.read_text()[-2000:], 0.05)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def send_unix(path: Path, messages: list[str]) -> None:
    """Blocking datagrams to a Unix socket: a full queue makes the sender wait, not lose."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for m in messages:
            s.sendto(m.encode(), str(path))


@pytest.mark.parametrize("driver", ["syslog-tcp", "syslog-tls", "network-tcp", "network-udp"])
def test_syslog_ng_sends_10k_messages(tmp_path, data_dir, driver):
    n = 10_000
    multiline = driver != "network-tcp"  # newline framing cannot carry a newline
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    listener: dict = {"address": "127.0.0.1:0", "format": "syslog"}
    tls = ""
    if driver == "syslog-tls":
        chain, ca_file = certs(tmp_path)
        listener["tls"] = {"cert": chain}
        tls = f' tls(ca-file("{ca_file}") peer-verify(required-trusted))'
    proto = "udp" if driver == "network-udp" else "tcp"
    pipe = pipe_doc({proto: listener}, out, errors=errors)
    sock = tmp_path / "sng" / "log.sock"

    def text(i: int) -> str:
        return f"seq={i} grüße ✓" + ("\nsecond line" if multiline else "")

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            kind, transport = driver.split("-")
            dest = (
                f'{kind}("127.0.0.1" port({inp.port}) transport({transport}){tls})'
                if kind == "syslog"
                else f'network("127.0.0.1" port({inp.port}) transport({transport}))'
            )
            sng = SyslogNg(
                tmp_path / "sng",
                f'source s {{ unix-dgram("{sock}"); }};\n'
                f"destination d {{ {dest}; }};\n"
                "log { source(s); destination(d); };\n",
            )
            try:
                await asyncio.to_thread(sng.wait_for, sock.exists, "socket")
                msgs = [f"<165>relay[{i % 100}]: {text(i)}" for i in range(n)]
                await asyncio.to_thread(send_unix, sock, msgs)
                if proto == "udp":
                    await async_wait_until(
                        lambda: inp.stats()["datagrams"] + inp.stats()["kernel_dropped"] >= n,
                        timeout=60, what="every datagram accounted for",
                    )  # fmt: skip
                    await async_wait_until(
                        lambda: len(read_ndjson(out)) == inp.datagrams - inp.dropped,
                        what="all written",
                    )
                else:
                    await async_wait_until(
                        lambda: len(read_ndjson(out)) >= n, timeout=90, what="10k messages"
                    )
                return inp.stats()
            finally:
                await asyncio.to_thread(sng.stop)

    stats = asyncio.run(asyncio.wait_for(scenario(), 180))
    events = read_ndjson(out)
    assert not errors.exists() or read_ndjson(errors) == []
    seqs = sorted(int(e["message"].split()[0].split("=")[1]) for e in events)
    for e in events:
        i = int(e["message"].split()[0].split("=")[1])
        assert e["message"] == text(i)
        assert (e["facility"], e["severity"], e["app"], e["pid"]) == (
            "local4", "notice", "relay", i % 100,
        )  # fmt: skip
    if driver.startswith("network"):  # RFC 3164 with frac-digits(3): the fraction is kept
        assert all(e["timestamp"][-4] == "." for e in events), events[0]["timestamp"]
    if proto == "tcp":
        assert seqs == list(range(n))
        assert stats["octet_counted"] == (1 if driver.startswith("syslog") else 0)
    else:
        assert len(set(seqs)) == len(seqs)
        assert len(seqs) + stats["dropped"] + stats["kernel_dropped"] == n


@pytest.mark.parametrize("fmt", ["rfc5424", "rfc3164"])
def test_syslog_output_into_syslog_ng(tmp_path, data_dir, fmt):
    """syslog-ng's ``syslog()`` source parses what the output sends; its macros show the fields."""
    port = free_port()
    got = tmp_path / "got.txt"
    if fmt == "rfc5424":
        source = f'syslog(ip("127.0.0.1") port({port}) transport(tcp))'
    else:
        source = f'network(ip("127.0.0.1") port({port}) transport(tcp))'
    sng = SyslogNg(
        tmp_path / "sng",
        f"source s {{ {source}; }};\n"
        f'destination d {{ file("{got}" template("$FACILITY|$LEVEL|$HOST|$PROGRAM|$PID|'
        '$MSGID|${.SDATA.meta@1.k}|$MSG\\n") template-escape(no)); };\n'
        "log { source(s); destination(d); };\n",
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    n = 1000
    events = [
        {"facility": "local4", "severity": "warning", "timestamp": "2024-05-01T12:00:00.123Z",
         "host": "web-1", "app": "nginx", "pid": 4242, "msgid": "REQ",
         "structured_data": {"meta@1": {"k": "v"}}, "message": f"grüße ✓ #{i}"}
        for i in range(n)
    ]  # fmt: skip
    framing = "octet-counted" if fmt == "rfc5424" else "newline"
    doc = {
        "name": "sender",
        "input": {"echo": {"events": events}},
        "output": {"syslog": {"address": f"127.0.0.1:{port}", "format": fmt,
                              "framing": framing}},
    }  # fmt: skip
    try:
        sng.wait_for(listening, "listener")

        async def send():
            pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
            await pipe.engine(data_dir=data_dir).run()
            await async_wait_until(
                lambda: got.exists() and got.read_text().count("\n") >= n, what="1000 lines"
            )

        asyncio.run(asyncio.wait_for(send(), 60))
    finally:
        sng.stop()
    lines = got.read_text().splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        if fmt == "rfc5424":
            assert line == f"local4|warning|web-1|nginx|4242|REQ|v|grüße ✓ #{i}"
        else:
            assert line == f"local4|warning|web-1|nginx|4242|||grüße ✓ #{i}"
