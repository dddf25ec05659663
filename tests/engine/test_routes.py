"""Several outputs (``outputs:``): routes with ``all`` and ``first``, a ``default`` output and
the ``unrouted`` count, each output's own actions and metrics, validation, preview and pipe tests
per output, fan-out where one output is down for a while (nothing lost, the checkpoint waits for
both), and SIGKILL then resume with two outputs."""

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
from pipenb.engine.checkpoints import MemoryCheckpointStore, checkpoint_path
from pipenb.errors import PipeSyntaxError
from pipenb.lang.validate import load_pipe

from support import REPO_ROOT
from support.cli import cli_env, sigkill_mid_run
from support.faultkit import RefusingSink
from support.files import read_complete_lines, read_ndjson

LINES = ["ERROR disk full", "INFO started", "WARN slow", "ERROR net down", "DEBUG x"]


def routed_pipe(tmp: Path, route: str, *, default: bool = True) -> str:
    text = f"""
name: routed
input: {{echo: {{lines: {orjson.dumps(LINES).decode()}}}}}
actions:
  - extract: {{pattern: '^(?P<level>\\w+) (?P<msg>.*)'}}
outputs:
  errors:
    when: level == "ERROR"
    file: {{path: "{tmp}/errors.ndjson"}}
    actions: [{{add: {{team: ops}}}}]
  problems: {{when: level == "ERROR" or level == "WARN", file: {{path: "{tmp}/problems.ndjson"}}}}
"""
    if default:
        text += f'  default: {{file: {{path: "{tmp}/rest.ndjson"}}}}\n'
    return text + f"route: {route}\n"


def run(text: str, data_dir: str | None = None) -> dict:
    pipe = pipenb.Pipe.from_yaml(text)
    engine = pipe.engine(data_dir=data_dir) if data_dir else pipenb.Engine(pipe.spec)
    asyncio.run(engine.run())
    return engine.snapshot()


def msgs(path: Path) -> list[str]:
    return [e["msg"] for e in read_ndjson(path)] if path.exists() else []


def test_route_all_sends_an_event_to_every_output_that_matches(tmp_path: Path):
    snap = run(routed_pipe(tmp_path, "all"))
    assert msgs(tmp_path / "errors.ndjson") == ["disk full", "net down"]
    assert msgs(tmp_path / "problems.ndjson") == ["disk full", "slow", "net down"]
    assert msgs(tmp_path / "rest.ndjson") == ["started", "x"]
    # the errors output's own action changed its copies only
    assert {e.get("team") for e in read_ndjson(tmp_path / "errors.ndjson")} == {"ops"}
    assert all("team" not in e for e in read_ndjson(tmp_path / "problems.ndjson"))
    outs = snap["outputs"]
    assert {n: o["events"] for n, o in outs.items()} == {"errors": 2, "problems": 3, "default": 2}
    assert outs["errors"]["actions"][0]["stage"] == "errors.0:add"
    assert snap["unrouted"] == 2
    assert snap["output"]["events"] == 7  # every delivery, summed


def test_route_first_sends_an_event_to_the_first_output_that_matches(tmp_path: Path):
    snap = run(routed_pipe(tmp_path, "first"))
    assert msgs(tmp_path / "errors.ndjson") == ["disk full", "net down"]
    assert msgs(tmp_path / "problems.ndjson") == ["slow"]
    assert msgs(tmp_path / "rest.ndjson") == ["started", "x"]
    assert snap["unrouted"] == 2


def test_without_a_default_output_unrouted_events_are_counted_and_dropped(tmp_path: Path):
    snap = run(routed_pipe(tmp_path, "all", default=False))
    assert not (tmp_path / "rest.ndjson").exists()
    assert snap["unrouted"] == 2
    assert set(snap["outputs"]) == {"errors", "problems"}


def test_an_output_without_when_takes_every_event(tmp_path: Path):
    text = routed_pipe(tmp_path, "all", default=False).replace(
        "route: all", f'  all: {{file: {{path: "{tmp_path}/all.ndjson"}}}}\n'
    )
    snap = run(text)
    assert len(msgs(tmp_path / "all.ndjson")) == len(LINES)
    assert snap["unrouted"] == 0


@pytest.mark.parametrize(
    "body, words, line",
    [
        ("output: {print: {}}\noutputs: {a: {print: {}}}\n", "not both", 4),
        ("outputs: {a: {when: 'level ==', print: {}}}\n", "when:", 3),
        ("outputs: {default: {when: 'x == 1', print: {}}}\n", "has no when", 3),
        ("outputs: {a: {print: {}, file: {path: x}}}\n", "exactly one output", 3),
        ("outputs: {a: {prnt: {}}}\n", "did you mean 'print'", 3),
        ("outputs: {a: {print: {}}}\nroute: some\n", "route must be all or first", 4),
        ("output: {print: {}}\nroute: first\n", "applies to outputs", 4),
    ],
)
def test_bad_outputs_are_located_errors(body: str, words: str, line: int):
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe("name: b\ninput: {stdin: {}}\n" + body)
    assert words in str(err.value)
    assert err.value.problems[0].line == line, err.value


