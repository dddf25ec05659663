"""``stdin`` on the engine's fast path: ``cat in | pipenb run pipe.yml > out`` as fast as a file.

The ``stdin`` input hands the fast path its bytes as chunks of whole lines (``raw_chunks``), and
the ``print`` output takes the lines the chunk loop encodes, so a shell pipeline runs the same
generated loop as ``files`` -> ``file`` and splits over ``workers:``. Checked here:

- the batch path, the fast path and two workers give the same output bytes, dead letters and
  counts, on JSON and on text lines with bad lines, blank lines, CRLF, invalid UTF-8 and a last
  line without its newline, read in small chunks so there are many;
- ``pipenb run --workers 2`` reading a real pipe writes to its stdout what the batch path
  writes to a file;
- a read gathers what a pipe holds at once, up to ``read-bytes``, and never waits for more;
- a pipe on stdin is widened to hold ``read-bytes``.
"""

from __future__ import annotations

import asyncio
import copy
import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.checkpoints import MemoryCheckpointStore
from pipenb.engine.inputs.stdin import gather, widen
from pipenb.engine.runtime import Engine

from support import REPO_ROOT


def json_lines(n: int) -> bytes:
    levels = ["INFO", "WARN", "ERROR"]
    out = [
        b'{"seq": %d, "level": "%s", "msg": "m%d"}' % (i, levels[i % 3].encode(), i)
        for i in range(n)
    ]
    out[5] = b"{oops"
    out[9] = b""
    out[13] = b'{"seq": 13, "level": "WARN", "msg": "bad \xff byte"}'
    out[17] = b"[1, 2]"
    out[21] = out[21] + b"\r"
    return b"\n".join(out)  # (no newline after the last line)


def text_lines(n: int) -> bytes:
    levels = ["INFO", "WARN", "ERROR"]
    out = [b"%d %s message %d" % (i, levels[i % 3].encode(), i) for i in range(n)]
    out[4] = b"4 ERROR \xfe\xff undecodable"
    out[8] = b""
    out[12] = out[12] + b"\r"
    return b"\n".join(out)


PIPES = {
    "json": {
        "name": "stdin-json",
        "input": {"stdin": {"format": "json", "read-bytes": 4096}},
        "actions": [
            {"filter": 'level in ["WARN", "ERROR"]'},
            {"add": {"env": "prod"}},
            {"rename": {"msg": "message"}},
        ],
        "output": {"file": {"path": "OUT"}},
        "errors": {"file": {"path": "ERRORS"}},
    },
    "lines": {
        "name": "stdin-lines",
        "input": {"stdin": {"read-bytes": 4096}},
        "actions": [
            {"extract": {"field": "_raw", "pattern": r"^(?P<n>\d+) (?P<level>\S+) (?P<rest>.*)$"}},
            {"filter": 'level == "ERROR"'},
        ],
        "output": {"file": {"path": "OUT"}},
        "errors": {"file": {"path": "ERRORS"}},
    },
}


