"""The ``echo``, ``exec`` and ``stdin`` inputs."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import orjson
import pytest

import pipenb

from support.cli import run_cli
from support.files import read_ndjson
from support.pipes import problems_of, write_pipe
from support.waiting import async_wait_until, stop_engine, wait_until


def make_pipe(inp: dict, out, *, errors=None, name: str = "misc") -> pipenb.Pipe:
    doc = {
        "name": name,
        "input": inp,
        "output": {"file": {"path": str(out), "batch": {"size": 1000, "timeout": "20ms"}}},
    }
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "20ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


# ------------------------------------------------------------------------------ echo


def test_echo_lines_become_raw_events(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    snap = make_pipe({"echo": {"lines": ["a", "b c"]}}, out).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"_raw": "a"}, {"_raw": "b c"}]
    assert snap["state"] == "finished"
    assert snap["input"]["events"] == 2
    assert snap["checkpoints"] == 0  # echo has no position


def test_echo_events_repeated_count_times_are_independent_copies(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    doc = f"""
name: e
input: {{echo: {{events: [{{a: 1, tags: [x]}}, {{b: null}}], count: 3}}}}
actions:
  - set: {{n: a + 1}}
output: {{file: {{path: "{out}"}}}}
"""
    pipenb.Pipe.from_yaml(doc).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"a": 1, "tags": ["x"], "n": 2}, {"b": None, "n": None}] * 3


def test_echo_with_an_interval_and_a_count_finishes(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = make_pipe({"echo": {"lines": ["tick"], "interval": "10ms", "count": 3}}, out)
    started = time.monotonic()
    snap = pipe.run(data_dir=data_dir)
    assert read_ndjson(out) == [{"_raw": "tick"}] * 3
    assert snap["state"] == "finished"
    assert time.monotonic() - started >= 0.02  # two intervals between three sends


def test_echo_with_an_interval_and_no_count_runs_until_stopped(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = make_pipe({"echo": {"lines": ["tick"], "interval": "10ms"}}, out)

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        assert engine.parts.input.finite is False
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: len(read_ndjson(out)) >= 5, what="five ticks")
        await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert engine.state == "stopped"
    assert len(read_ndjson(out)) == engine.metrics.input_events >= 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{lines: [a], events: [{}]}", "give either events: [...] (objects) or lines: [...]"),
        ("{lines: [a], count: 0}", "echo.count: Input should be greater than or equal to 1"),
        ("{events: [a]}", "echo.events.0: Input should be a valid dictionary"),
        ("{lines: [a], interval: often}", "expected a duration such as 250ms"),
    ],
)
def test_echo_validation(body, message):
    (p,) = problems_of(f"name: t\ninput: {{echo: {body}}}\noutput: {{discard: {{}}}}\n")
    assert message in p.message
    assert p.line == 2


# ------------------------------------------------------------------------------ exec


def test_exec_once_one_event_per_line(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    snap = make_pipe({"exec": {"command": "printf 'a\\nb c\\nlast'"}}, out).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"_raw": "a"}, {"_raw": "b c"}, {"_raw": "last"}]
    assert snap["state"] == "finished"
    assert snap["input"]["bytes"] == len("a\nb c\nlast")


def test_exec_a_list_runs_without_a_shell(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = make_pipe({"exec": {"command": ["echo", "$HOME", "; x"]}}, out)
    pipe.run(data_dir=data_dir)
    assert read_ndjson(out) == [{"_raw": "$HOME ; x"}]


def test_exec_json_format_env_and_cwd(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.ndjson").write_text('{"a": 1}\n{"a": 2}\n')
    cmd = 'cat data.ndjson; echo "{\\"who\\": \\"$WHO\\"}"'
    inp = {"exec": {"command": cmd, "format": "json", "cwd": str(work), "env": {"WHO": "me"}}}
    make_pipe(inp, out).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"a": 1}, {"a": 2}, {"who": "me"}]


def test_exec_per_run_event(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    inp = {"exec": {"command": "echo out; echo err >&2; exit 2", "events": "per-run"}}
    make_pipe(inp, out).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"_raw": "out\n", "_exit_code": 2, "_stderr": "err\n"}]


def test_a_failing_command_keeps_its_lines_and_reports_the_exit_status(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    errors = tmp_path / "errors.ndjson"
    inp = {"exec": {"command": "echo a; echo b; echo boom >&2; exit 3"}}
    snap = make_pipe(inp, out, errors=errors).run(data_dir=data_dir)
    assert snap["state"] == "finished"
    assert read_ndjson(out) == [{"_raw": "a"}, {"_raw": "b"}]
    (dead,) = read_ndjson(errors)
    assert dead == {
        "_raw": "boom\n",
        "_error": {"stage": "input", "message": "command exited with status 3"},
    }
    assert snap["input"]["errors"] == 1


def test_a_shell_command_that_does_not_exist_is_a_failed_run(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    errors = tmp_path / "errors.ndjson"
    make_pipe({"exec": {"command": "no-such-command-pipenb"}}, out, errors=errors).run(
        data_dir=data_dir
    )
    (dead,) = read_ndjson(errors)
    assert dead["_error"]["message"] == "command exited with status 127"
    assert "not found" in dead["_raw"]


def test_a_program_that_does_not_exist_fails_the_pipe(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = make_pipe({"exec": {"command": ["/no/such/program-pipenb"]}}, out)
    engine = pipe.engine(data_dir=data_dir)
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        asyncio.run(engine.run())
    assert "command not found: '/no/such/program-pipenb'" in str(info.value)
    assert engine.state == "failed"
    assert engine.snapshot()["error"] == str(info.value)


def test_exec_with_an_interval_runs_again_and_again(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    inp = {
        "exec": {
            "command": "echo run >> runs.txt; wc -l < runs.txt",
            "interval": "20ms",
            "cwd": str(tmp_path),
        }
    }
    pipe = make_pipe(inp, out)

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: len(read_ndjson(out)) >= 3, what="three runs")
        await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 60))
    runs = [int(e["_raw"].strip()) for e in read_ndjson(out)]
    assert len(runs) >= 3
    assert runs == list(range(1, len(runs) + 1))
    assert engine.state == "stopped"


def test_stopping_just_as_a_command_ends_stops_cleanly(tmp_path, data_dir, monkeypatch):
    pipe = make_pipe({"exec": {"command": "echo hi", "interval": "1h"}}, tmp_path / "o.ndjson")
    original = asyncio.subprocess.Process.communicate
    ended = None

    async def communicate_then_pause(self, input=None):
        # the window between the process ending and communicate() returning, held open
        await original(self, input)
        ended.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.subprocess.Process, "communicate", communicate_then_pause)

    async def scenario():
        nonlocal ended
        ended = asyncio.Event()
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await asyncio.wait_for(ended.wait(), 30)
        await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert engine.state == "stopped"


def test_exec_timeout_kills_a_program_run_directly(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    inp = {"exec": {"command": ["sleep", "5"], "events": "per-run", "timeout": "100ms"}}
    started = time.monotonic()
    make_pipe(inp, out).run(data_dir=data_dir)
    assert time.monotonic() - started < 4
    (ev,) = read_ndjson(out)
    assert ev["_exit_code"] != 0  # -9, or 255 by a race: see test_a_timed_out_command_...
    assert "killed after timeout of 0.1s" in ev["_stderr"]


def test_a_timed_out_command_reports_the_kill_signal(tmp_path, data_dir, monkeypatch):
    """Forces the losing order of the race: the child is dead (a zombie) before proc.kill()."""
    real_waitpid, real_killpg = os.waitpid, os.killpg
    released = threading.Event()

    def waitpid(pid, options):  # asyncio's child watcher waits here until the kill is done
        if options == 0:
            released.wait(30)
        return real_waitpid(pid, options)

    def killpg(pgid, sig):
        real_killpg(pgid, sig)

        def zombie() -> bool:
            with open(f"/proc/{pgid}/stat") as fh:
                return fh.read().rsplit(") ", 1)[1].startswith("Z")

        try:  # blocks the event loop on purpose: the child is dead before proc.kill()
            wait_until(zombie, 10, "the killed child to be a zombie", interval=0.001)
        finally:
            # let the watcher reap once the engine returns to its loop, after _kill_group
            asyncio.get_running_loop().call_soon(released.set)

    monkeypatch.setattr(os, "waitpid", waitpid)
    monkeypatch.setattr(os, "killpg", killpg)
    out = tmp_path / "out.ndjson"
    inp = {"exec": {"command": ["sleep", "5"], "events": "per-run", "timeout": "100ms"}}
    make_pipe(inp, out).run(data_dir=data_dir)
    (ev,) = read_ndjson(out)
    assert ev["_exit_code"] == -9


def test_exec_timeout_bounds_a_shell_command(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    inp = {"exec": {"command": "sleep 1.5", "events": "per-run", "timeout": "100ms"}}
    started = time.monotonic()
    make_pipe(inp, out).run(data_dir=data_dir)
    assert time.monotonic() - started < 1.2


def test_exec_can_be_disabled(tmp_path, data_dir):
    pipe = make_pipe({"exec": {"command": "echo hi"}}, tmp_path / "out.ndjson")
    assert pipe.spec.capabilities == {"exec"}
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        pipe.engine(data_dir=data_dir, allow=frozenset({"script"}))
    assert "uses exec, which is disabled here" in str(info.value)


def test_exec_validation():
    doc = "name: t\ninput: {exec: {command: [], events: each}}\noutput: {discard: {}}\n"
    messages = sorted(p.message for p in problems_of(doc))
    assert messages == [
        "exec.command: command must be a non-empty string or list of strings",
        "exec.events: Input should be 'per-line' or 'per-run'",
    ]


# ------------------------------------------------------------------------------ stdin


def test_stdin_lines_through_the_cli(tmp_path):
    pipe = write_pipe(
        tmp_path,
        """
        name: from-stdin
        input: {stdin: {}}
        actions:
          - filter: _raw != "skip"
        output: {print: {}}
        """,
    )
    res = run_cli(
        "run", pipe, "--data-dir", tmp_path / "d", "-q", input="one\nskip\ntwo\nno newline"
    )
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(x) for x in res.stdout.splitlines()] == [
        {"_raw": "one"},
        {"_raw": "two"},
        {"_raw": "no newline"},
    ]


def test_stdin_json_with_a_bad_line_through_the_cli(tmp_path):
    errors = tmp_path / "errors.ndjson"
    out = tmp_path / "out.ndjson"
    pipe = write_pipe(
        tmp_path,
        f"""
        name: from-stdin-json
        input: {{stdin: {{format: json}}}}
        output: {{file: {{path: "{out}"}}}}
        errors: {{file: {{path: "{errors}"}}}}
        """,
    )
    stdin = "".join(f'{{"i": {i}}}\n' for i in range(1000)) + "oops\n" + '{"i": 1000}\n'
    res = run_cli("run", pipe, "--data-dir", tmp_path / "d", "--json", input=stdin)
    assert res.returncode == 0, res.stderr
    assert [e["i"] for e in read_ndjson(out)] == list(range(1001))
    assert [e["_raw"] for e in read_ndjson(errors)] == ["oops"]
    metrics = orjson.loads(res.stderr.strip().splitlines()[-1])
    assert metrics["input"]["events"] == 1001
    assert metrics["input"]["errors"] == 1
    assert metrics["state"] == "finished"


def test_stdin_empty_input_finishes(tmp_path):
    pipe = write_pipe(tmp_path, "name: s\ninput: {stdin: {}}\noutput: {print: {}}\n")
    res = run_cli("run", pipe, "--data-dir", tmp_path / "d", "-q", input="")
    assert res.returncode == 0
    assert res.stdout == ""