def test_preview_and_pipe_tests_show_each_output(tmp_path: Path):
    text = (
        routed_pipe(tmp_path, "first")
        + """
tests:
  - name: each output gets its share
    input: ["ERROR a", "WARN b", "INFO c"]
    expect:
      errors: [{msg: a, team: ops}]
      problems: [{msg: b}]
      default: [{msg: c}]
  - name: a wrong expectation fails
    input: ["ERROR a"]
    expect: {problems: [{msg: a}]}
"""
    )
    pipe = pipenb.Pipe.from_yaml(text)
    res = pipe.preview(LINES)
    assert [e["msg"] for e in res.outputs["errors"]] == ["disk full", "net down"]
    assert all(e["team"] == "ops" for e in res.outputs["errors"])
    assert [e["msg"] for e in res.outputs["problems"]] == ["slow"]
    assert res.unrouted == 2
    assert list(res.output_df("default")["msg"]) == ["started", "x"]
    report = pipe.test()
    assert [r.passed for r in report.results] == [True, False]
    assert "output problems: expected 1 event(s), got 0" in report.results[1].message
    with pytest.raises(PipeSyntaxError, match="no output 'eror'"):
        load_pipe(text.replace("errors: [{msg: a, team: ops}]", "eror: []"))
    # nothing was written by preview or tests
    assert not any(tmp_path.iterdir())


def test_fan_out_with_one_output_down_for_a_while_loses_nothing(tmp_path: Path):
    """The file output keeps going only as far as delivery allows: while the HTTP output refuses,
    the input (and so the file) waits and the checkpoint does not move; then both get it all."""
    n = 2000
    log = tmp_path / "in.log"
    log.write_text("".join(f"{i}\n" for i in range(n)))
    out = tmp_path / "out.ndjson"
    sink = RefusingSink()
    text = f"""
name: fan
input: {{files: {{path: "{log}", follow: false, start-at: beginning, read-bytes: 200}}}}
actions:
  - extract: {{pattern: '^(?P<n>\\d+)$'}}
  - convert: {{n: int}}
  - remove: [_raw]
outputs:
  file: {{file: {{path: "{out}", batch: {{size: 50, timeout: 20ms}}}}}}
  http: {{http-post: {{url: "{sink.url}", batch: {{size: 50, timeout: 20ms}}}}}}
"""
    store = MemoryCheckpointStore()
    engine = pipenb.Engine(pipenb.Pipe.from_yaml(text).spec, checkpoints=store)

    async def scenario() -> None:
        from support.waiting import async_wait_until

        sink.refuse()
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: sink.refused >= 3, 30, "the sink refusing writes")
        held = len(read_complete_lines(out)) if out.exists() else 0
        assert held <= 200, f"the file ran ahead of the refused output: {held} events"
        saved = store.load()  # at most the starting position (offset 0) was saved
        offsets = [f["offset"] for f in (saved or {}).get("files", {}).values()]
        assert all(o == 0 for o in offsets), saved
        assert engine.snapshot()["outputs"]["http"]["retries"] >= 1
        sink.accept()
        await asyncio.wait_for(task, 120)

    try:
        asyncio.run(scenario())
    finally:
        sink.close()
    assert sorted(set(_events_from(out))) == list(range(n))
    assert sorted(set(sink.values)) == list(range(n))
    snap = engine.snapshot()
    assert snap["outputs"]["file"]["events"] >= n and snap["outputs"]["http"]["events"] >= n
    assert snap["state"] == "finished" and store.load() is not None


