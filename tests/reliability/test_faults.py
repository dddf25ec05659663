"""Fault injection end to end (issue 7): real server, real agents, real workers, real files.

Each test runs 100,000 numbered events (``{"n": i}``) through a deployed ``files`` pipe while a
fault lands at a random moment (a seeded ``random.Random``: the seed is in every assertion
message and in ``tests/artifacts/faults.jsonl``; ``PIPENB_FAULT_SEED=N`` replays it). At the end
the output is counted against the input: nothing may be lost (every ``n`` at least once), and
duplicates (at-least-once delivery) may not exceed a couple of batches per crash.

Every wait polls a condition with a deadline. The only sleeps hold a fault for a while (a server
kept down, an output refusing, a directory read-only, a database locked): they are the fault.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from support.faultkit import (
    BATCH,
    TOTAL,
    ReadOnly,
    RefusingSink,
    Rig,
    SqliteLocker,
    line_count,
    tally_file,
    wait_for,
)
from support.processes import pid_alive

pytestmark = pytest.mark.slow

#: duplicates one crash may cause: the events of one write not yet checkpointed (an output
#: batch plus what one input read added to it), rounded up to two batches
PER_CRASH = 2 * BATCH


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, request.node.name.removeprefix("test_"))
    try:
        yield r
    finally:
        r.close()
        r.dump_logs()


# ------------------------------------------------------------------------------ 1. agent


def test_agent_sigkill_then_restart(rig: Rig) -> None:
    rig.begin()
    at = rig.fault_point()
    orphans = rig.agent.worker_pids()
    rig.agent.kill()  # its worker sees its stdin close, drains and checkpoints on its own
    killed = time.monotonic()
    rig.start_agent(enroll=False)  # same data dir: saved identity, desired pipes, checkpoint
    finished = rig.wait_complete()
    tally = tally_file(rig.out, TOTAL)
    rig.conclude(tally, PER_CRASH, finished, fault_at=at, recovered_s=finished - killed)
    assert tally.torn == 0, f"seed={rig.seed}: a drained worker tears no line"
    assert orphans and not any(pid_alive(p) for p in orphans), "the old worker is still there"
    assert len(rig.agent.worker_pids()) == 1


# ------------------------------------------------------------------------------ 2. worker


def test_worker_sigkill_is_restarted(rig: Rig) -> None:
    rig.begin()
    at = rig.fault_point()
    (worker,) = wait_for(rig.agent.worker_pids, 20, "the worker")
    # while it writes: most of the time a worker waits for input, and a kill then costs nothing
    size = rig.out.stat().st_size
    wait_for(lambda: rig.out.stat().st_size != size, 20, "the worker to write", interval=0.0005)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: [p for p in rig.agent.worker_pids() if p != worker],
        30,
        "the agent to start a new worker",
        rig.info,
    )
    restarted = time.monotonic() - killed
    finished = rig.wait_complete()
    tally = tally_file(rig.out, TOTAL)
    rig.conclude(
        tally,
        PER_CRASH,
        finished,
        fault_at=at,
        restart_s=restarted,
        recovered_s=finished - killed,
    )
    assert tally.torn <= 1, f"seed={rig.seed}: {tally.torn} torn lines from one SIGKILL"
    assert rig.agent.alive()


# ------------------------------------------------------------------------------ 3. server


def test_server_sigkill_then_restart_on_the_same_database(rig: Rig) -> None:
    rig.begin()
    at = rig.fault_point()
    port = rig.server.port
    rig.server.kill()
    killed = time.monotonic()
    down = rig.rng.uniform(0.5, 2.0)
    time.sleep(down)  # the fault: the server stays away this long
    restarted = datetime.now(timezone.utc)
    starting = time.monotonic()
    rig.start_server(port=port)  # same SQLite file, same port: the agent's URL still works
    up = time.monotonic()
    assert rig.server.port == port

    def reconnected() -> bool:
        inst = rig.instance()  # a report stored by this server, not the last one before the kill
        seen = (inst or {}).get("updated_at")
        return bool(seen and datetime.fromisoformat(seen.replace("Z", "+00:00")) > restarted)

    wait_for(reconnected, 30, "the agent to report to the new server", rig.info)
    reconnect_s = time.monotonic() - killed
    after_up = time.monotonic() - up  # the agent's backoff (0.5 s doubling, with jitter)
    finished = rig.wait_complete()
    tally = tally_file(rig.out, TOTAL)
    rig.conclude(
        tally,
        PER_CRASH,
        finished,
        fault_at=at,
        down_s=down,
        server_start_s=up - starting,
        reconnect_s=reconnect_s,
        reconnect_after_up_s=after_up,
        recovered_s=finished - killed,
    )
    assert rig.agent.alive() and len(rig.agent.worker_pids()) == 1


# ------------------------------------------------------------------------------ 4. output


def test_output_refusing_writes_for_a_while(rig: Rig) -> None:
    sink = RefusingSink()
    rig.undo.append(sink.close)
    rig.begin(rig.http_output(sink.url), sink.unique_count)
    at = rig.fault_point()
    hold = rig.rng.uniform(2.0, 4.0)
    sink.refuse()
    refused = time.monotonic()
    wait_for(lambda: sink.refused >= 1, 20, "a request refused", rig.info)
    held_at = rig.checkpoint_offset()
    time.sleep(max(0.0, refused + hold - time.monotonic()))  # the fault: refusing this long
    # the input was held back: no checkpoint moved past what the output confirmed
    assert rig.checkpoint_offset() == held_at, f"seed={rig.seed}: the checkpoint moved on"
    tries = sink.refused
    sink.accept()
    finished = rig.wait_complete()
    tally = sink.tally(TOTAL)
    first_after = (sink.first_after or finished) - (sink.accepted_at or finished)
    rig.conclude(
        tally,
        PER_CRASH,
        finished,
        fault_at=at,
        refused_s=hold,
        refused_requests=tries,
        resumed_after_s=first_after,
        recovered_s=finished - (sink.accepted_at or finished),
    )
    assert tries >= 2, f"seed={rig.seed}: the output did not retry ({tries} requests)"
    assert rig.agent.alive() and len(rig.agent.worker_pids()) == 1


# ------------------------------------------------------------------------------ 5. data dir


def test_agent_data_dir_read_only_for_a_while(rig: Rig, tmp_path: Path) -> None:
    probe = ReadOnly(tmp_path / "probe")
    probe.dir.mkdir()
    if probe.on() is None:
        pytest.skip(f"cannot make a directory read-only here: {probe.why}")
    probe.off()
    rig.begin()
    at = rig.fault_point()
    ro = ReadOnly(rig.agent.data_dir)
    rig.undo.append(ro.off)
    hold = rig.rng.uniform(2.0, 4.0)
    method = ro.on()
    assert method is not None, ro.why
    started = time.monotonic()
    frozen = rig.checkpoint_offset()
    time.sleep(hold)  # the fault: the data dir stays read-only this long
    during = rig.checkpoint_offset()
    ro.off()
    ended = time.monotonic()
    finished = rig.wait_complete()
    tally = tally_file(rig.out, TOTAL)
    rig.conclude(
        tally,
        PER_CRASH,  # one crash: the worker whose checkpoint could not be saved
        finished,
        fault_at=at,
        method=method,
        read_only_s=ended - started,
        checkpoint_frozen=frozen == during,
        worker_failures=rig.agent.log_text().count(" failed ("),
        recovered_s=finished - ended,
    )
    assert frozen == during, f"seed={rig.seed}: a checkpoint was saved in a read-only data dir"
    assert rig.agent.alive()


# ------------------------------------------------------------------------------ 6. database


def test_sqlite_locked_by_another_process(rig: Rig) -> None:
    rig.begin()
    hold = rig.rng.uniform(2.5, 4.0)  # over twice the server's 1 s wait for a lock
    locker = SqliteLocker(rig.db_path, hold).start()
    rig.undo.append(locker.close)
    at = rig.fault_point()
    answers: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def ask(what: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        asked = time.monotonic()
        row: dict[str, Any] = {"what": what, "at": asked - t0}
        try:
            r = rig.server.request(method, path, timeout=60, **kw)
            row.update(status=r.status_code, retry_after=r.headers.get("Retry-After"))
            if r.status_code >= 400:
                row["error"] = r.json().get("error") if r.content else None
        except (requests.RequestException, ValueError) as exc:
            row.update(status=None, error=repr(exc))
        row["took"] = time.monotonic() - asked
        answers.append(row)
        return row

    def probe(what: str, pause: float) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if what == "write":  # a new pipe: a write that touches nothing the test runs
                doc = (
                    f"name: probe-{i}\ninput: {{echo: {{lines: [x]}}}}\noutput: {{discard: {{}}}}\n"
                )
                ask(what, "POST", "/pipes", json={"yaml": doc})
            else:
                ask(what, "GET", "/health")
            stop.wait(pause)  # paces the probe

    probes = [
        threading.Thread(target=probe, args=("write", 0.1), daemon=True),
        threading.Thread(target=probe, args=("health", 0.05), daemon=True),
    ]
    try:
        locker.lock()
        locked = time.monotonic() - t0
        lines_at_lock = line_count(rig.out)
        for p in probes:
            p.start()
        locker.wait_released()  # the fault holds the lock `hold` seconds, then lets go
        released = time.monotonic() - t0
        lines_at_release = line_count(rig.out)
        # recovered: a write goes through again
        wait_for(
            lambda: any(
                a["what"] == "write" and a["status"] == 201 and a["at"] > released for a in answers
            ),
            30,
            "a write to succeed after the lock",
            lambda: answers[-5:],
        )
    finally:
        stop.set()
        for p in probes:
            p.join(60)
    assert rig.server.proc.poll() is None, "the server died"
    recovered = min(
        a["at"] + a["took"]
        for a in answers
        if a["what"] == "write" and a["status"] == 201 and a["at"] > released
    )
    finished = rig.wait_complete()
    tally = tally_file(rig.out, TOTAL)
    during = [a for a in answers if locked <= a["at"] < released]
    refused = [a for a in answers if a["status"] == 503]
    agent_503s = rig.agent.log_text().count("503: ")
    rig.conclude(
        tally,
        PER_CRASH,
        finished,
        fault_at=at,
        locked_s=released - locked,
        answers=len(answers),
        answers_503=len(refused),
        agent_503s=agent_503s,
        slowest_health_s=max(a["took"] for a in answers if a["what"] == "health"),
        slowest_write_s=max(a["took"] for a in answers if a["what"] == "write"),
        write_ok_again_s=recovered - released,
        recovered_s=finished - t0 - released,
    )
    # the server answered every request: success, or a clear 503 to retry after, never a 500
    bad = [a for a in answers if a["status"] not in (200, 201, 503)]
    assert bad == [], f"seed={rig.seed}: answers that are neither success nor 503: {bad}"
    for a in refused:
        assert a["retry_after"] and a["error"]["code"] == "unavailable", a
        assert "locked" in a["error"]["message"], a
    assert any(a["what"] == "write" and a["status"] == 503 for a in during), (
        f"seed={rig.seed}: no write was refused while the database was locked: {during}"
    )
    assert lines_at_release > lines_at_lock, "the pipe stalled while the database was locked"
    assert rig.agent.alive()
