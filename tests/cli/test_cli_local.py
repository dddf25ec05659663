"""``pipenb run|check|test|preview``: output for people, ``--json`` for scripts, exit codes
0 (ok), 1 (the work failed) and 2 (usage error)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import pipenb
from pipenb.cli import main
from pipenb.engine.checkpoints import checkpoint_path

from support.cli import cli_env
from support.files import raw_values, read_ndjson
from support.pipes import write_pipe
from support.waiting import wait_until


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``pipenb ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")  # main() sets it; undo after

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


GOOD = """\
name: good
params:
  level: {default: error, enum: [warn, error]}
input: {echo: {lines: ['[error] disk full', '[warn] low', '[error] 42']}}
actions:
  - extract: {pattern: '^\\[(?P<level>\\w+)\\] (?P<message>.*)$'}
  - filter: level == "{{level}}"
output: {file: {path: out.ndjson}}
tests:
  - name: keeps errors
    input: ['[error] x']
    expect: [{level: error, message: x}]
"""

BAD = """\
name: bad
input: {echo: {lines: [a], bogus: 1}}
actions:
  - filter: '"x".upper() == "X"'
  - extrac: {pattern: x}
output: {file: {}}
"""

FAILING_TEST = """\
name: failing
input: {echo: {lines: [a]}}
actions:
  - add: {x: 1}
output: {discard: {}}
tests:
  - name: passes
    input: [a]
    expect: [{x: 1}]
  - name: fails
    input: [a]
    expect: [{x: 2}]
