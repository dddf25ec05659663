"""The engine's fast path and ``workers:``: the same output as event batch by event batch.

A ``files`` -> ``file`` (NDJSON) pipe of per-event actions runs on the fast path
(``pipenb.engine.chunks``), in one process or split over worker processes. Properties:

- on the fuzzers' pipes and event streams (written as NDJSON lines, with invalid lines mixed in,
  read in small chunks so there are many), the batch path, the fast path with one worker and
  with two write the same bytes, the same dead letters, and count every stage the same;
- on the loghub examples, ``pipenb run --workers 2`` writes exactly what one worker writes;
- SIGKILL during a parallel run, then a resume, loses nothing and repeats at most the chunks that
  were in flight (counted by a sequence field);
- a pipe with a stateful action runs in one process and says why, also in ``pipenb check``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from reliability.test_fuzz_engine import (  # the fuzzers' pipes and event streams
    ACTIONS,
    FUZZ,
    RAW_LINES,
    event_streams,
    unclocked,
    volatile,
)

import pipenb
from pipenb.engine.checkpoints import MemoryCheckpointStore

from support import REPO_ROOT as ROOT
from support.loghub import EXAMPLES, SAMPLES, log_path
from support.waiting import async_wait_until, wait_until


def ndjson_line(event: dict) -> str:
    """The event as one JSON line; NaN and 70-bit integers too (the stdlib writes them: orjson
    then refuses NaN, a reject, and reads the big integers exactly on the slow path)."""
    return json.dumps(event, ensure_ascii=False)


#: JSON lines cut short: their parse errors give a position at the line's end, which a newline
#: read with the line moves (the fast path reads each piece a line at a time, "\n" included)
CUT_SHORT = [
    '{"level": "ERROR", "n":',
    '{"msg": "no end',
    '{"big": 123456789012345678901234',  # the stdlib's parser, exact for long integers
]


@st.composite
def file_pipes(draw: st.DrawFn) -> tuple[dict, list[str]]:
    """A fuzzer pipe reading generated lines from a file, writing NDJSON to one file."""
    events = draw(event_streams)
    lines = [ndjson_line(e) for e in events]
    for raw in draw(st.lists(st.sampled_from(RAW_LINES + CUT_SHORT), max_size=3)):
        lines.insert(draw(st.integers(0, len(lines))), raw)  # invalid JSON, arrays, blanks
    read = draw(st.sampled_from([64, 256, 1 << 20]))  # small reads: many chunks
    doc = {
        "name": "fuzz-files",
        "input": {"files": {"path": "IN", "follow": False, "format": "json", "read-bytes": read}},
        "actions": draw(st.lists(ACTIONS, max_size=4)),
        "output": {"file": {"path": "OUT/out.ndjson"}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    return doc, lines


def run(doc: dict, src: Path, out_dir: Path, **engine: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["input"]["files"]["path"] = str(src)
    for section in ("output", "errors"):
        doc[section]["file"]["path"] = doc[section]["file"]["path"].replace("OUT", str(out_dir))
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1 << 20)
    pipe = pipenb.Pipe.from_yaml(text)
    from pipenb.engine.base import RunContext
    from pipenb.engine.runtime import Engine

    ctx = RunContext(pipe=pipe.name, data_dir=str(out_dir), values=pipe.spec.values)
    eng = Engine(pipe.spec, ctx, checkpoints=MemoryCheckpointStore(), **engine)

    async def go() -> None:
        await asyncio.wait_for(eng.run(), 30)

    asyncio.run(go())
    assert eng.state == "finished", eng.error
    snap = eng.snapshot()
    return {
        "out": (out_dir / "out.ndjson").read_bytes() if (out_dir / "out.ndjson").exists() else b"",
        "errors": _errors(out_dir / "errors.ndjson"),
        "counts": (snap["input"], snap["actions"], snap["output"], snap["dead_letters"]),
        "workers": eng.workers,
        "why": eng.workers_reason,
        "fast": eng._fast is not None,
        "spec": pipe.spec,
        "chunks": dict(eng.worker_chunks),
    }


def three_ways(doc: dict, src: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """``run`` on the batch path (``batches``), the fast path (``fast``) and two workers
    (``two``), each in a directory of its own."""
    outs = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {}), ("two", {"workers": 2})):
        d = tmp_path / label
        d.mkdir()
        outs[label] = run(doc, src, d, **opts)
    return outs


def _errors(path: Path) -> list[Any]:
    """Dead letters, their messages normalised: the event is what must agree."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _counts(c: tuple) -> tuple:
    inp, actions, out, dead = c
    inp = {k: v for k, v in inp.items() if k not in ("lag",)}
    out = {k: v for k, v in out.items() if k not in ("latency_ms", "batches")}
    return inp, actions, out, dead


