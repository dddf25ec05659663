"""Regression tests for three leaks: each grew with time on a long-running agent or server.

1. The ``files`` input kept a file that was rotated away open for as long as new input kept
   arriving (it only closed such files in a loop pass that read nothing).
2. A check-in reporting a pipe of a deployment that was deleted meanwhile created a
   ``pipe_status`` row that nothing ever removed.
3. The telemetry service remembered the time of the last metrics point of every
   (agent, deployment) pair it had ever seen.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sqlite3
import threading
import time
from pathlib import Path

import orjson

import pipenb
from pipenb.client import Client
from pipenb.server import models as M
from pipenb.server.control_plane import ControlPlane
from pipenb.server.settings import ServerSettings

from support.files import raw_values
from support.serverproc import ServerProcess
from support.waiting import async_wait_until, stop_engine, wait_until

# ------------------------------------------------------------------------------ files input

ROTATIONS = 6
ROTATE_EVERY = 0.6  # seconds between two rotations of the tailed file
ROTATE_WAIT = 0.25  # the input's rotate-wait: a rotated file quiet this long is done
BACKLOG_LOW = 4000  # the writer tops the unread backlog up whenever it falls below this
CHUNK = 1000  # lines per write


def rotated_fds(directory: Path, live: Path) -> list[str]:
    """What this process's descriptors into ``directory`` point at, other than the live file:
    rotated files (renamed aside) and deleted ones (shown with `` (deleted)``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
        if target.startswith(f"{directory}/") and target != str(live):
            found.append(target)
    return found


def test_a_rotated_file_is_closed_while_input_keeps_arriving(tmp_path, data_dir):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "rotating",
        "input": {
            "files": {
                "path": str(log),
                "follow": True,
                "poll-interval": "10ms",
                "glob-interval": "10ms",
                "rotate-wait": f"{int(ROTATE_WAIT * 1000)}ms",
                "read-bytes": 256,  # small reads: the input never catches up with the writer
            }
        },
        "output": {"file": {"path": str(out), "batch": {"size": 1000, "timeout": "20ms"}}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    engine = pipe.engine(data_dir=data_dir)
    written: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        """Keep an unread backlog in the file (the input never runs dry), rotate every
        ROTATE_EVERY: unlink the previous rotated file, rename the live one aside, start anew."""
        try:
            fh = open(log, "ab", buffering=0)  # noqa: SIM115 - a long-lived log writer
            rotations, last_rotation = 0, time.monotonic()
            while rotations < ROTATIONS:
                wait_until(
                    lambda: len(written) - engine.metrics.input_events < BACKLOG_LOW,
                    what="the input to read the backlog",
                    interval=0.001,
                )
                batch = [f"line-{i:07d}" for i in range(len(written), len(written) + CHUNK)]
                fh.write("".join(s + "\n" for s in batch).encode())
                written.extend(batch)
                if time.monotonic() - last_rotation >= ROTATE_EVERY:
                    fh.close()  # the writer itself holds no rotated file
                    aside = logs / "app.log.1"
                    if aside.exists():
                        aside.unlink()  # a descriptor still on it now shows "(deleted)"
                    log.rename(aside)
                    fh = open(log, "ab", buffering=0)  # noqa: SIM115
                    rotations += 1
                    last_rotation = time.monotonic()
            fh.close()
        except BaseException as exc:
            errors.append(exc)

    samples: list[list[str]] = []

    def sample_while_writing() -> bool:
        samples.append(rotated_fds(logs, log))
        return not thread.is_alive()

    async def scenario() -> None:
        task = asyncio.create_task(engine.run())
        try:
            await async_wait_until(lambda: engine.parts.input.files, what="app.log to be opened")
            thread.start()
            await async_wait_until(sample_while_writing, what="the writer to finish")
            assert not errors, errors
            # (counted, not read back: parsing the output here would block the engine's loop)
            await async_wait_until(
                lambda: engine.metrics.output.events >= len(written), what="every line written"
            )
        finally:
            await stop_engine(engine, task)

    thread = threading.Thread(target=writer, daemon=True)
    asyncio.run(asyncio.wait_for(scenario(), 60))

    assert len(samples) >= ROTATIONS  # looked at all through the writing
    worst = max(samples, key=len)
    assert len(worst) <= 2, f"{len(worst)} rotated files still open while input flowed: {worst}"
    got = raw_values(out)
    assert len(got) == len(written)
    assert collections.Counter(got) == collections.Counter(written)
    assert len(written) >= ROTATIONS * CHUNK


# ------------------------------------------------------------------------------ check-in


def pipe_status_rows(db: Path, dep_id: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT agent_id, state FROM pipe_status WHERE deployment_id = ?", (dep_id,)
        ).fetchall()
    finally:
        con.close()


def test_a_report_for_a_deleted_deployment_leaves_no_pipe_status_row(tmp_path):
    with (
        ServerProcess(tmp_path / "srv") as srv,
        Client(srv.url, srv.token, timeout=10) as client,
    ):
        db = srv.data_dir / "server.db"
        client.add_agent("leaky-agent")
        key = client.create_key("leaky-agent")["api_key"]
        client.push("name: leaky\ninput: {echo: {events: [{n: 1}]}}\noutput: {discard: {}}\n")
        dep_id = client.deploy("leaky", agents=["leaky-agent"], labels=[])["id"]

        def checkin(seq: int, **body: object) -> dict:
            return client.checkin(key, {"agent_id": "leaky-agent", "seq": seq, **body})

        (desired,) = checkin(0)["desired"]
        assert desired["deployment_id"] == dep_id
        report = {"deployment_id": dep_id, "hash": desired["hash"]}
        checkin(1, full=False, pipes=[{**report, "state": "running"}])
        assert pipe_status_rows(db, dep_id) == [("leaky-agent", "running")]

        client.delete_deployment(dep_id)
        assert pipe_status_rows(db, dep_id) == []
        # the agent stops the pipe it was told to drop and says so in its next check-in
        answer = checkin(2, full=False, pipes=[{**report, "state": "stopped"}])
        assert answer["desired"] == []
        assert pipe_status_rows(db, dep_id) == []


# ------------------------------------------------------------------------------ telemetry


def test_telemetry_forgets_last_points_older_than_the_metrics_interval(tmp_path):
    every = 60.0
    cp = ControlPlane(ServerSettings(db_url=f"sqlite:///{tmp_path}/cp.db", metrics_interval=every))
    try:
        agents = ["tm-a", "tm-b", "tm-c"]
        for a in agents:
            cp.agents.add(M.AgentCreate(id=a))
        # an agent's metrics count for the deployments assigned to it only
        cp.pipes.push(
            M.PipePush(yaml="name: tm\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n")
        )
        deps = [cp.deployments.create(M.DeploymentCreate(pipe="tm", agents=agents)).id
                for _ in range(4)]  # fmt: skip

        async def report(seq: int, pairs: list[tuple[str, str]]) -> None:
            for a in {a for a, _ in pairs}:
                pipes = [
                    M.PipeReport(deployment_id=d, state="running", metrics={"events": seq})
                    for x, d in pairs
                    if x == a
                ]
                body = M.CheckinRequest(agent_id=a, seq=seq, full=False, pipes=pipes)
                await cp.checkin.checkin(a, body)

        def points() -> int:
            return len(cp.telemetry.metrics(limit=10_000).metrics)

        every_pair = [(a, d) for a in agents for d in deps]
        asyncio.run(report(0, every_pair))
        assert set(cp.telemetry._last_point) == set(every_pair)
        assert points() == len(every_pair)

        # the points of the first two were stored two intervals ago, the others just now
        old = {(a, d) for a, d in every_pair if d in deps[:2]}
        for pair in old:
            cp.telemetry._last_point[pair] = time.time() - 2 * every
        cp.telemetry.expire()
        assert set(cp.telemetry._last_point) == set(every_pair) - old

        # what is kept still holds a new point back; what was forgotten stores one at once
        kept, dropped = ("tm-a", deps[2]), ("tm-a", deps[0])
        asyncio.run(report(1, [kept, dropped]))
        assert points() == len(every_pair) + 1
        assert set(cp.telemetry._last_point) == set(every_pair) - old | {dropped}
    finally:
        cp.engine.dispose()


def test_a_rotated_file_with_unread_lines_is_not_closed_when_the_consumer_stalls(
    tmp_path: Path,
) -> None:
    """The descriptor fix above must not close a rotated file that still has lines: a consumer
    busy for longer than rotate-wait (a slow or retrying output) would lose them."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line-{i:05d}\n" for i in range(20_000)))
    doc = {
        "name": "stall",
        "input": {
            "files": {
                "path": str(log),
                "poll-interval": "10ms",
                "glob-interval": "10ms",
                "rotate-wait": "100ms",
                "read-bytes": 64,
            }
        },
        "output": {"discard": {}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    inp = pipe.engine(data_dir=str(tmp_path / "data")).parts.input

    async def scenario() -> list[str]:
        batches = inp.batches()
        got: list[str] = []

        async def pull() -> None:
            batch = await batches.__anext__()
            got.extend(e["_raw"] for e in batch.events)

        await pull()  # the start position
        await pull()  # the first lines
        log.rename(tmp_path / "app.log.1")  # rotated away with most lines unread
        deadline = time.monotonic() + 20
        while not any(f.gone_since for f in inp.files.values()):  # until a scan notices
            assert time.monotonic() < deadline, "the rotation was never noticed"
            await pull()
        assert len(got) < 20_000
        await asyncio.sleep(0.3)  # the fault: the consumer is busy for 3 x rotate-wait
        while inp.files:
            assert time.monotonic() < deadline, f"the rotated file was never closed: {len(got)}"
            await pull()
        await batches.aclose()
        await inp.close()
        return got

    got = asyncio.run(scenario())
    assert got == [f"line-{i:05d}" for i in range(20_000)]