"""


@pytest.fixture
def good(tmp_path):
    return write_pipe(
        tmp_path, GOOD.replace("out.ndjson", str(tmp_path / "out.ndjson")), "good.yaml"
    )


@pytest.fixture
def bad(tmp_path):
    return write_pipe(tmp_path, BAD, "bad.yaml")


# ------------------------------------------------------------------------------ general


def test_version_and_help(cli):
    code, out, _ = cli("--version")
    assert (code, out.strip()) == (0, f"pipenb {pipenb.__version__}")
    code, out, _ = cli("run", "--help")
    assert code == 0
    assert "--param" in out and "--data-dir" in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["check"],
        ["run", "x.yaml", "--no-such-option"],
        ["preview", "x.yaml", "--limit", "many"],
    ],
)
def test_usage_errors_exit_2(cli, args):
    code, _out, err = cli(*args)
    assert code == 2
    assert "usage: pipenb" in err


# ------------------------------------------------------------------------------ check


def test_check_a_valid_pipe(cli, good):
    code, out, err = cli("check", good)
    assert code == 0
    assert out == f"{good}: ok (good: echo -> 2 action(s) -> file)\n"
    assert err == ""


def test_check_prints_every_problem_as_file_line_column_message(cli, bad):
    code, _out, err = cli("check", bad)
    assert code == 1
    lines = err.splitlines()
    assert lines[-1] == "1 of 1 file(s) invalid"
    problems = lines[:-1]
    assert len(problems) == 4
    for line in problems:
        assert re.match(rf"^{re.escape(str(bad))}:\d+:\d+: \S", line), line
    assert problems[0].startswith(f"{bad}:2:28: unknown option 'bogus' for echo; allowed: ")
    assert problems[1].startswith(f"{bad}:4:14: filter.expr: methods and computed functions")
    assert problems[2].startswith(f"{bad}:5:5: unknown action 'extrac' (did you mean 'extract'?)")
    assert problems[3] == f"{bad}:6:16: file: missing required option 'path'"


def test_check_several_files_fails_if_one_is_invalid(cli, good, bad):
    code, out, err = cli("check", good, bad)
    assert code == 1
    assert f"{good}: ok" in out
    assert err.splitlines()[-1] == "1 of 2 file(s) invalid"


def test_check_json(cli, good, bad):
    code, out, _ = cli("check", good, bad, "--json")
    assert code == 1
    doc = orjson.loads(out)
    assert doc[0] == {"file": str(good), "ok": True, "pipe": "good", "problems": []}
    assert doc[1]["ok"] is False
    assert [(p["line"], p["column"]) for p in doc[1]["problems"]] == [
        (2, 28),
        (4, 14),
        (5, 5),
        (6, 16),
    ]
    assert doc[1]["problems"][3]["message"] == "file: missing required option 'path'"
    assert doc[1]["problems"][3]["path"] == "output.file"


def test_check_with_params(cli, good):
    assert cli("check", good, "--param", "level=warn")[0] == 0
    code, _, err = cli("check", good, "--param", "level=info")
    assert code == 1
    assert f"{good}:3:3: parameter 'level' must be one of ['warn', 'error'], got 'info'" in err
    code, _, err = cli("check", good, "--param", "level")
    assert code == 2
    assert err == "pipenb: --param takes NAME=VALUE, got 'level'\n"


def test_check_a_missing_file_is_a_usage_error_as_for_run_and_test(cli, tmp_path):
    code, _, err = cli("check", tmp_path / "nope.yaml")
    assert code == 2
    assert "nope.yaml: No such file" in err


# ------------------------------------------------------------------------------ test


def test_test_command_passing(cli, good):
    code, out, _ = cli("test", good)
    assert code == 0
    assert out.splitlines() == [
        f"PASS {good}:10 good: keeps errors",
        "pipe tests: 1 passed, 0 failed",
    ]


def test_test_command_failing(cli, tmp_path, good):
    failing = write_pipe(tmp_path, FAILING_TEST, "failing.yaml")
    code, out, _ = cli("test", good, failing)
    assert code == 1
    lines = out.splitlines()
    assert f"PASS {failing}:7 failing: passes" in lines
    assert f"FAIL {failing}:10 failing: fails" in lines
    assert "     event 0: expected {'x': 2}, differs in {'x': 1}" in lines
    assert lines[-1] == "pipe tests: 2 passed, 1 failed"


def test_test_command_json(cli, tmp_path):
    failing = write_pipe(tmp_path, FAILING_TEST, "failing.yaml")
    code, out, _ = cli("test", failing, "--json")
    assert code == 1
    (doc,) = orjson.loads(out)
    assert doc["pipe"] == "failing"
    assert [(t["name"], t["passed"], t["line"]) for t in doc["tests"]] == [
        ("passes", True, 7),
        ("fails", False, 10),
    ]
    assert doc["tests"][0]["output"] == [{"_raw": "a", "x": 1}]


def test_test_command_on_an_invalid_pipe(cli, bad):
    code, out, err = cli("test", bad)
    assert code == 1
    assert f"{bad}:5:5: unknown action 'extrac'" in err
    assert out.splitlines()[-1] == "pipe tests: 0 passed, 1 failed"


def test_test_command_on_a_missing_file_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("test", tmp_path / "nope.yaml")
    assert code == 2
    assert err.startswith("pipenb: cannot read ")


# ------------------------------------------------------------------------------ preview


def test_preview_table(cli, good, tmp_path):
    code, out, _ = cli("preview", good)
    assert code == 0
    assert out.splitlines()[0].split() == ["STAGE", "IN", "OUT", "DROPPED", "ERRORS"]
    assert out.splitlines()[1].split() == ["input:echo", "3", "3", "0", "0"]
    assert "2 event(s) out:" in out
    assert "disk full" in out
    assert not (tmp_path / "out.ndjson").exists()  # preview never writes the output


def test_preview_json_with_a_sample_and_params(cli, good, tmp_path):
    sample = tmp_path / "sample.log"
    sample.write_text("[warn] a\n[error] b\n[warn] c\n[warn] d\n")
    code, out, _ = cli(
        "preview", good, "--sample", sample, "--limit", "3", "--param", "level=warn", "--json"
    )
    assert code == 0
    doc = orjson.loads(out)
    assert doc["pipe"] == "good"
    assert [e["message"] for e in doc["events"]] == ["a", "c"]
    assert doc["stages"][0] == {"stage": "input:echo", "in": 3, "out": 3, "dropped": 0, "errors": 0}
    assert doc["errors"] == []
    assert not (tmp_path / "out.ndjson").exists()


def test_preview_shows_errors(cli, tmp_path):
    pipe = write_pipe(
        tmp_path,
        "name: e\ninput: {echo: {lines: ['1', x]}}\nactions: [{set: {n: int(_raw)}}]\n"
        "output: {discard: {}}\n",
    )
    code, out, _ = cli("preview", pipe)
    assert code == 0
    assert "1 error(s):" in out
    assert "int() cannot convert 'x'" in out
    code, out, _ = cli("preview", pipe, "--json")
    assert orjson.loads(out)["errors"] == [
        {"_raw": "x", "_error": {"stage": "0:set", "message": "int() cannot convert 'x'"}}
    ]


def test_preview_exit_codes(cli, good, bad, tmp_path):
    assert cli("preview", bad)[0] == 1
    code, _, err = cli("preview", good, "--sample", tmp_path / "none.log")
    assert code == 2
    assert "does not exist" in err


# ------------------------------------------------------------------------------ run


def test_run_writes_the_output_and_a_summary(cli, good, tmp_path):
    data = tmp_path / "data"
    code, _out, err = cli("run", good, "--data-dir", data)
    assert code == 0
    assert [e["message"] for e in read_ndjson(tmp_path / "out.ndjson")] == ["disk full", "42"]
    rows = [line.split() for line in err.splitlines()]
    assert rows[0] == ["STAGE", "IN", "OUT", "DROPPED", "ERRORS"]
    assert rows[1] == ["input:echo", "3", "3", "0", "0"]
    assert rows[2] == ["0:extract", "3", "3", "0", "0"]
    assert rows[3] == ["1:filter", "3", "2", "1", "0"]
    assert rows[4] == ["output:file", "2", "2", "0", "0"]


def test_run_json_metrics_on_stderr(cli, good, tmp_path):
    code, _out, err = cli(
        "run", good, "--data-dir", tmp_path / "d", "--json", "--param", "level=warn"
    )
    assert code == 0
    snap = orjson.loads(err.strip().splitlines()[-1])
    assert snap["pipe"] == "good"
    assert snap["state"] == "finished"
    assert snap["output"]["events"] == 1
    assert snap["actions"][1] == {"stage": "1:filter", "in": 3, "out": 1, "dropped": 2, "errors": 0}
    assert [e["message"] for e in read_ndjson(tmp_path / "out.ndjson")] == ["low"]


def test_run_exit_codes(cli, good, bad, tmp_path):
    d = tmp_path / "d"
    assert cli("run", bad, "--data-dir", d)[0] == 1
    code, _, err = cli("run", good, "--data-dir", d, "--param", "nonsense")
    assert (code, err) == (2, "pipenb: --param takes NAME=VALUE, got 'nonsense'\n")
    code, _, err = cli("run", good, "--data-dir", d, "--param", "level=fatal")
    assert code == 1
    assert "parameter 'level' must be one of ['warn', 'error'], got 'fatal'" in err
    code, _, err = cli("run", tmp_path / "missing.yaml", "--data-dir", d)
    assert code == 2
    assert err.startswith("pipenb: cannot read ")


def test_run_requires_parameters_without_defaults(cli, tmp_path):
    pipe = write_pipe(
        tmp_path,
        f"""
        name: req
        params:
          n: {{type: int}}
          file: {{type: str}}
        input: {{echo: {{lines: [x], interval: 1ms, count: "{{{{n}}}}"}}}}
        output: {{file: {{path: "{tmp_path}/{{{{file}}}}.ndjson"}}}}
        """,
    )
    code, _, err = cli("run", pipe, "--data-dir", tmp_path / "d", "-q")
    assert code == 1
    assert "parameter 'file' has no default and no value was given" in err
    assert "parameter 'n' has no default and no value was given" in err
    code, _, _ = cli(
        "run", pipe, "--data-dir", tmp_path / "d", "-q", "--param", "n=3", "--param", "file=o"
    )
    assert code == 0
    assert raw_values(tmp_path / "o.ndjson") == ["x", "x", "x"]
    code, _, err = cli(
        "run", pipe, "--data-dir", tmp_path / "d", "--param", "n=three", "--param", "file=o"
    )
    assert code == 1
    assert "parameter 'n' expects int, got 'three'" in err


def test_run_a_pipe_that_fails_exits_1(cli, tmp_path):
    pipe = write_pipe(
        tmp_path,
        "name: broken\ninput: {exec: {command: [/no/such/program]}}\noutput: {discard: {}}\n",
    )
    code, _, err = cli("run", pipe, "--data-dir", tmp_path / "d", "--json")
    assert code == 1
    assert "pipenb: pipe broken failed: exec: command not found: '/no/such/program'" in err
    assert orjson.loads(err.strip().splitlines()[-1])["state"] == "failed"


def test_run_resumes_and_reset_starts_over(cli, tmp_path):
    log = tmp_path / "in.log"
    log.write_text("a\nb\n")
    out = tmp_path / "out.ndjson"
    pipe = write_pipe(
        tmp_path,
        f'name: resumer\ninput: {{files: {{path: "{log}", follow: false}}}}\n'
        f'output: {{file: {{path: "{out}"}}}}\n',
    )
    d = tmp_path / "d"
    assert cli("run", pipe, "--data-dir", d, "-q")[0] == 0
    assert Path(checkpoint_path(str(d), "resumer")).exists()
    code, _, err = cli("run", pipe, "--data-dir", d)
    assert code == 0
    assert "pipenb: resuming resumer from checkpoint" in err
    assert raw_values(out) == ["a", "b"]
    assert cli("run", pipe, "--data-dir", d, "--reset", "-q")[0] == 0
    assert raw_values(out) == ["a", "b", "a", "b"]


def test_run_stops_cleanly_on_sigterm_and_saves_its_checkpoint(tmp_path):
    log = tmp_path / "in.log"
    log.write_text("".join(f"l{i}\n" for i in range(100)))
    out = tmp_path / "out.ndjson"
    pipe = write_pipe(
        tmp_path,
        f"""
        name: tailer
        input: {{files: {{path: "{log}", poll-interval: 10ms}}}}
        output: {{file: {{path: "{out}", batch: {{size: 10000, timeout: 1h}}}}}}
        """,
    )
    data = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data), "--json"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # tailing for ever; the output batch is neither full nor old enough to be written.
        # Signal only once the engine has read the file (before its handler is set, SIGTERM
        # just kills).
        wait_until(lambda: _read_to_the_end(proc, log), 30, "the engine to read the file")
        assert not out.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert raw_values(out) == [f"l{i}" for i in range(100)]  # drained before exiting
    assert Path(checkpoint_path(str(data), "tailer")).exists()
    snap = orjson.loads(err.strip().splitlines()[-1])
    assert snap["state"] == "stopped"
    assert snap["output"]["events"] == 100


def _read_to_the_end(proc: subprocess.Popen, path: Path) -> bool:
    """True once the engine has read ``path`` to its end: the file is among the process's open
    descriptors, at an offset equal to its size (``/proc/PID/fdinfo``). Opening alone is not
    enough: the input yields a first, empty batch between opening and reading, and a SIGTERM
    there stops the run with nothing read, which is right but not what this test is about."""
    size = path.stat().st_size
    try:
        fds = list(Path(f"/proc/{proc.pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if fd.resolve() != path.resolve():
                continue
            info = Path(f"/proc/{proc.pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        pos = next((int(x.split()[1]) for x in info.splitlines() if x.startswith("pos:")), -1)
        if pos == size:
            return True
    return False
    for fd in fds:
        try:
            if fd.resolve().name == "in.log":
                return True
        except OSError:
            continue
    return False
