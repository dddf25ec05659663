"""The ``syslog`` output: what the syslog input decodes, it re-encodes, over TCP, UDP and TLS.

Round trips go through pipenb's own ``tcp``/``udp`` syslog inputs (both framings, TLS with a
trustme CA) and into a real ``rsyslogd`` (Debian's package, its own config file, on loopback)
that writes each field it parsed to a file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import orjson
import pytest

import pipenb
from pipenb.engine.codecs import syslog_decode as syslog
from pipenb.engine.codecs.syslog_encode import encode, frame

from support.engines import pipe_doc, running
from support.files import read_ndjson
from support.processes import free_port
from support.tlskit import trustme_certs as certs
from support.waiting import async_wait_until, wait_until

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
)

EVENTS = [
    {
        "facility": "local4",
        "severity": "warning",
        "timestamp": "2024-05-01T12:00:00.123Z",
        "host": "web-1",
        "app": "nginx",
        "pid": 4242,
        "msgid": "REQ",
        "structured_data": {"meta@1": {"k": 'a "q" ]'}},
        "message": "grüße ✓\nsecond line",
    },
    {
        "facility": "auth",
        "severity": "err",
        "timestamp": "2024-05-01T12:00:01Z",
        "host": "db",
        "app": "sshd",
        "message": "denied",
    },
]


@pytest.mark.parametrize("event", EVENTS)
def test_rfc5424_round_trip(event):
    assert syslog.parse(encode(event, "rfc5424")) == event


def test_rfc3164_round_trip_keeps_what_the_rfc_carries():
    ev = {"facility": "daemon", "severity": "info", "timestamp": "May  1 12:00:00.123",
          "host": "h1", "app": "cron", "pid": 7, "message": "ran"}  # fmt: skip
    assert syslog.parse(encode(ev, "rfc3164")) == ev


def test_defaults_and_bad_values():
    msg = encode({"x": 1}, "rfc5424")
    ev = syslog.parse(msg)
    assert (ev["facility"], ev["severity"], ev["message"]) == ("user", "notice", '{"x":1}')
    assert encode({"severity": 3, "facility": 16, "message": "m"}).startswith("<131>1 ")
    with pytest.raises(ValueError, match="severity 'loud' is not one of"):
        encode({"severity": "loud"})
    assert frame("a\nb", "octet-counted") == b"3 a\nb"
    assert frame("a\nb", "newline") == b"a#012b\n"


def sender_doc(output: dict, events: list[dict], errors: Path | None = None) -> pipenb.Pipe:
    doc: dict = {"name": "sender", "input": {"echo": {"events": events}}, "output": output}
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "10ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


@pytest.mark.parametrize(
    ("protocol", "framing", "fmt"),
    [
        ("tcp", "octet-counted", "rfc5424"),
        ("tcp", "newline", "rfc5424"),
        ("udp", "octet-counted", "rfc5424"),
        ("tls", "octet-counted", "rfc5424"),
        ("tcp", "octet-counted", "rfc3164"),
    ],
)
def test_syslog_output_into_the_syslog_input(tmp_path, data_dir, protocol, framing, fmt):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    listener: dict = {"address": "127.0.0.1:0", "format": "syslog"}
    tls_out: dict | None = None
    if protocol == "tls":
        chain, ca_file = certs(tmp_path)
        listener["tls"] = {"cert": chain}
        tls_out = {"ca-file": ca_file}
    receiver = pipe_doc({"udp" if protocol == "udp" else "tcp": listener}, out)
    n = 200
    events = [dict(EVENTS[i % 2], message=f"{EVENTS[i % 2]['message']} #{i}") for i in range(n)]
    events.append({"severity": "nonsense", "message": "to errors"})

    async def scenario():
        async with running(receiver, data_dir) as (_, inp):
            output: dict = {"syslog": {"address": f"127.0.0.1:{inp.port}", "protocol": protocol,
                            "framing": framing, "format": fmt}}  # fmt: skip
            if tls_out:
                output["syslog"]["tls"] = tls_out
            await sender_doc(output, events, errors).engine(data_dir=data_dir).run()
            await async_wait_until(lambda: len(read_ndjson(out)) == n, what=f"{n} messages")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    got = sorted(read_ndjson(out), key=lambda e: int(e["message"].rsplit("#", 1)[1]))
    for i, e in enumerate(got):
        want = dict(events[i])
        if framing == "newline" and protocol != "udp":
            want["message"] = want["message"].replace("\n", "#012")
        if fmt == "rfc3164":  # RFC 3164 carries no msgid, no structured data, no year/zone
            for k in ("msgid", "structured_data", "timestamp"):
                want.pop(k, None)
            e.pop("timestamp")
        assert e == want
    (dead,) = read_ndjson(errors)
    assert "severity 'nonsense'" in dead["_error"]["message"]


def test_tls_sender_refuses_an_untrusted_receiver(tmp_path, data_dir, caplog):
    """No CA given for a receiver with a private CA: a clear error naming the fix, retried
    (the engine holds the input back), nothing delivered."""
    chain, _ = certs(tmp_path)
    out = tmp_path / "out.ndjson"
    receiver = pipe_doc({"tcp": {"address": "127.0.0.1:0", "format": "syslog",
                                 "tls": {"cert": chain}}}, out)  # fmt: skip

    async def scenario():
        async with running(receiver, data_dir) as (_, inp):
            output = {"syslog": {"address": f"127.0.0.1:{inp.port}", "protocol": "tls"}}
            engine = sender_doc(output, EVENTS).engine(data_dir=data_dir)
            task = asyncio.create_task(engine.run())
            await async_wait_until(
                lambda: sum("not trusted" in r.getMessage() for r in caplog.records) >= 2,
                what="the certificate error, twice",
            )
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    (msg, *_) = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert "give its CA as tls: {ca-file: ...}" in msg
    assert not out.exists() or read_ndjson(out) == []


# ------------------------------------------------------------------------------ into rsyslog


@pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd is not installed (scripts/peers-test.sh)")
@pytest.mark.parametrize("framing", ["octet-counted", "newline"])
def test_syslog_output_into_rsyslog(tmp_path, data_dir, framing):
    """rsyslogd (imtcp) parses what the output sends; its own properties show the fields."""
    port, work = free_port(), tmp_path / "rsyslog"
    work.mkdir()
    got = work / "got.txt"
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}")\n'
        'template(name="fields" type="string" string="%syslogfacility-text%|'
        '%syslogseverity-text%|%hostname%|%app-name%|%procid%|%msgid%|%msg:::json%\\n")\n'
        f'action(type="omfile" file="{got}" template="fields")\n'
    )
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    n = 1000
    events = [dict(EVENTS[0], message=f"grüße ✓ #{i}") for i in range(n)]
    try:

        def listening() -> bool:
            assert proc.poll() is None, "rsyslogd exited"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 30, "rsyslogd listening", interval=0.05)
        output = {"syslog": {"address": f"127.0.0.1:{port}", "framing": framing}}

        async def send():
            await sender_doc(output, events).engine(data_dir=data_dir).run()
            await async_wait_until(
                lambda: got.exists() and got.read_text().count("\n") >= n, what="1000 lines"
            )

        asyncio.run(asyncio.wait_for(send(), 60))
    finally:
        proc.terminate()
        proc.wait(20)
    lines = got.read_text().splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        assert line == f"local4|warning|web-1|nginx|4242|REQ|grüße ✓ #{i}"
