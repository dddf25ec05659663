"""``buffer: disk``: what ``http-server`` acknowledged survives SIGKILL (replayed from disk).

The unit tests drive ``SegmentLog`` directly (group commit, segments, torn tails, the bound).
The crash test runs the receiver as a real ``pipenb run`` process and kills it with SIGKILL
three times while a second ``pipenb run`` streams 100,000 events to it with ``http-post``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from pipenb.engine.diskbuffer import DiskBufferFull, SegmentLog

from support import REPO_ROOT
from support.httpsink import HttpSink, Request
from support.processes import free_port
from support.waiting import async_wait_until, wait_until


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(orjson.dumps({"seq": i}) + b"\n" for i in range(start, start + n))


def test_group_commit_read_restore_and_segments(tmp_path):
    async def scenario():
        log = SegmentLog(tmp_path / "buf", max_bytes=1 << 20, segment_bytes=2000)
        # 50 appends at once share fsyncs (group commit)
        ends = await asyncio.gather(*(log.append(lines(10, 10 * i)) for i in range(50)))
        assert max(ends) == log.end and log.commits < 50
        got, pos = [], 0
        while pos < log.end:
            data, pos = await log.read()
            got += [orjson.loads(x)["seq"] for x in data.splitlines()]
        assert sorted(got) == list(range(500))
        assert len(list((tmp_path / "buf").glob("*.seg"))) >= 2  # rolled
        log.committed(pos)
        assert len(list((tmp_path / "buf").glob("*.seg"))) == 1  # the older ones went
        log.close()
        return pos

    end = asyncio.run(scenario())

    async def reopen():
        log = SegmentLog(tmp_path / "buf", max_bytes=1 << 20, segment_bytes=2000)
        assert log.end == end
        await log.append(lines(1, 500))
        log.restore(end)
        data, _ = await log.read()
        log.close()
        return data

    assert asyncio.run(reopen()) == lines(1, 500)


def test_a_torn_tail_is_cut_and_the_bound_refuses(tmp_path):
    async def scenario():
        log = SegmentLog(tmp_path / "b", max_bytes=100)
        await log.append(lines(3))
        log.close()
        seg = next((tmp_path / "b").glob("*.seg"))
        with open(seg, "ab") as f:
            f.write(b'{"seq": 99')  # a write the crash interrupted (never acknowledged)
        log = SegmentLog(tmp_path / "b", max_bytes=100)
        assert log.end == len(lines(3))
        data, _ = await log.read()
        assert data == lines(3)
        await log.append(lines(10))  # now past the bound
        with pytest.raises(DiskBufferFull):
            await log.append(lines(1))
        log.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ SIGKILL


def pipenb_run(pipe: Path, data_dir: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data_dir), "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def seqs_in(path: Path) -> list[int]:
    """Sequence numbers written so far (a line torn by SIGKILL is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line)["seq"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def test_sigkill_three_times_during_100k_http_post_loses_nothing(tmp_path):
    n = 100_000
    port = free_port()
    src, out = tmp_path / "src.ndjson", tmp_path / "out.ndjson"
    src.write_bytes(lines(n))
    recv = tmp_path / "recv.yaml"
    recv.write_text(
        f"name: recv\ninput:\n  http-server:\n    address: 127.0.0.1:{port}\n"
        "    format: ndjson\n    buffer: disk\n"
        f"output:\n  file:\n    path: {out}\n"
    )
    send = tmp_path / "send.yaml"
    send.write_text(
        f"name: send\ninput:\n  files:\n    path: {src}\n    format: json\n    follow: false\n"
        f"output:\n  http-post:\n    url: http://127.0.0.1:{port}/\n    format: ndjson\n"
        "    batch: {size: 500}\n"
    )
    log = tmp_path / "procs.log"
    receiver = pipenb_run(recv, tmp_path / "recv-data", log)

    def up() -> bool:
        try:
            return requests.post(f"http://127.0.0.1:{port}/", data=b"", timeout=2).ok
        except requests.ConnectionError:
            return False

    procs = [receiver]
    try:
        wait_until(up, timeout=60, what="the receiver")
        sender = pipenb_run(send, tmp_path / "send-data", log)
        procs.append(sender)
        kills = 0
        for at in (20_000, 45_000, 70_000):
            wait_until(lambda a=at: len(seqs_in(out)) >= a, timeout=120, what=f"{at} events")
            receiver.send_signal(signal.SIGKILL)
            receiver.wait(20)
            kills += 1
            receiver = pipenb_run(recv, tmp_path / "recv-data", log)
            procs.append(receiver)
            wait_until(up, timeout=60, what="the receiver again")
        assert sender.wait(300) == 0, log.read_text()[-3000:]
        wait_until(lambda: len(set(seqs_in(out))) >= n, timeout=120, what="every event")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(20)
    got = seqs_in(out)
    assert kills == 3
    assert set(got) == set(range(n)), f"lost {n - len(set(got))}"
    print(f"duplicates after 3 SIGKILLs: {len(got) - n}")


# ------------------------------------------------------------------------------ on outputs


def test_an_output_disk_buffer_holds_events_while_the_sink_is_down(tmp_path, data_dir):
    """The sink answers 503 at first: the input is read to its end and checkpointed anyway
    (the events wait on disk); once the sink is up, every event arrives."""
    import pipenb

    up = False

    def answer(request: Request) -> tuple[int, bytes]:
        return (200, b"") if up else (503, b"")

    sink = HttpSink(answer)
    n = 5000
    src = tmp_path / "in.ndjson"
    src.write_bytes(lines(n))
    doc = {
        "name": "held",
        "input": {"files": {"path": str(src), "format": "json"}},
        "output": {"http-post": {"url": sink.url, "format": "ndjson", "buffer": "disk"}},
    }  # fmt: skip
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())

    def got() -> list[int]:
        return [e["seq"] for e in sink.events()]

    async def scenario():
        nonlocal up
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        try:
            size = src.stat().st_size

            def checkpointed_to_the_end() -> bool:
                files = (engine.snapshot()["position"] or {}).get("files", {})
                return [f["offset"] for f in files.values()] == [size]

            await async_wait_until(
                checkpointed_to_the_end,
                what="the input checkpointed at its end while the sink is down",
            )
            assert got() == []
            up = True
            await async_wait_until(lambda: len(set(got())) == n, what="every event")
        finally:
            engine.stop()
            await task

    with sink:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    assert sorted(set(got())) == list(range(n))