@FUZZ
@given(case=file_pipes())
def test_batch_path_fast_path_and_workers_agree(case, tmp_path_factory):
    doc, lines = case
    work = tmp_path_factory.mktemp("par")
    src = work / "in.ndjson"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass")
    results = three_ways(doc, src, work)
    if volatile(results["batches"]["spec"]):
        return
    base = results["batches"]
    assert not base["fast"]
    clocked = any("aggregate" in a for a in doc["actions"])  # windows stamped from the clock
    for label in ("fast", "two"):
        r = results[label]
        if clocked:
            assert unclocked(_events(r["out"])) == unclocked(_events(base["out"])), label
            assert unclocked(r["errors"]) == unclocked(base["errors"]), label
        else:
            assert r["out"] == base["out"], label
            assert r["errors"] == base["errors"], label
        assert _counts(r["counts"]) == _counts(base["counts"]), label
    if results["fast"]["fast"]:  # per-event actions only: the run really split, or says why
        w = results["two"]
        assert w["workers"] == 2 or "sample without key" in w["why"], w["why"]


def test_lines_cut_short_are_the_same_dead_letters_every_way(tmp_path: Path):
    """A dead letter's message is the line's own parse error, however the line was read."""
    lines = [*CUT_SHORT, '{"level": "ERROR"}', "", *CUT_SHORT]  # (the last one ends the file)
    src = tmp_path / "in.ndjson"
    src.write_text("\n".join(lines), encoding="utf-8")
    doc = {
        "name": "cut-short",
        "input": {"files": {"path": "IN", "follow": False, "format": "json"}},
        "actions": [{"add": {"seen": True}}],
        "output": {"file": {"path": "OUT/out.ndjson"}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    results = three_ways(doc, src, tmp_path)
    base = results["batches"]
    messages = [e["_error"]["message"] for e in base["errors"]]
    assert len(messages) == 2 * len(CUT_SHORT), messages
    assert "line 1 column 24 (char 23)" in messages[0], messages[0]
    for label in ("fast", "two"):
        assert results[label]["fast"], label
        assert results[label]["out"] == base["out"] == b'{"level":"ERROR","seen":true}\n'
        assert results[label]["errors"] == base["errors"], label
        assert _counts(results[label]["counts"]) == _counts(base["counts"]), label


def _events(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_the_fast_path_is_taken_for_the_benchmark_shapes(tmp_path: Path):
    """W1 and W2 (bench/pipes) on the fast path, one and two workers, same output as batches."""
    src = tmp_path / "in.log"
    src.write_text(
        "".join(
            f"2026-11-23T10:00:00.{i:03d}Z {('INFO', 'WARN', 'ERROR')[i % 3]} web-{i % 4} cart "
            f'"message {i}" latency_ms={i} status=200\n'
            for i in range(3000)
        )
    )
    doc = {
        "name": "w2",
        "input": {"files": {"path": "IN", "follow": False, "read-bytes": 4096}},
        "actions": [
            {
                "extract": {
                    "field": "_raw",
                    "pattern": r"^(?P<ts>\S+) (?P<level>\S+) (?P<host>\S+) (?P<service>\S+) "
                    r'"(?P<msg>[^"]*)" (?P<rest>.*)$',
                    "remove": True,
                }
            },
            {"filter": 'level == "ERROR"'},
        ],
        "output": {"file": {"path": "OUT/out.ndjson"}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    outs = three_ways(doc, src, tmp_path)
    assert outs["fast"]["fast"] and outs["two"]["workers"] == 2
    assert outs["fast"]["out"] == outs["batches"]["out"] == outs["two"]["out"]
    assert outs["two"]["out"].count(b"\n") == 1000
    assert _counts(outs["two"]["counts"]) == _counts(outs["batches"]["counts"])


AWKWARD = (
    b"\xef\xbb\xbf" + b'{"a": 1}\r\n'  # a byte order mark, a CRLF line
    + b'{"long": "' + b"x" * 300 + b'"}\n'  # past max-line-bytes: cut into pieces
    + b'{"big": 123456789012345678901234567890}\n'
    + b'{"bad": "\xff"}\n'  # invalid UTF-8
    + b"\n"
    + b'{"n": 2}\n' * 40
    + b'{"last": true}'  # no newline at the end
)  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "lines"])
@pytest.mark.parametrize("read", [16, 64, 1 << 20])
def test_the_fast_paths_read_buffer_reads_awkward_files_as_the_batch_path_does(
    tmp_path: Path, fmt: str, read: int
):
    """The fast path reads into one buffer, cut at its last newline in place
    (``FilesInput._take``); the batch path joins bytes. Partial lines across reads, an
    over-long line, CRLF, a BOM, bad UTF-8 and a last line without a newline: the same."""
    src = tmp_path / "in.ndjson"
    src.write_bytes(AWKWARD)
    files = {"path": "IN", "follow": False, "format": fmt, "read-bytes": read}
    doc = {
        "name": "awkward",
        "input": {"files": {**files, "max-line-bytes": 128}},
        "actions": [{"add": {"seen": True}}],
        "output": {"file": {"path": "OUT/out.ndjson"}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    outs = three_ways(doc, src, tmp_path)
    base = outs["batches"]
    assert outs["fast"]["fast"] and not base["fast"]
    assert base["out"].count(b"\n") >= 43  # what came through, for both to agree on
    # the workers read the chunks from the file themselves
    assert outs["two"]["chunks"]["read"] > 0 and outs["two"]["chunks"]["changed"] == 0
    for label in ("fast", "two"):
        assert outs[label]["out"] == base["out"], label
        assert outs[label]["errors"] == base["errors"], label
        assert _counts(outs[label]["counts"]) == _counts(base["counts"]), label


# ------------------------------------------------------------------------------ processes


def pipenb_run(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "pipenb", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        **kw,
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.pipe)
def test_loghub_examples_in_parallel_write_what_one_worker_writes(tmp_path: Path, sample):
    outs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"{workers}.ndjson"
        proc = pipenb_run(
            "run",
            str(EXAMPLES / f"{sample.pipe}.yml"),
            "--param",
            f"path={log_path(sample)}",
            "--param",
            f"out={out}",
            "--data-dir",
            str(tmp_path / f"state-{workers}"),
            "--workers",
            workers,
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        outs[workers] = out.read_bytes()
    assert outs["1"] and outs["2"] == outs["1"]


def test_sigkill_during_a_parallel_run_then_resume_loses_nothing(tmp_path: Path):
    n = 300_000
    src = tmp_path / "in.ndjson"
    with src.open("wb") as fh:
        for i in range(n):
            fh.write(
                orjson.dumps({"seq": i, "level": "WARN" if i % 2 else "INFO", "pad": "x" * 40})
            )
            fh.write(b"\n")
    out = tmp_path / "out.ndjson"
    read = 64 * 1024
    pipe = tmp_path / "p.yml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "killme",
                "workers": 2,
                "input": {
                    "files": {
                        "path": str(src),
                        "follow": False,
                        "format": "json",
                        "read-bytes": read,
                    }
                },
                "actions": [{"add": {"env": "prod"}}],
                "output": {"file": {"path": str(out)}},
            }
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(tmp_path / "st")]
    proc = subprocess.Popen(
        [*cmd, "-q"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it mid-way: after some chunks were written, long before the end
        wait_until(lambda: out.exists() and out.stat().st_size > 2 * read, timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers
    finally:
        proc.wait(timeout=30)
    written_before = out.read_bytes().count(b"\n")
    assert 0 < written_before < n, "the run was not cut short: nothing to resume"
    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    seqs = Counter(orjson.loads(line)["seq"] for line in out.read_bytes().splitlines() if line)
    assert set(seqs) == set(range(n))  # nothing lost
    dup = sum(c - 1 for c in seqs.values())
    assert max(seqs.values()) <= 2
    per_chunk = read // len(b'{"seq":299999,"level":"WARN","pad":"' + b"x" * 40 + b'"}\n') + 1
    # at most the chunks in flight (two per worker) are written again
    assert dup <= 2 * 2 * per_chunk, dup


def test_a_stateful_pipe_runs_in_one_process_and_check_says_why(tmp_path: Path):
    src = tmp_path / "in.ndjson"
    src.write_text("".join(f'{{"k": {i % 5}}}\n' for i in range(50)))
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "stateful",
        "workers": "auto",
        "input": {"files": {"path": str(src), "follow": False, "format": "json"}},
        "actions": [{"dedupe": ["k"]}],
        "output": {"file": {"path": str(out)}},
    }
    pipe_file = tmp_path / "p.yml"
    pipe_file.write_text(yaml.safe_dump(doc))
    check = pipenb_run("check", str(pipe_file))
    assert check.returncode == 0, check.stderr
    assert "workers: 1, not auto: action 0:dedupe keeps state across events" in check.stdout
    check_json = pipenb_run("check", "--json", str(pipe_file))
    assert "dedupe keeps state" in json.loads(check_json.stdout)[0]["workers"]

    pipe = pipenb.Pipe.from_yaml(pipe_file.read_text())
    eng = pipe.engine(data_dir=str(tmp_path / "st"), workers=2)
    asyncio.run(eng.run())
    assert eng.state == "finished"
    assert eng.workers == 1 and "dedupe keeps state" in eng.workers_reason
    assert [orjson.loads(x)["k"] for x in out.read_bytes().splitlines()] == [0, 1, 2, 3, 4]


def test_a_per_event_pipe_gets_its_workers_and_check_says_how_many(tmp_path: Path):
    pipe_file = tmp_path / "p.yml"
    pipe_file.write_text(
        yaml.safe_dump(
            {
                "name": "split",
                "workers": 3,
                "input": {"files": {"path": str(tmp_path / "*.log"), "follow": False}},
                "actions": [{"filter": '_raw != ""'}],
                "output": {"file": {"path": str(tmp_path / "out.ndjson")}},
            }
        )
    )
    check = pipenb_run("check", str(pipe_file))
    assert check.returncode == 0, check.stderr
    assert "workers: 3)" in check.stdout


@pytest.mark.parametrize("bad", [0, 257, "all", True, 1.5])
def test_workers_must_be_auto_or_a_number(tmp_path: Path, bad: Any):
    text = yaml.safe_dump(
        {
            "name": "bad",
            "workers": bad,
            "input": {"files": {"path": "x.log"}},
            "output": {"file": {"path": "out.ndjson"}},
        }
    )
    with pytest.raises(pipenb.PipeSyntaxError) as err:
        pipenb.Pipe.from_yaml(text)
    assert "workers must be auto or a number from 1 to 256" in str(err.value)


def test_run_workers_flag_rejects_nonsense(tmp_path: Path):
    proc = pipenb_run("run", "nothing.yml", "--workers", "0")
    assert proc.returncode == 2
    assert "use auto or a number from 1 to 256" in proc.stderr


def test_a_tap_on_a_running_fast_path_pipe_sees_its_stages(tmp_path: Path):
    """Taps (agents' preview of a running pipe) see the input, each action and the output on
    the fast path too; the pipe's own output loses nothing while tapped."""
    src = tmp_path / "in.log"
    src.write_text("".join(f"{i} {'ERROR' if i % 2 else 'INFO'}\n" for i in range(10)))
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "tapped",
        "input": {"files": {"path": str(src), "poll-interval": "50ms"}},
        "actions": [
            {"extract": {"pattern": r"^(?P<n>\d+) (?P<level>\w+)$", "remove": True}},
            {"filter": 'level == "ERROR"'},
        ],
        "output": {"file": {"path": str(out), "batch": {"timeout": "50ms"}}},
    }
    pipe = pipenb.Pipe.from_yaml(yaml.safe_dump(doc))
    eng = pipe.engine(data_dir=str(tmp_path / "st"), checkpoints=MemoryCheckpointStore())

    async def go() -> tuple[list, list, list]:
        task = asyncio.create_task(eng.run())
        await async_wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") == 5)
        assert eng._fast is not None  # the fast path runs this pipe
        taps = [eng.capture("input", 2), eng.capture(0, 2), eng.capture("output", 2)]
        with src.open("a") as fh:
            fh.write("".join(f"{i} {'ERROR' if i % 2 else 'INFO'}\n" for i in range(10, 20)))
        got = [await asyncio.wait_for(t, 20) for t in taps]
        await async_wait_until(lambda: out.read_bytes().count(b"\n") == 10)
        eng.stop()
        await asyncio.wait_for(task, 20)
        return got[0], got[1], got[2]

    inp, extracted, output = asyncio.run(go())
    assert inp == [{"_raw": "10 INFO"}, {"_raw": "11 ERROR"}]
    assert extracted == [{"n": "10", "level": "INFO"}, {"n": "11", "level": "ERROR"}]
    assert output == [{"n": "11", "level": "ERROR"}, {"n": "13", "level": "ERROR"}]
    assert [orjson.loads(x)["n"] for x in out.read_bytes().splitlines()] == [
        str(i) for i in range(1, 20, 2)
    ]


def test_an_agent_bounds_a_pipes_workers():
    """``pipenb agent --max-pipe-workers N`` caps ``workers:`` (default 1: one process a pipe)."""
    from pipenb.engine.chunks import bounded_workers, resolve_workers

    assert bounded_workers("auto", 1) == 1
    assert bounded_workers(8, 3) == 3
    assert bounded_workers(2, 16) == 2
    assert bounded_workers("auto", 64) == resolve_workers("auto")
    assert bounded_workers(4, None) == 1  # an older agent's job without the setting


def test_ctrl_c_stops_a_parallel_run_cleanly(tmp_path: Path):
    """SIGINT to the whole process group (Ctrl-C in a terminal) reaches the workers too, here
    while chunks are in flight: they leave it to the pipe's process, which stops reading,
    writes what the workers had and exits 0; the output is the input's beginning, in order."""
    n = 300_000
    src = tmp_path / "in.ndjson"
    with src.open("wb") as fh:
        for i in range(n):
            fh.write(b'{"seq": %d, "pad": "%s"}\n' % (i, b"x" * 40))
    out = tmp_path / "out.ndjson"
    pipe = tmp_path / "p.yml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "tail",
                "workers": 2,
                "input": {"files": {"path": str(src), "format": "json", "read-bytes": 64 * 1024}},
                "output": {"file": {"path": str(out)}},
            }
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(tmp_path / "st")]
    proc = subprocess.Popen(
        [*cmd, "--json"], env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 256 * 1024, timeout=60)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert json.loads(err.strip().splitlines()[-1])["state"] == "stopped"
    seqs = [orjson.loads(x)["seq"] for x in out.read_bytes().splitlines()]
    assert 0 < len(seqs) < n, "the run was not interrupted mid-way"
    assert seqs == list(range(len(seqs)))