def run(
    doc: dict, src: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch, **engine: Any
) -> dict:
    """``doc`` with ``src`` as its standard input (a file: what a shell's ``<`` gives)."""
    doc = copy.deepcopy(doc)
    doc["output"]["file"]["path"] = str(out_dir / "out.ndjson")
    doc["errors"]["file"]["path"] = str(out_dir / "errors.ndjson")
    pipe = pipenb.Pipe.from_yaml(yaml.safe_dump(doc, sort_keys=False))
    ctx = RunContext(pipe=pipe.name, data_dir=str(out_dir), values=pipe.spec.values)
    eng = Engine(pipe.spec, ctx, checkpoints=MemoryCheckpointStore(), **engine)
    with open(src, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        asyncio.run(asyncio.wait_for(eng.run(), 60))
    assert eng.state == "finished", eng.error
    snap = eng.snapshot()
    out, errors = out_dir / "out.ndjson", out_dir / "errors.ndjson"
    return {
        "fast": eng._fast is not None,
        "workers": eng.workers,
        "out": out.read_bytes() if out.exists() else b"",
        "errors": errors.read_bytes() if errors.exists() else b"",
        "input": {k: snap["input"][k] for k in ("events", "errors", "bytes")},
        "actions": snap["actions"],
        "output": {k: snap["output"][k] for k in ("events", "errors")},
    }


@pytest.mark.parametrize("fmt", ["json", "lines"])
def test_the_batch_path_the_fast_path_and_two_workers_agree(fmt, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.write_bytes(json_lines(3000) if fmt == "json" else text_lines(3000))
    results = {}
    for label, opts in (("batches", {"fast": False}), ("fast", {}), ("two", {"workers": 2})):
        d = tmp_path / label
        d.mkdir()
        results[label] = run(PIPES[fmt], src, d, monkeypatch, **opts)
    base = results["batches"]
    assert not base["fast"] and results["fast"]["fast"]
    assert results["two"]["workers"] == 2
    assert base["out"].count(b"\n") > 900
    for label in ("fast", "two"):
        for key in ("out", "errors", "input", "actions", "output"):
            assert results[label][key] == base[key], (label, key)
    if fmt == "json":  # the bad lines are dead letters, in the order they came
        dead = [orjson.loads(x) for x in base["errors"].splitlines()]
        assert [d["_raw"][:6] for d in dead] == ["{oops", '{"seq"', "[1, 2]"]


def test_pipenb_run_reads_a_pipe_and_prints_on_two_workers(tmp_path, monkeypatch):
    """A shell pipeline: the data comes through a pipe, the output goes to stdout (``print``)."""
    data = json_lines(20_000) + b"\n"
    src = tmp_path / "in"
    src.write_bytes(data)
    ref = tmp_path / "ref"
    ref.mkdir()
    expected = run(PIPES["json"], src, ref, monkeypatch, fast=False)
    doc = copy.deepcopy(PIPES["json"])
    doc["input"]["stdin"]["read-bytes"] = 65536
    doc["output"] = {"print": {}}
    doc["errors"]["file"]["path"] = str(tmp_path / "errors.ndjson")
    pipe = tmp_path / "p.yml"
    pipe.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--workers", "2", "-q"]
    cmd += ["--data-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )

    def feed() -> None:  # in pieces, as a program writing as it goes would
        assert proc.stdin is not None
        for i in range(0, len(data), 50_000):
            proc.stdin.write(data[i : i + 50_000])
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()  # to its end: the pipe is done (-q: stderr stays short)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    writer.join()
    assert proc.returncode == 0, err.decode()
    assert out == expected["out"]
    assert (tmp_path / "errors.ndjson").read_bytes() == expected["errors"]


def test_a_read_gathers_what_the_pipe_holds_and_does_not_wait():
    r, w = os.pipe()
    try:
        os.write(w, b"a" * 10)
        assert gather(r, 1000) == (b"a" * 10, False)  # all there is, at once
        for _ in range(3):
            os.write(w, b"b" * 100)
        assert gather(r, 1000) == (b"b" * 300, False)  # three writes, one read
        os.write(w, b"c" * 5000)
        assert gather(r, 1000) == (b"c" * 1000, False)  # never more than asked
        assert gather(r, 10_000) == (b"c" * 4000, False)
        os.write(w, b"d\n")
        os.close(w)
        w = -1
        assert gather(r, 1000) == (b"d\n", True)  # and the end seen with it
        assert gather(r, 1000) == (b"", True)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_pipe_on_stdin_is_widened_to_read_bytes(tmp_path):
    """A pipe's buffer grows to ``read-bytes`` (within the system's limit), so one read can
    take a whole chunk; a file is left as it is."""
    r, w = os.pipe()
    try:
        widen(r, 1 << 20)
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == min(1 << 20, limit)
        os.write(w, b"x" * 300_000)  # more than a default pipe holds, without blocking
        assert gather(r, 1 << 20) == (b"x" * 300_000, False)
    finally:
        os.close(r)
        os.close(w)
    f = tmp_path / "f"
    f.write_bytes(b"y\n")
    with open(f, "rb") as fh:
        widen(fh.fileno(), 1 << 20)  # not a pipe: nothing to do, nothing raised
        assert gather(fh.fileno(), 1 << 20) == (b"y\n", True)