def test_sigkill_and_resume_with_two_outputs_loses_nothing(tmp_path: Path):
    n_lines = 100_000
    log = tmp_path / "input.log"
    log.write_text("".join(f"line-{i:010d}\n" for i in range(n_lines)))
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    data = tmp_path / "data"
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(
        f"""
name: crashy2
input: {{files: {{path: "{log}", follow: false, read-bytes: 1600}}}}
outputs:
  a: {{file: {{path: "{a}", batch: {{size: 500, timeout: 1s}}}}}}
  b: {{when: 'endswith(_raw, "0")', file: {{path: "{b}", batch: {{size: 500, timeout: 1s}}}}}}
"""
    )
    sigkill_mid_run(pipe, data, lambda: len(read_complete_lines(a)) >= 5_000)
    assert 0 < len(read_complete_lines(a)) < n_lines
    for path in (a, b):  # a write cut short by the kill: drop the torn tail (see test_runtime)
        if path.exists():
            data_bytes = path.read_bytes()
            if not data_bytes.endswith(b"\n"):
                os.truncate(path, data_bytes.rfind(b"\n") + 1)
    assert Path(checkpoint_path(str(data), "crashy2")).exists()

    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data)]
    res = subprocess.run(cmd, env=cli_env(), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert b"resuming crashy2 from checkpoint" in res.stderr
    for path, expected in (
        (a, {f"line-{i:010d}" for i in range(n_lines)}),
        (b, {f"line-{i:010d}" for i in range(0, n_lines, 10)}),
    ):
        got = [orjson.loads(x)["_raw"] for x in read_complete_lines(path)]
        counts = collections.Counter(got)
        assert set(counts) == expected, path.name  # every line arrived, nothing else did
        assert max(counts.values()) <= 2


def _events_from(path: Path) -> list[int]:
    return [orjson.loads(x)["n"] for x in read_complete_lines(path)]


def test_preview_text_and_html_show_each_output(tmp_path: Path):
    res = pipenb.Pipe.from_yaml(routed_pipe(tmp_path, "all")).preview(LINES)
    text, page = repr(res), res._repr_html_()
    assert "output errors: 2 event(s)" in text and "output default: 2 event(s)" in text
    assert "unrouted (matched no output's when:): 2" in text
    assert "Output <code>problems</code>: 3 event(s)" in page


def test_a_cluster_run_refuses_several_outputs(tmp_path: Path):
    from pipenb.cluster.plan import check

    with pytest.raises(PipeSyntaxError, match="not supported on a cluster"):
        check(pipenb.Pipe.from_yaml(routed_pipe(tmp_path, "all")).spec)


def test_the_routes_and_grok_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The tutorial's cells (tests/jupyter/test_notebooks.py also runs it, inside the lab)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = REPO_ROOT
    monkeypatch.setenv("PYTHONPATH", str(root))  # the kernel imports this checkout's pipenb
    nb = nbformat.read(root / "notebooks" / "routes-and-grok.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed bare
    nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    ).execute()
    text = "".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert (
        "server errors: [('/api/orders', 502, 'on-call'), ('/api/orders', 503, 'on-call')]" in text
    )
    assert "access: 1/1 passed" in text


def test_the_pipe_editor_preview_answer_has_each_output(tmp_path: Path):
    """What the authoring endpoint (the Pipe Editor's preview) answers, made by the sandbox."""
    from pipenb.server.handlers.authoring import PreviewResult
    from pipenb.server.sandbox import do_preview

    answer = do_preview({"text": routed_pipe(tmp_path, "first"), "lines": LINES, "timeout": 10})
    assert answer["ok"] is True, answer
    outs = PreviewResult.model_validate(answer).outputs
    assert [e["msg"] for e in outs["errors"].events] == ["disk full", "net down"]
    assert [e["msg"] for e in outs["default"].events] == ["started", "x"]
    assert answer["unrouted"] == 2


def test_pipenb_check_names_each_output(tmp_path: Path):
    path = tmp_path / "routed.yml"
    path.write_text(routed_pipe(tmp_path, "all"))
    proc = subprocess.run(
        [sys.executable, "-m", "pipenb", "check", str(path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "-> errors:file, problems:file, default:file)" in proc.stdout


def test_aggregate_is_refused_among_an_outputs_own_actions():
    with pytest.raises(PipeSyntaxError, match="put it in the shared actions") as err:
        load_pipe(
            "name: b\ninput: {stdin: {}}\noutputs:\n  a:\n    print: {}\n"
            "    actions: [{aggregate: {window: 1m, count: n}}]\n"
        )
    assert err.value.problems[0].line == 6


def test_a_worker_reports_each_outputs_metrics_to_its_agent(tmp_path: Path):
    from pipenb.agent.worker_main import _metrics

    pipe = pipenb.Pipe.from_yaml(routed_pipe(tmp_path, "all"))
    engine = pipenb.Engine(pipe.spec)
    asyncio.run(engine.run())
    reported = _metrics(engine.snapshot())
    assert reported["unrouted"] == 2
    assert {n: o["events"] for n, o in reported["outputs"].items()} == {
        "errors": 2,
        "problems": 3,
        "default": 2,
    }
    single = pipenb.Pipe.from_yaml("name: s\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n")
    one = pipenb.Engine(single.spec)
    asyncio.run(one.run())
    assert "outputs" not in _metrics(one.snapshot())
