"""``%%pipe`` and ``%pipe ...`` in a real IPython shell, the server magics against a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from pipenb.client import Client
from pipenb.engine.preview import PreviewResult
from pipenb.magics import Deployed, Info, PipeMagics

from support.serverproc import ServerProcess

LEVELS = """\
name: levels
labels: [magic-web]
params:
  level: {default: error, enum: [warn, error]}
input: {echo: {lines: ['[error] disk full', '[warn] slow', '[error] gone']}}
actions:
  - extract: {field: _raw, pattern: '\\[(?P<level>\\w+)\\] (?P<message>.*)'}
  - filter: 'level == "{{level}}"'
output: {discard: {}}
"""

WITH_TESTS = """\
name: tested
input: {echo: {lines: ['[error] 1']}}
actions:
  - extract: {field: _raw, pattern: '\\[(?P<level>\\w+)\\] (?P<message>.*)'}
output: {discard: {}}
tests:
  - name: extracts
    input: ['[warn] x']
    expect: [{level: warn, message: x}]
"""


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    return sh


def cell(sh: InteractiveShell, text: str, line: str = "") -> Any:
    return sh.run_cell_magic("pipe", line, text)


def pipe(sh: InteractiveShell, line: str) -> Any:
    return sh.run_line_magic("pipe", line)


def magics(sh: InteractiveShell) -> PipeMagics:
    return next(c for c in sh.configurables if isinstance(c, PipeMagics))


# ---------------------------------------------------------------------------- %%pipe


def test_preview_on_the_pipes_own_input(shell: InteractiveShell) -> None:
    result = cell(shell, LEVELS)
    assert isinstance(result, PreviewResult)
    assert shell.user_ns["_pipe"] is result
    assert list(result.df["message"]) == ["disk full", "gone"]
    assert "<h4>Preview of" in result._repr_html_()
    assert magics(shell).last.name == "levels"


def test_preview_params_and_a_name(shell: InteractiveShell) -> None:
    result = cell(shell, LEVELS, "warned --param level=warn")
    assert shell.user_ns["warned"] is result
    assert list(result.df["message"]) == ["slow"]
    assert "warned" in magics(shell).pipes


def test_preview_a_list_variable(shell: InteractiveShell) -> None:
    shell.user_ns["lines"] = ["[error] a", "[info] b", "[error] c", "[error] d"]
    result = cell(shell, LEVELS, "--sample lines --limit 3")
    assert list(result.df["message"]) == ["a", "c"]


def test_preview_a_dataframe_variable(shell: InteractiveShell) -> None:
    shell.user_ns["frame"] = pd.DataFrame({"_raw": ["[error] x", "[warn] y"]})
    result = cell(shell, LEVELS, "fromframe --sample frame")
    assert shell.user_ns["fromframe"].df.to_dict("records") == [
        {"_raw": "[error] x", "level": "error", "message": "x"}
    ]
    assert result.counts_df["stage"].tolist()[-1].endswith("filter")


def test_preview_a_file(shell: InteractiveShell, tmp_path: Path) -> None:
    path = tmp_path / "sample.log"
    path.write_text("[error] one\n[error] two\n[warn] three\n")
    result = cell(shell, LEVELS, f"--sample {path}")
    assert list(result.df["message"]) == ["one", "two"]


def test_config_limit(shell: InteractiveShell) -> None:
    shell.run_line_magic("config", "PipeMagics.limit = 1")
    try:
        result = cell(shell, LEVELS)
        assert list(result.df["message"]) == ["disk full"]
    finally:
        shell.run_line_magic("config", "PipeMagics.limit = 1000")
    assert magics(shell).limit == 1000


def test_an_invalid_cell_reports_cell_lines(shell: InteractiveShell) -> None:
    before = magics(shell).last
    bad = "name: bad\ninput: {echo: {lines: [a]}}\nactions:\n  - fliter: 'True'\noutput: {discrd: {}}\n"
    # issue 13: an invalid cell fails (Run All stops), with the located problems as message
    with pytest.raises(UsageError) as caught:
        cell(shell, bad, "broken")
    err = str(caught.value)
    assert "cell:4:5: unknown action 'fliter'" in err
    assert "cell:5:10: unknown output 'discrd'" in err
    assert "broken" not in shell.user_ns
    assert magics(shell).last is before


def test_a_missing_sample_is_a_usage_error(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="no such variable or file"):
        cell(shell, LEVELS, "--sample not_defined_anywhere")


def test_pipe_test_passes_and_fails(shell: InteractiveShell) -> None:
    cell(shell, WITH_TESTS)
    report = pipe(shell, "test")
    assert report.passed
    assert "extracts" in report._repr_html_()
    cell(shell, WITH_TESTS.replace("message: x}", "message: y}"))
    assert not pipe(shell, "test tested").passed
    with pytest.raises(UsageError, match="no pipe named"):
        pipe(shell, "test nothing-like-this")


def test_help_and_unknown_commands(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pipe(shell, "") is None
    assert "%pipe deploy" in capsys.readouterr().out
    pipe(shell, "help")
    assert "%%pipe [NAME]" in capsys.readouterr().out
    with pytest.raises(UsageError, match="unknown command"):
        pipe(shell, "explode")
    with pytest.raises(UsageError, match="required"):
        pipe(shell, "stop")


# ---------------------------------------------------------------------------- server magics


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as server:
        yield server


def serve_one_capture(agent: Client, key: str, agent_id: str, events: list[Any]) -> None:
    """A simulated agent: check in until a capture command arrives, then send ``events``."""
    seq = iter(range(2, 1000))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = {"agent_id": agent_id, "seq": next(seq), "wait": 1}
        answer = agent.checkin(key, body)
        captures = [c for c in answer["commands"] if c["type"] == "capture"]
        if captures:
            agent.checkin(
                key,
                {
                    "agent_id": agent_id,
                    "seq": next(seq),
                    "acks": [c["id"] for c in captures],
                    "captures": [{"command_id": c["id"], "events": events} for c in captures],
                },
            )
            return


def test_server_magics(shell: InteractiveShell, srv: ServerProcess) -> None:
    with pytest.raises(UsageError, match="server"):
        pipe(shell, f"connect {srv.url} --token wrong")
    info = pipe(shell, f"connect {srv.url} --token {srv.token}")
    assert isinstance(info, Info) and srv.url in repr(info)

    client = Client(srv.url, srv.token)
    client.add_agent("magic-agent", labels=["magic-web"])
    key = client.create_key("magic-agent")["api_key"]

    cell(shell, LEVELS)
    saved = pipe(shell, "save --message first")
    assert (saved["pipe"], saved["version"], saved["created"]) == ("levels", 1, True)
    assert "version 1 saved" in saved._repr_html_()

    agents = pipe(shell, "agents")
    assert isinstance(agents, pd.DataFrame)
    assert agents.loc[0, "id"] == "magic-agent" and agents.loc[0, "labels"] == ["magic-web"]

    dep = pipe(shell, "deploy levels --labels magic-web --param level=warn")
    assert isinstance(dep, Deployed)
    assert dep.id in dep._repr_html_() and dep.id in repr(dep)
    assert client.deployment(dep.id)["params"] == {"level": "warn"}

    status = pipe(shell, "status")
    assert status["id"].tolist() == [dep.id]
    assert status.loc[0, "pipe"] == "levels"
    # The agent checks in once: now it runs the deployment.
    assert client.checkin(key, {"agent_id": "magic-agent", "seq": 1})["desired"]
    instances = pipe(shell, f"status {dep.id}")
    assert instances["agent_id"].tolist() == ["magic-agent"]

    events = [{"level": "warn", "message": "slow"}]
    thread = threading.Thread(
        target=serve_one_capture,
        args=(Client(srv.url, srv.token), key, "magic-agent", events),
        daemon=True,
    )
    thread.start()
    tapped = pipe(shell, f"tap {dep.id} --stage output --limit 5 --timeout 20")
    thread.join(20)
    assert tapped.to_dict("records") == events

    metrics = pipe(shell, f"metrics {dep.id}")
    assert isinstance(metrics, pd.DataFrame) and metrics.empty

    stopped = pipe(shell, f"stop {dep.id}")
    assert stopped.state == "stopped"
    assert pipe(shell, "status").loc[0, "running"] == False  # noqa: E712

    with pytest.raises(UsageError, match="404"):
        pipe(shell, "stop no-such-deployment")


def test_without_a_server_the_magics_say_how_to_connect(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPENB_URL", raising=False)
    fresh = PipeMagics(shell=shell)
    with pytest.raises(UsageError, match="not connected"):
        fresh.pipe("agents")


def test_unload_and_load_again(shell: InteractiveShell) -> None:
    shell.run_line_magic("unload_ext", "pipenb")
    assert "pipe" not in shell.magics_manager.magics["cell"]
    assert not any(isinstance(c, PipeMagics) for c in shell.configurables)
    shell.run_line_magic("load_ext", "pipenb")
    assert list(cell(shell, LEVELS).df["message"]) == ["disk full", "gone"]


def test_the_magic_line_names_a_cell_without_a_name(shell: InteractiveShell) -> None:
    cell = 'input: {echo: {lines: ["[error] disk full"]}}\noutput: {print: {}}\n'
    result = shell.run_cell_magic("pipe", "unnamed", cell)
    assert result.pipe == "unnamed" and len(result.events) == 1
    assert shell.user_ns["unnamed"] is result
    bad = 'input: {echo: {lines: ["x"]}}\nactions:\n  - filtr: x\noutput: {print: {}}\n'
    with pytest.raises(UsageError, match="cell:3:5: unknown action 'filtr'"):
        shell.run_cell_magic("pipe", "unnamed", bad)
