"""The engine: delivery (checkpoints after writes, retries, crash and resume), batching, stop and
drain, back-pressure, and per-stage metrics."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import pipenb
from pipenb.engine.base import Batch, Input, Output, RunContext
from pipenb.engine.build import build
from pipenb.engine.checkpoints import MemoryCheckpointStore, checkpoint_path

from support.cli import cli_env, sigkill_mid_run
from support.files import read_complete_lines, read_ndjson
from support.waiting import async_wait_until


class ListInput(Input):
    """Yields the given batches; the position after batch i is i + 1. Resumable."""

    def __init__(self, batches: list[list[dict]], *, then_wait: bool = False, fail: bool = False):
        super().__init__(None, RunContext())
        self.finite = not then_wait
        self._batches = batches
        self.then_wait = then_wait
        self.fail = fail
        self.restored = None
        self.yielded = 0
        self.closed = False

    def restore(self, position):
        self.restored = position

    async def batches(self):
        for i in range(self.restored or 0, len(self._batches)):
            self.yielded += 1
            yield Batch([dict(e) for e in self._batches[i]], i + 1, 10)
        if self.fail:
            raise ValueError("the source went away")
        if self.then_wait:
            await asyncio.Event().wait()  # a live source with nothing more to say

    async def close(self):
        self.closed = True


class EndlessInput(Input):
    """One single-event batch after another, as fast as the engine takes them."""

    finite = False

    def __init__(self):
        super().__init__(None, RunContext())
        self.yielded = 0

    async def batches(self):
        while True:
            self.yielded += 1
            yield Batch([{"n": self.yielded}], self.yielded)


class FlakyOutput(Output):
    """Fails ``fail_writes`` writes (and ``fail_opens`` opens) with OSError, then works."""

    def __init__(self, fail_writes: int = 0, fail_opens: int = 0, *, always: bool = False):
        super().__init__(None, RunContext())
        self.fail_writes = fail_writes
        self.fail_opens = fail_opens
        self.always = always
        self.written: list[dict] = []
        self.writes: list[int] = []
        self.attempts = 0
        self.closed = False

    async def open(self):
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise OSError("cannot open yet")

    async def write(self, events):
        self.attempts += 1
        if self.always or self.fail_writes > 0:
            self.fail_writes -= 1
            raise OSError("disk on fire")
        self.written.extend(events)
        self.writes.append(len(events))
        return []

    async def close(self):
        self.closed = True


class BlockingOutput(Output):
    def __init__(self):
        super().__init__(None, RunContext())
        self.release = asyncio.Event()
        self.calls = 0
        self.written: list[dict] = []

    async def write(self, events):
        self.calls += 1
        await self.release.wait()
        self.written.extend(events)
        return []


class RecordingStore(MemoryCheckpointStore):
    """Remembers, at each save, how many events the output had written by then."""

    def __init__(self, output: FlakyOutput, position=None):
        super().__init__(position)
        self.output = output
        self.log: list[tuple[object, int]] = []

    def save(self, position):
        self.log.append((position, len(self.output.written)))
        super().save(position)


def engine_with(inp: Input, out: Output, *, size=1000, timeout="10ms", store=None, **kw):
    doc = (
        "name: rt\ninput: {echo: {lines: [unused]}}\n"
        "actions:\n  - add: {seen: true}\n"
        f"output: {{discard: {{batch: {{size: {size}, timeout: {timeout}}}}}}}\n"
    )
    spec = pipenb.Pipe.from_yaml(doc).spec
    ctx = RunContext(pipe="rt")
    parts = build(spec, ctx)
    parts.input, parts.output = inp, out
    return pipenb.Engine(spec, ctx, checkpoints=store or MemoryCheckpointStore(), parts=parts, **kw)


def numbered(n_batches: int, per_batch: int) -> list[list[dict]]:
    return [[{"i": b * per_batch + j} for j in range(per_batch)] for b in range(n_batches)]


# ------------------------------------------------------------------------------ delivery


def test_checkpoints_are_saved_only_after_the_output_wrote_and_failed_writes_are_retried():
    batches = numbered(8, 5)
    out = FlakyOutput(fail_writes=3)
    store = RecordingStore(out)
    engine = engine_with(ListInput(batches), out, size=10, store=store)
    asyncio.run(asyncio.wait_for(engine.run(), 60))

    assert [e["i"] for e in out.written] == list(range(40))  # nothing lost, nothing twice
    assert all(e["seen"] is True for e in out.written)
    assert engine.metrics.output.retries == 3
    assert engine.snapshot()["output"]["retries"] == 3
    assert out.attempts == len(out.writes) + 3
    assert store.position == 8
    assert store.log, "no checkpoint was saved"
    for position, written in store.log:
        # every event before the saved position had been written when it was saved
        assert sum(len(b) for b in batches[:position]) <= written
    assert engine.snapshot()["checkpoints"] == len(store.log)
    assert engine.state == "finished"
    assert out.closed


def test_an_output_that_cannot_open_yet_is_retried():
    out = FlakyOutput(fail_opens=2)
    engine = engine_with(ListInput(numbered(1, 3)), out)
    asyncio.run(asyncio.wait_for(engine.run(), 60))
    assert len(out.written) == 3
    assert engine.metrics.output.retries == 2


def test_a_restart_resumes_from_the_saved_position():
    batches = numbered(4, 2)
    store = MemoryCheckpointStore(position=3)
    out = FlakyOutput()
    inp = ListInput(batches)
    engine = engine_with(inp, out, store=store)
    asyncio.run(asyncio.wait_for(engine.run(), 60))
    assert inp.restored == 3
    assert [e["i"] for e in out.written] == [6, 7]
    assert store.position == 4


def test_a_failing_input_fails_the_pipe_after_writing_what_it_read():
    out = FlakyOutput()
    store = RecordingStore(out)
    inp = ListInput(numbered(2, 3), fail=True)
    engine = engine_with(inp, out, store=store)
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        asyncio.run(asyncio.wait_for(engine.run(), 60))
    assert str(info.value) == "input echo: the source went away"
    assert engine.state == "failed"
    assert engine.snapshot()["error"] == "input echo: the source went away"
    assert [e["i"] for e in out.written] == list(range(6))
    assert store.position == 2
    assert inp.closed and out.closed


def test_stopping_while_the_output_keeps_failing_gives_up_without_a_checkpoint():
    out = FlakyOutput(always=True)
    store = RecordingStore(out)
    engine = engine_with(
        ListInput(numbered(1, 3), then_wait=True), out, store=store, drain_timeout=0.3
    )

    async def scenario():
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.metrics.output.retries >= 1, what="a retry")
        engine.stop()
        with pytest.raises(pipenb.PipeRuntimeError) as info:
            await asyncio.wait_for(task, 30)
        return info.value

    err = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "output could not write while stopping: disk on fire" in str(err)
    assert store.log == []  # the input position did not move past unwritten events
    assert store.position is None
    assert engine.state == "failed"


def test_a_slow_output_holds_the_input_back():
    inp = EndlessInput()
    out = BlockingOutput()
    engine = engine_with(inp, out, size=1, queue_batches=2)

    async def scenario():
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: out.calls == 1, what="the first write")
        await async_wait_until(lambda: inp.yielded >= 3, what="the queue to fill")
        for _ in range(200):  # give the reader every chance to run ahead if it could
            await asyncio.sleep(0)  # poll: yield to the reader, no waiting on time
        held = inp.yielded
        out.release.set()
        await async_wait_until(lambda: len(out.written) >= 50, what="the flow to resume")
        engine.stop()
        await asyncio.wait_for(task, 30)
        return held

    held = asyncio.run(asyncio.wait_for(scenario(), 60))
    # one batch being written and two queued: the reader waits for room before it reads the
    # next batch, so it holds none while it waits
    assert held == 3
    assert [e["n"] for e in out.written] == list(range(1, len(out.written) + 1))


# ------------------------------------------------------------------------------ batching


def test_batches_are_written_once_batch_size_events_wait():
    out = FlakyOutput()
    engine = engine_with(ListInput(numbered(10, 2)), out, size=4, timeout="1h")
    asyncio.run(asyncio.wait_for(engine.run(), 60))
    assert [e["i"] for e in out.written] == list(range(20))
    assert out.writes == [4, 4, 4, 4, 4]  # a write as soon as 4 events wait
    assert engine.metrics.output.batches == 5


def test_no_write_is_bigger_than_batch_size():
    out = FlakyOutput()
    store = RecordingStore(out)
    engine = engine_with(ListInput(numbered(2, 50)), out, size=10, timeout="1h", store=store)
    asyncio.run(asyncio.wait_for(engine.run(), 60))
    assert out.writes == [10] * 10
    assert [e["i"] for e in out.written] == list(range(100))
    # the position after an input batch is saved only once all of its writes are done
    assert store.log == [(1, 50), (2, 100)]


def test_a_partial_batch_is_written_after_batch_timeout():
    out = FlakyOutput()
    engine = engine_with(ListInput(numbered(1, 2), then_wait=True), out, size=1000, timeout="50ms")

    async def scenario():
        task = asyncio.create_task(engine.run())
        # the input stays open and the batch is far from full: only the timeout can flush it
        await async_wait_until(lambda: len(out.written) == 2, what="the timeout flush")
        state = engine.state
        engine.stop()
        await asyncio.wait_for(task, 30)
        return state

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == "running"
    assert out.writes == [2]


def test_stop_drains_what_was_read_and_saves_its_position():
    out = FlakyOutput()
    store = RecordingStore(out)
    engine = engine_with(
        ListInput(numbered(2, 3), then_wait=True), out, size=1000, timeout="1h", store=store
    )

    async def scenario():
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.metrics.input_events == 6, what="the reads")
        assert out.written == []  # neither size nor timeout reached
        engine.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [e["i"] for e in out.written] == list(range(6))
    assert store.log == [(2, 6)]
    assert engine.state == "stopped"
    assert engine.snapshot()["state"] == "stopped"


# ------------------------------------------------------------------------------ metrics


def test_snapshot_has_per_stage_metrics(tmp_path, data_dir):
    errors = tmp_path / "errors.ndjson"
    out = tmp_path / "out.ndjson"
    doc = f"""
