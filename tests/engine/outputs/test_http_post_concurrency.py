"""``http-post`` ``concurrency: N`` (issue 16 item 9): N requests in flight, checkpoints in order.

The receiver (``support.httpsink``, a thread per connection) takes its time over every request
(a slow receiver is what concurrency is for) and counts the requests it is serving at once. Its latency
alternates between long and short, so answers come back out of order: a checkpoint taken on
whichever answer came first would get ahead of a batch still unanswered, which the SIGKILL test
catches by comparing every checkpoint it sees with what the receiver had acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

import pipenb
from pipenb.engine.checkpoints import FileCheckpointStore, checkpoint_path

from support import REPO_ROOT
from support.httpsink import HttpSink, Request
from support.waiting import wait_until


class SlowReceiver:
    """Answers 200 after ``latency`` seconds (every other request: ``latency / 4``)."""

    def __init__(self, latency: float = 0.1, alternate: bool = False):
        self.latency = latency
        self.alternate = alternate
        self.acked: set[int] = set()
        self.received = 0
        self.now = 0
        self.most = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.sink = HttpSink(self.answer)
        self.port = self.sink.port

    def answer(self, request: Request) -> tuple[int, bytes]:
        seqs = [e["seq"] for e in request.lines()]
        with self.lock:
            self.requests += 1
            n = self.requests
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            # the receiver's own latency (what it simulates), not test synchronisation
            time.sleep(self.latency / 4 if self.alternate and n % 2 == 0 else self.latency)
        finally:
            with self.lock:
                self.now -= 1
        with self.lock:
            self.acked.update(seqs)
            self.received += len(seqs)
        return 200, b""

    def close(self) -> None:
        self.sink.close()


def test_requests_overlap_and_every_event_arrives(tmp_path, data_dir):
    rx = SlowReceiver(latency=0.1)
    try:
        n = 3000
        doc = {
            "name": "post",
            "input": {"echo": {"events": [{"seq": i} for i in range(n)]}},
            "output": {"http-post": {"url": f"http://127.0.0.1:{rx.port}/", "format": "ndjson",
                                     "concurrency": 8, "batch": {"size": 100}}},
        }  # fmt: skip
        engine = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).engine(data_dir=data_dir)
        asyncio.run(asyncio.wait_for(engine.run(), 120))
    finally:
        rx.close()
    assert rx.acked == set(range(n))
    assert rx.requests == n // 100  # no request sent twice: nothing failed
    # several requests were being served at once (8 allowed; a busy machine may start fewer)
    assert rx.most >= 3, f"at most {rx.most} request(s) at once"
    assert engine.snapshot()["output"]["in_flight_most"] >= 3


def test_concurrency_1_sends_one_request_at_a_time(tmp_path, data_dir):
    rx = SlowReceiver(latency=0.05)
    try:
        doc = {
            "name": "post",
            "input": {"echo": {"events": [{"seq": i} for i in range(500)]}},
            "output": {"http-post": {"url": f"http://127.0.0.1:{rx.port}/", "format": "ndjson",
                                     "batch": {"size": 50}}},
        }  # fmt: skip
        asyncio.run(asyncio.wait_for(pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
                                     .engine(data_dir=data_dir).run(), 120))  # fmt: skip
    finally:
        rx.close()
    assert rx.acked == set(range(500)) and rx.most == 1


def _line_ends(src: Path) -> list[int]:
    ends, pos = [], 0
    for line in src.read_bytes().splitlines(keepends=True):
        pos += len(line)
        ends.append(pos)
    return ends


def test_sigkill_mid_stream_loses_nothing_acknowledged_and_checkpoints_stay_in_order(tmp_path):
    n = 20_000
    src = tmp_path / "src.ndjson"
    src.write_bytes(b"".join(b'{"seq": %d, "pad": "%s"}\n' % (i, b"x" * 40) for i in range(n)))
    ends = _line_ends(src)
    rx = SlowReceiver(latency=0.2, alternate=True)  # answers out of order
    pipe = tmp_path / "send.yaml"
    pipe.write_text(
        f"name: send\ninput:\n  files:\n    path: {src}\n    format: json\n    follow: false\n"
        "    read-bytes: 8KiB\n"
        f"output:\n  http-post:\n    url: http://127.0.0.1:{rx.port}/\n    format: ndjson\n"
        "    concurrency: 8\n    batch: {size: 50}\n"
    )
    data = tmp_path / "send-data"
    store = FileCheckpointStore(checkpoint_path(str(data), "send"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    log = tmp_path / "send.log"

    def start() -> subprocess.Popen:
        cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data), "-q"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))

    seen: list[int] = []  # every distinct checkpoint offset observed, in order

    def committed_events() -> int:
        pos = store.load()
        if not pos:
            return 0
        (f,) = pos["files"].values()
        offset = f["offset"]
        if not seen or seen[-1] != offset:
            seen.append(offset)
        return sum(1 for e in ends if e <= offset)

    def check_checkpoint() -> bool:
        """The checkpoint never covers an event the receiver has not acknowledged."""
        with_acks = set(rx.acked)  # acks only grow: taken before the checkpoint is read
        k = committed_events()
        missing = [s for s in range(k) if s not in with_acks]
        assert not missing, f"checkpoint covers {k} events, {len(missing)} not acknowledged"
        return rx.received >= 6000 and k > 0

    proc = start()
    try:
        wait_until(
            check_checkpoint, timeout=120, interval=0.01, what="6000 events and a checkpoint"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
        check_checkpoint()
        killed_at = committed_events()
        assert 0 < killed_at < n  # it really died mid-stream
        proc = start()
        wait_until(lambda: proc.poll() is not None, timeout=300, interval=0.05,
                   what="the second run to finish")  # fmt: skip
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        rx.close()
    assert rx.acked == set(range(n)), f"lost {n - len(rx.acked)}"
    assert committed_events() == n
    assert seen == sorted(seen), f"checkpoints went backwards: {seen}"
    assert rx.most >= 3