def test_a_finite_run_ends_after_the_send_in_flight(tmp_path, data_dir):
    """A pipe that ends (here a file read once) waits, when it closes, for the drain to send
    what is in the buffer, the request in flight included: every event arrives in this run.
    (The wait counted what the drain had read, not what the output took, so the close cut the
    last request short, and its events waited on disk for a next start without a word.)"""
    import threading

    import pipenb

    engine: Any = None
    returned = threading.Event()

    def answer_when_the_close_waits(request: Request) -> tuple[int, bytes]:
        # in flight until the output's close has begun; answered once the close waits for it
        # (it counts what the output has not taken), or once the run returned without waiting
        out = engine.parts.output
        wait_until(
            lambda: out._drainer is None and (out.backlog() > 0 or returned.is_set()),
            what="the output's close to wait for this request, or the run to return",
        )
        return 200, b""

    n = 200
    src = tmp_path / "in.ndjson"
    src.write_bytes(lines(n))
    doc = {
        "name": "drained",
        "input": {"files": {"path": str(src), "format": "json", "follow": False}},
        "output": {"http-post": {"url": "URL", "format": "ndjson", "buffer": "disk"}},
    }
    with HttpSink(answer_when_the_close_waits) as sink:
        doc["output"]["http-post"]["url"] = sink.url
        pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
        engine = pipe.engine(data_dir=data_dir)
        asyncio.run(asyncio.wait_for(engine.run(), 60))
        delivered = sorted(e["seq"] for e in sink.events())  # when the run returned
        returned.set()
        assert engine.state == "finished"
        assert delivered == list(range(n))