name: metrics
input:
  echo:
    events: [{{n: "1"}}, {{n: "x"}}, {{n: "20"}}, {{n: "3"}}, {{}}, {{n: "40"}}]
actions:
  - set: {{v: int(n)}}
  - filter: v < 10
  - add: {{small: true}}
output: {{file: {{path: "{out}"}}}}
errors: {{file: {{path: "{errors}"}}}}
"""
    pipe = pipenb.Pipe.from_yaml(doc)
    engine = pipe.engine(data_dir=data_dir)
    asyncio.run(engine.run())
    snap = engine.snapshot()
    assert snap["pipe"] == "metrics"
    assert snap["state"] == "finished"
    assert snap["error"] is None
    assert snap["input"] == {"name": "echo", "events": 6, "bytes": 0, "errors": 0, "lag": None}
    assert snap["actions"] == [
        {"stage": "0:set", "in": 6, "out": 5, "dropped": 0, "errors": 1},
        {"stage": "1:filter", "in": 5, "out": 2, "dropped": 3, "errors": 0},
        {"stage": "2:add", "in": 2, "out": 2, "dropped": 0, "errors": 0},
    ]
    assert {k: v for k, v in snap["output"].items() if k != "latency_ms"} == {
        "name": "file",
        "events": 2,
        "batches": 1,
        "errors": 0,
        "retries": 0,
    }
    assert snap["output"]["latency_ms"] >= 0
    assert snap["dead_letters"] == 1
    assert snap["dead_letters_dropped"] == 0
    assert snap["uptime_s"] >= 0
    assert read_ndjson(out) == [
        {"n": "1", "v": 1, "small": True},
        {"n": "3", "v": 3, "small": True},
    ]
    assert read_ndjson(errors) == [
        {"n": "x", "_error": {"stage": "0:set", "message": "int() cannot convert 'x'"}}
    ]


# ------------------------------------------------------------------------------ crash and resume


def test_a_pipe_killed_with_sigkill_resumes_from_its_checkpoint_without_losing_a_line(tmp_path):
    n_lines = 200_000
    batch_size = 500
    log = tmp_path / "input.log"
    # fixed 16-byte lines and reads of 100 lines: every input batch is whole lines
    log.write_text("".join(f"line-{i:010d}\n" for i in range(n_lines)))
    out = tmp_path / "out.ndjson"
    data = tmp_path / "data"
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(
        f"""
