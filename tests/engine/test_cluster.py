"""Cluster pipes on a real Dask ``LocalCluster`` (2 worker processes, one thread each).

The single-process engine is the reference: the same pipe over the same files, run once with
``Pipe.run()`` and once split into partitions on the cluster, must give the same multiset of
events, the same dead letters and the same per-stage counters. Files are split into small byte
ranges (a few KB) so most partitions start and end in the middle of a line.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

import pipenb
from pipenb.cluster import ClusterRun, run_pipe
from pipenb.engine.actions import aggregate
from pipenb.engine.inputs.dataset import read_range
from pipenb.errors import PipeSyntaxError, UsageError

from support import REPO_ROOT
from support.httpsink import HttpSink
from support.waiting import wait_until

distributed = pytest.importorskip("distributed")

EXAMPLES = REPO_ROOT / "examples"
DATA = EXAMPLES / "data"
LOGS = {
    "apache": "Apache",
    "hdfs": "HDFS",
    "linux": "Linux",
    "openssh": "OpenSSH",
    "zookeeper": "Zookeeper",
}
COPIES = 3
PART = 48 << 10  # bytes per partition: each 2k-line sample makes 4 to 7 ranges


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=40,
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def copies(tmp: Path, log: str, n: int = COPIES) -> str:
    d = tmp / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        shutil.copy(DATA / f"{log}_2k.log", d / f"{log}-{i:02d}.log")
    return str(d / f"{log}-*.log")


def lines_of(paths: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for p in paths:
        with open(p, "rb") as fh:
            out.extend(fh.read().splitlines())
    return out


def multiset(lines: list[bytes]) -> Counter:
    return Counter(orjson.dumps(orjson.loads(x), option=orjson.OPT_SORT_KEYS) for x in lines)


def parts(d: str) -> list[str]:
    return sorted(str(p) for p in Path(d).glob("part-*"))


def stage_counts(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": (snap["input"]["events"], snap["input"]["bytes"], snap["input"]["errors"]),
        "actions": [
            (a["stage"], a["in"], a["out"], a["dropped"], a["errors"]) for a in snap["actions"]
        ],
        "output": (snap["output"]["events"], snap["output"]["errors"]),
        "dead": (snap["dead_letters"], snap["dead_letters_dropped"]),
    }


def single(pipe_file: Path | str, params: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return pipenb.Pipe.from_file(pipe_file, params).run(data_dir=str(tmp / "single-state"))


# ---------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("name", sorted(LOGS))
def test_loghub_example_gives_the_same_events_and_counts(name: str, tmp_path: Path, client) -> None:
    glob = copies(tmp_path, LOGS[name])
    one = tmp_path / "single.ndjson"
    want = single(EXAMPLES / f"{name}.yml", {"path": glob, "out": str(one)}, tmp_path)
    out = tmp_path / "cluster.ndjson"
    pipe = pipenb.Pipe.from_file(EXAMPLES / f"{name}.yml", {"path": glob, "out": str(out)})
    report = run_pipe(pipe.spec, client, data_dir=str(tmp_path / "state"), partition_bytes=PART)
    assert report.state == "finished", report.error
    assert report.partitions > 3 * COPIES  # files really were split into ranges
    got = report.snapshot()
    assert stage_counts(got) == stage_counts(want)
    assert want["input"]["events"] == 2000 * COPIES
    files = parts(str(out))
    assert len(files) == report.partitions
    assert multiset(lines_of(files)) == multiset(lines_of([str(one)]))
    assert got["cluster"]["files"]["output"] == [
        {"path": f, "size": os.path.getsize(f)} for f in files
    ]
    assert not list(Path(out).glob(".part-*"))  # no temp file left behind
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert [p["path"] for p in manifest["parts"]] == [os.path.basename(f) for f in files]


# ---------------------------------------------------------------------------- byte ranges
def test_byte_ranges_own_each_line_exactly_once(tmp_path: Path) -> None:
    lines = [("x" * (i * 7 % 23)) + f"-{i}" for i in range(200)]
    for tail in ("\n", ""):  # with and without a newline at the end
        p = tmp_path / f"f{len(tail)}.log"
        p.write_bytes(("\n".join(lines) + tail).encode())
        size = p.stat().st_size
        for step in (1, 2, 5, 13, 64, 100, 1000, size, size + 5):
            got = []
            for start in range(0, size, step):
                for b in read_range(str(p), start, start + step, read_bytes=17):
                    got.extend(e["_raw"] for e in b.events)
            assert got == lines, f"step {step}, tail {tail!r}"


def test_dataset_input_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import asyncio

    from pipenb.engine.base import RunContext
    from pipenb.engine.inputs.dataset import DatasetInput, DatasetOptions

    for name, lines in (("1.log", ["a", "b"]), ("2.log", ["c", "d", "e"]), ("3.log", ["f"])):
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    def read(position: Any = None) -> tuple[list[str], Any]:
        inp = DatasetInput(DatasetOptions(path=str(tmp_path)), RunContext())
        if position is not None:
            inp.restore(position)

        async def go() -> list[Any]:
            return [b async for b in inp.batches()]

        batches = asyncio.run(go())
        return [e["_raw"] for b in batches for e in b.events], [b.position for b in batches]

    events, positions = read()
    assert events == list("abcdef")
    assert positions[1] == {"file": str(tmp_path / "2.log"), "offset": 6}
    assert read({"file": str(tmp_path / "2.log"), "offset": 2})[0] == list("def")
    assert read(positions[1])[0] == ["f"]


@pytest.mark.parametrize("multiline", [False, True], ids=["lines", "multiline"])
def test_metadata_names_files_as_the_glob_matched_them(
    multiline: bool, tmp_path: Path, client, monkeypatch
) -> None:
    """``_path`` is the path as the pipe's (relative) glob matched it, ``_offset`` the line's
    byte offset, the same split or not; multiline records are never cut at a range boundary
    (those files are read whole, by the files input itself)."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("in")
    for f in range(3):
        with open(f"in/app-{f}.log", "w") as fh:
            for i in range(1500):
                fh.write(f"2026-11-{f + 1:02d} ERROR request {i} failed\n")
                for j in range(i % 4):
                    fh.write(f"    at frame {j} of request {i}\n")
    ml = ", multiline: {start: '^\\d'}" if multiline else ""
    src = tmp_path / "meta.yml"
    src.write_text(
        "name: meta\nparams:\n  out: {}\ninput:\n"
        f'  files: {{path: "in/*.log", follow: false, metadata: true{ml}}}\n'
        'output:\n  file: {path: "{{out}}"}\n'
    )
    one = tmp_path / "one.ndjson"
    want = single(src, {"out": str(one)}, tmp_path)
    assert want["input"]["events"] == (4500 if multiline else 3 * 1500 + 3 * 2250)
    out = tmp_path / "split"
    report = run_pipe(
        pipenb.Pipe.from_file(src, {"out": str(out)}).spec,
        client,
        data_dir=str(tmp_path / "st"),
        partition_bytes=16 << 10,
    )
    assert report.state == "finished", report.error
    ranges = sum(-(-os.path.getsize(f"in/app-{f}.log") // (16 << 10)) for f in range(3))
    assert report.partitions == (3 if multiline else ranges) and ranges > 3
    got = lines_of(parts(str(out)))
    assert multiset(got) == multiset(lines_of([str(one)]))
    first = orjson.loads(got[0])
    assert first["_path"] == "in/app-0.log" and first["_offset"] == 0


# ---------------------------------------------------------------------------- aggregate
AGG_PIPE = """
name: agg
params:
  path: {}
  out: {}
input:
  files: {path: "{{path}}", follow: false}
actions:
  - extract:
      pattern: '^(?P<month>\\w+) +(?P<day>\\d+) (?P<hour>\\d\\d):\\d\\d:\\d\\d \\S+ (?P<process>[^\\[:]+?)(?:\\[(?P<pid>\\d+)\\])?:'
      on-miss: drop
  - convert: {pid: int, day: int}
  - aggregate:
      window: 1h
      by: [process, month]
      count: n
      sum: {pid: pid_sum}
      min: {day: first_day}
      max: {day: last_day}
      p50: {pid: pid_p50}
      p95: [pid]
  - add: {tag: windowed}
output:
  file: {path: "{{out}}"}
"""


def test_aggregate_gives_the_same_windows(tmp_path: Path, client, monkeypatch) -> None:
    glob = copies(tmp_path, "Linux")
    src = tmp_path / "agg.yml"
    src.write_text(AGG_PIPE)
    now = 1_800_000_123.0
    monkeypatch.setattr(aggregate, "wall_clock", lambda: now)  # one process, one window
    one = tmp_path / "single.ndjson"
    want = single(src, {"path": glob, "out": str(one)}, tmp_path)
    out = tmp_path / "cluster.ndjson"
    pipe = pipenb.Pipe.from_file(src, {"path": glob, "out": str(out)})
    report = ClusterRun(
        pipe.spec, client, data_dir=str(tmp_path / "state"), partition_bytes=PART, now=now
    ).run()
    assert report.state == "finished", report.error
    assert report.partitions >= 12  # a tree of at least four levels
    assert stage_counts(report.snapshot()) == stage_counts(want)
    windows = lines_of(parts(str(out)))
    assert multiset(windows) == multiset(lines_of([str(one)]))  # same groups, same numbers
    first = orjson.loads(windows[0])
    assert first["window_start"] == "2027-01-15T08:00:00Z" and first["tag"] == "windowed"
    assert sum(orjson.loads(w)["n"] for w in windows) == 2000 * COPIES


def test_what_cannot_be_split_is_refused_where_it_is_written(tmp_path: Path) -> None:
    cases = {
        "  - dedupe: [host]\n": (10, "dedupe cannot run on a cluster"),
        "  - aggregate: {every: 10, count: n}\n": (10, "arrival order"),
    }
    for action, (line, words) in cases.items():
        text = f"""name: x
params:
  path: {{}}
input:
  files: {{path: "{{{{path}}}}", follow: false}}
actions:
  - add: {{a: 1}}
  - filter: a == 1
  - add: {{b: 2}}
{action}output:
  discard: {{}}
"""
        pipe = pipenb.Pipe.from_yaml(text, {"path": str(tmp_path / "*.log")}, file="x.yml")
        with pytest.raises(PipeSyntaxError) as err:
            run_pipe(pipe.spec, "local:2")
        (prob,) = err.value.problems
        assert prob.line == line and words in prob.message and str(prob).startswith("x.yml:10:")
    follow = pipenb.Pipe.from_yaml(
        "name: f\ninput:\n  files: {path: /tmp/none-*.log}\noutput:\n  discard: {}\n", file="f.yml"
    )
    with pytest.raises(PipeSyntaxError, match=r"f.yml:3:.*follow: true never ends"):
        run_pipe(follow.spec, "local:2")
    # an output path that is a file cannot become a directory of parts: said, nothing removed
    taken = tmp_path / "taken.ndjson"
    taken.write_text('{"keep": "me"}\n')
    pipe = pipenb.Pipe.from_yaml(
        f'name: t\ninput:\n  echo: {{lines: [a]}}\noutput:\n  file: {{path: "{taken}"}}\n'
    )
    with pytest.raises(UsageError, match=r"is a file; .* set merge: true"):
        run_pipe(pipe.spec, "local:2")
    assert taken.read_text() == '{"keep": "me"}\n'


def test_without_dask_it_says_what_to_install(monkeypatch) -> None:
    from pipenb.cluster import executor_for

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "pipenb.cluster.dask", raising=False)
    with pytest.raises(UsageError) as err:
        executor_for("local:2")
    msg = str(err.value)
    assert "[cluster] extra" in msg and "pip install pipenb" not in msg.replace("pipenb-", "")
    with pytest.raises(UsageError, match="local:N"):
        executor_for("spark://x")


# ---------------------------------------------------------------------------- errors, echo
ECHO_PIPE = """
name: echoes
input:
  echo:
    events:
      - {n: "1", k: a}
      - {n: "two", k: b}
      - {n: "3", k: c}
      - {n: "4", k: a}
    count: 6000
actions:
  - convert: {n: int}
  - sample: {rate: 3, key: k}
output:
  file: {path: "OUT", merge: true}
errors:
  file: {path: "ERR"}
"""


def test_echo_with_dead_letters_and_a_merged_file_from_the_cli(tmp_path: Path) -> None:
    """The CLI with ``--cluster local:2``: one merged file in input order, dead letters in part
    files, the same counts as without ``--cluster``."""
    src = tmp_path / "echo.yml"
    src.write_text(
        ECHO_PIPE.replace("OUT", str(tmp_path / "c.ndjson")).replace("ERR", str(tmp_path / "e"))
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "pipenb", "run", str(src), "--json"]
    r = subprocess.run(
        [*cmd, "--cluster", "local:2", "--data-dir", str(tmp_path / "s")],
        capture_output=True,
        env=env,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got = orjson.loads(r.stderr.strip().splitlines()[-1])
    assert got["cluster"]["partitions"] == 3  # 24,000 events, 10,000 a partition
    # security: the local cluster listens on loopback only, its dashboard too
    assert got["cluster"]["address"].startswith("tcp://127.0.0.1:")
    assert got["cluster"]["dashboard"].startswith("http://127.0.0.1:")
    # the same pipe in one process, writing elsewhere
    src2 = tmp_path / "echo1.yml"
    src2.write_text(
        ECHO_PIPE.replace("OUT", str(tmp_path / "s.ndjson"))
        .replace("ERR", str(tmp_path / "e1.ndjson"))
        .replace(", merge: true", "")
    )
    r1 = subprocess.run(
        [*cmd[:4], str(src2), "--json", "--data-dir", str(tmp_path / "s1")],
        capture_output=True,
        env=env,
        timeout=240,
    )
    assert r1.returncode == 0, r1.stderr.decode()[-2000:]
    want = orjson.loads(r1.stderr.strip().splitlines()[-1])
    assert stage_counts(got) == stage_counts(want)
    assert (tmp_path / "c.ndjson").read_bytes() == (tmp_path / "s.ndjson").read_bytes()
    assert not (tmp_path / "c.ndjson.parts").exists()
    dead = lines_of(parts(str(tmp_path / "e")))
    assert len(dead) == 6000 and want["dead_letters"] == 6000
    assert multiset(dead) == multiset(lines_of([str(tmp_path / "e1.ndjson")]))
    # sample by key is deterministic: the same keys survive on every partition
    kept = Counter(orjson.loads(x)["k"] for x in lines_of([str(tmp_path / "c.ndjson")]))
    assert kept == {"a": 12000, "c": 6000}  # crc32 % 3 == 0 for a and c, not for b


# ---------------------------------------------------------------------------- dataset
def test_dataset_input_reads_a_directory_the_same_in_one_process_and_split(
    tmp_path: Path, client
) -> None:
    d = tmp_path / "ds"
    (d / "2026-11" / "02").mkdir(parents=True)
    shutil.copy(DATA / "HDFS_2k.log", d / "2026-11" / "a.log")
    with (
        open(DATA / "HDFS_2k.log", "rb") as src,
        gzip.open(d / "2026-11" / "02" / "b.log.gz", "wb") as gz,
    ):
        gz.write(src.read())
    (d / "_manifest.json").write_text("{}")  # hidden from the data set
    (d / "2026-11" / ".tmp").write_text("not data\n")
    text = (
        (EXAMPLES / "hdfs.yml")
        .read_text()
        .replace(
            'files: {path: "{{path}}", start-at: beginning, follow: false}',
            'dataset: {path: "{{path}}", pattern: "**.log*", metadata: true}',
        )
    )
    src = tmp_path / "hdfs-ds.yml"
    src.write_text(text)
    one = tmp_path / "one.ndjson"
    want = single(src, {"path": str(d), "out": str(one)}, tmp_path)
    assert want["input"]["events"] == 4000
    out = tmp_path / "split"
    pipe = pipenb.Pipe.from_file(src, {"path": f"file://{d}", "out": str(out)})
    report = run_pipe(pipe.spec, client, data_dir=str(tmp_path / "st"), partition_bytes=PART)
    assert report.state == "finished", report.error
    assert report.partitions == 7  # a.log in 6 ranges, the .gz whole
    assert stage_counts(report.snapshot())["actions"] == stage_counts(want)["actions"]
    got = lines_of(parts(str(out)))
    assert multiset(got) == multiset(lines_of([str(one)]))
    offsets = {orjson.loads(x)["_offset"] for x in got if "a.log" in orjson.loads(x)["_path"]}
    assert len(offsets) == 2000 and 0 in offsets


# ---------------------------------------------------------------------------- failures
def test_a_failed_partition_is_reported_with_why_and_resume_runs_only_it(
    tmp_path: Path, client
) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    for i in range(3):
        shutil.copy(DATA / "Apache_2k.log", d / f"a{i}.log")
    (d / "b.log.gz").write_bytes(b"this is not gzip data\n")
    text = (
        (EXAMPLES / "apache.yml")
        .read_text()
        .replace(
            'files: {path: "{{path}}", start-at: beginning, follow: false}',
            'dataset: {path: "{{path}}"}',
        )
    )
    src = tmp_path / "apache-ds.yml"
    src.write_text(text)
    out = tmp_path / "out"
    pipe = pipenb.Pipe.from_file(src, {"path": str(d), "out": str(out)})
    state = str(tmp_path / "state")
    report = run_pipe(pipe.spec, client, data_dir=state, partition_bytes=PART)
    assert report.state == "failed"
    (failed,) = report.failures
    assert failed.partition == f"part-00012 ({d / 'b.log.gz'})"
    assert "gzip" in failed.error.lower() or "magic" in failed.error.lower(), failed.error
    assert report.error.startswith("1 of 13 partition(s) failed: part-00012")
    assert len(parts(str(out))) == 12  # the others completed and stay
    with pytest.raises(pipenb.errors.PipeRuntimeError, match="part-00012"):
        pipe.run(cluster=client, data_dir=state, partition_bytes=PART, resume=True)
    # fixed: --resume runs the one partition left
    with gzip.open(d / "b.log.gz", "wb") as gz:
        gz.write((DATA / "Apache_2k.log").read_bytes())
    again = run_pipe(pipe.spec, client, data_dir=state, partition_bytes=PART, resume=True)
    assert again.state == "finished" and again.skipped == 12
    assert again.snapshot()["input"]["events"] == 4 * 2000


# ---------------------------------------------------------------------------- Ctrl-C
SLOW_PIPE = """
name: slow
params:
  path: {}
  out: {}
input:
  files: {path: "{{path}}", follow: false}
actions:
  - script:
      code: |
        import time
        time.sleep(0.3)  # the work of a partition: long enough to be interrupted half way
        def process(event):
            return event
output:
  file: {path: "{{out}}"}
"""


def test_ctrl_c_stops_the_cli_run_and_resume_finishes_it(tmp_path: Path) -> None:
    glob = copies(tmp_path, "Linux", 4)
    src = tmp_path / "slow.yml"
    src.write_text(SLOW_PIPE)
    out, state = tmp_path / "out", tmp_path / "state"
    cmd = [
        sys.executable, "-m", "pipenb", "run", str(src), "--param", f"path={glob}",
        "--param", f"out={out}", "--cluster", "local:2", "--partition-size", "20KB",
        "--data-dir", str(state),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, start_new_session=True)
    markers = state / "cluster" / "slow"
    try:
        wait_until(lambda: markers.is_dir() and any(markers.glob("part-*.json")), timeout=120)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.decode()
    assert proc.returncode == 130, text[-3000:]
    assert "run again with --resume" in text and "Traceback" not in text, text[-3000:]
    done = len(list(markers.glob("part-*.json")))
    r = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert f"{done} resumed from an earlier run" in r.stderr.decode()
    assert len(lines_of(parts(str(out)))) == 4 * 2000


# ---------------------------------------------------------------------------- resume
def test_resume_runs_only_what_an_interrupted_run_left(tmp_path: Path, client) -> None:
    glob = copies(tmp_path, "OpenSSH", 4)
    one = tmp_path / "single.ndjson"
    want = single(EXAMPLES / "openssh.yml", {"path": glob, "out": str(one)}, tmp_path)
    out = tmp_path / "out"
    pipe = pipenb.Pipe.from_file(EXAMPLES / "openssh.yml", {"path": glob, "out": str(out)})
    state = str(tmp_path / "state")

    run: ClusterRun

    lines: list[str] = []

    def stop_after_four(p) -> None:
        lines.append(p.line())
        if p.done >= 4:
            run.stop()  # as Ctrl-C would: what has not finished is cancelled

    run = ClusterRun(
        pipe.spec, client, data_dir=state, partition_bytes=PART, progress=stop_after_four
    )
    first = run.run()
    assert first.state == "stopped"
    assert lines[0].startswith(f"openssh: 0/{first.partitions} partitions, 0 events")
    assert lines[-1].startswith(f"openssh: 4/{first.partitions} partitions, ")
    assert lines[-1].endswith(" events/s") and not lines[-1].endswith(" 0 events/s")
    markers = sorted((tmp_path / "state" / "cluster" / "openssh").glob("part-*.json"))
    assert 4 <= len(markers) < first.partitions
    # a part file damaged since (cut short) is not trusted: its partition runs again
    (damaged,) = orjson.loads(markers[0].read_bytes())["files"]["output"]
    with open(damaged["path"], "r+b") as fh:
        fh.truncate(10)
    second = ClusterRun(pipe.spec, client, data_dir=state, partition_bytes=PART, resume=True).run()
    assert second.state == "finished", second.error
    assert second.skipped == len(markers) - 1
    assert stage_counts(second.snapshot()) == stage_counts(want)  # resumed counts included
    assert multiset(lines_of(parts(str(out)))) == multiset(lines_of([str(one)]))
    # without --resume, a run starts over: nothing is skipped
    third = run_pipe(pipe.spec, client, data_dir=state, partition_bytes=PART)
    assert third.skipped == 0
    assert multiset(lines_of(parts(str(out)))) == multiset(lines_of([str(one)]))


# ---------------------------------------------------------------------------- other outputs
def _echo(tmp: Path, output: str, n: int = 3000) -> pipenb.Pipe:
    text = f"""
name: out-{tmp.name[:20].replace("_", "-")}
input:
  echo:
    events: [{{k: a, v: 1}}, {{k: b, v: 2}}, {{k: "x/../y", v: 3}}]
    count: {n}
actions:
  - add: {{seq: 1}}
output:
{output}
"""
    return pipenb.Pipe.from_yaml(text)


def test_http_post_is_sent_from_the_workers(tmp_path: Path, client) -> None:
    with HttpSink(lambda request: (204, b"")) as sink:
        pipe = _echo(tmp_path, f"  http-post: {{url: {sink.url}in, batch: {{size: 500}}}}", n=8000)
        report = run_pipe(pipe.spec, client, data_dir=str(tmp_path / "s"))
    got = sink.events()
    assert report.state == "finished", report.error
    assert report.partitions == 3 and report.snapshot()["output"]["events"] == 24000
    assert len(got) == 24000
    assert Counter(e["k"] for e in got) == {"a": 8000, "b": 8000, "x/../y": 8000}


def test_field_paths_and_a_merged_csv(tmp_path: Path, client) -> None:
    by = tmp_path / "by"
    pipe = _echo(tmp_path, f'  file: {{path: "{by}/${{k}}"}}', n=5000)
    report = run_pipe(pipe.spec, client, data_dir=str(tmp_path / "s"))
    assert report.state == "finished", report.error
    # each value has its directory of parts; a value never leaves the output directory
    assert sorted(p.name for p in by.iterdir()) == ["a", "b", "x_.._y"]
    for d, k in (("a", "a"), ("b", "b"), ("x_.._y", "x/../y")):
        files = parts(str(by / d))
        assert [Path(f).name for f in files] == ["part-00000.ndjson", "part-00001.ndjson"]
        assert {orjson.loads(x)["k"] for x in lines_of(files)} == {k}
        assert len(lines_of(files)) == 5000
    csv_out = tmp_path / "all.csv"
    pipe = _echo(
        tmp_path, f'  file: {{path: "{csv_out}", format: csv, fields: [k, v], merge: true}}'
    )
    report = run_pipe(pipe.spec, client, data_dir=str(tmp_path / "s2"))
    assert report.state == "finished", report.error
    rows = csv_out.read_text().splitlines()
    assert rows[0] == "k,v" and rows.count("k,v") == 1 and len(rows) == 1 + 9000
    assert rows[1:4] == ["a,1", "b,2", "x/../y,3"]
    assert not (tmp_path / "all.csv.parts").exists()


# ---------------------------------------------------------------------------- a worker dies
def test_a_worker_killed_mid_run_still_gives_the_same_output(tmp_path: Path, client) -> None:
    """Last in this file: it kills one of the shared cluster's workers (its nanny restarts it)."""
    glob = copies(tmp_path, "Zookeeper", 6)
    one = tmp_path / "single.ndjson"
    want = single(EXAMPLES / "zookeeper.yml", {"path": glob, "out": str(one)}, tmp_path)
    out = tmp_path / "out"
    pipe = pipenb.Pipe.from_file(EXAMPLES / "zookeeper.yml", {"path": glob, "out": str(out)})
    killed: list[int] = []

    def kill_one(p) -> None:
        if p.done >= 3 and not killed:
            busy = client.processing()  # worker address -> keys it is running now
            addr = next((a for a, keys in sorted(busy.items()) if keys), None)
            assert addr is not None, "no worker was busy: the run ended too soon to test this"
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report = ClusterRun(
        pipe.spec,
        client,
        data_dir=str(tmp_path / "state"),
        partition_bytes=16 << 10,
        progress=kill_one,
    ).run()
    assert killed, "the worker was never killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    assert report.state == "finished", report.error
    assert stage_counts(report.snapshot()) == stage_counts(want)
    assert multiset(lines_of(parts(str(out)))) == multiset(lines_of([str(one)]))
    assert not list(out.glob(".part-*"))  # the dead attempt's temp file was swept