name: crashy
input: {{files: {{path: "{log}", follow: false, read-bytes: 1600}}}}
output: {{file: {{path: "{out}", batch: {{size: {batch_size}, timeout: 1s}}}}}}
"""
    )
    sigkill_mid_run(pipe, data, lambda: len(read_complete_lines(out)) >= 5_000)
    first = read_complete_lines(out)
    assert 0 < len(first) < n_lines
    # SIGKILL can cut a write short at a page boundary. The file output then appends the replay
    # to the torn line (see test_outputs.py::test_file_output_after_a_torn_write...); cut the torn
    # tail here, as the output should, so this test checks the checkpoint and the replay.
    data_bytes = out.read_bytes()
    if not data_bytes.endswith(b"\n"):
        os.truncate(out, data_bytes.rfind(b"\n") + 1)
    assert Path(checkpoint_path(str(data), "crashy")).exists()

    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data)]
    res = subprocess.run(cmd, env=cli_env(), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert b"resuming crashy from checkpoint" in res.stderr

    got = [orjson.loads(x)["_raw"] for x in read_complete_lines(out)]
    counts = collections.Counter(got)
    expected = {f"line-{i:010d}" for i in range(n_lines)}
    assert set(counts) == expected  # every input line arrived, nothing else did
    duplicates = len(got) - len(counts)
    assert duplicates <= batch_size
    assert max(counts.values()) <= 2


# ------------------------------------------------------------------------------ control


def test_a_stop_before_the_engine_started_is_not_lost(data_dir):
    pipe = pipenb.Pipe.from_yaml(
        "name: s\ninput: {echo: {lines: [a], interval: 10ms}}\noutput: {discard: {}}\n"
    )

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        engine.stop()
        try:
            await asyncio.wait_for(task, 2)
        except asyncio.TimeoutError:
            return None
        return engine

    engine = asyncio.run(scenario())
    assert engine is not None, "the engine did not stop"
    assert engine.state == "stopped"


def test_pipe_run_works_inside_a_running_event_loop(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipenb.Pipe.from_yaml(
        f'name: nb\ninput: {{echo: {{lines: [a]}}}}\noutput: {{file: {{path: "{out}"}}}}\n'
    )

    async def notebook_cell():
        return pipe.run(data_dir=data_dir)

    snap = asyncio.run(notebook_cell())
    assert snap["state"] == "finished"
    assert read_ndjson(out) == [{"_raw": "a"}]
