"""The authoring endpoints an editor uses (validate, preview, test, schema): through
``pipenb.Client`` against a real standalone server, and inside a real Jupyter server where sample
paths are read under the Jupyter root and nowhere else. Preview and tests run in a child process
with a time and memory limit: a runaway pipe is stopped and the server keeps answering."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipenb import Client
from pipenb.lang.registry import registry

from support.serverproc import ServerProcess

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PIPE = """\
name: levels
params:
  level: {default: error, enum: [error, notice]}
input: {echo: {events: [{n: 1}]}}
actions:
  - extract: {field: _raw, pattern: '^\\[(?P<level>\\w+)\\] (?P<message>.*)$', on-miss: drop}
  - filter: level == "{{level}}"
  - convert: {fields: {message: int}, when: 'message == "n=3"'}
output: {discard: {}}
tests:
  - name: keeps errors
    input: ['[error] disk full', '[notice] ok']
    expect: [{level: error, message: disk full}]
  - name: a wrong expectation
    input: ['[error] x']
    expect-count: 2
"""
STAGES = ["input:echo", "0:extract", "1:filter", "2:convert"]
LINES = ["[error] disk full", "[notice] started", "no brackets here", "[error] n=3"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with (
        ServerProcess(tmp_path_factory.mktemp("server")) as srv,
        Client(srv.url, srv.token, timeout=30) as c,
    ):
        yield c


def test_validate_reports_every_problem_with_line_col_and_did_you_mean(client: Client) -> None:
    bad = PIPE.replace("  - filter:", "  - fliter:").replace("on-miss: drop", "on-mis: drop")
    answer = client.validate(bad)
    assert answer["ok"] is False
    by_line = {p["line"]: p for p in answer["problems"]}
    assert set(by_line) == {6, 7}, answer["problems"]
    assert "did you mean 'filter'" in by_line[7]["message"]
    assert by_line[7]["column"] == 5
    assert "on-miss" in by_line[6]["message"]


def test_validate_describes_a_valid_pipe(client: Client) -> None:
    answer = client.validate(PIPE)
    assert answer["ok"] is True and answer["problems"] == []
    assert answer["name"] == "levels"
    assert answer["stages"] == STAGES
    (param,) = answer["params"]
    assert param["name"] == "level" and param["enum"] == ["error", "notice"]
    assert param["default"] == "error"
    assert answer["tests"] == 2


def test_validate_refuses_a_body_that_is_not_a_pipe_text(client: Client) -> None:
    from pipenb.errors import ApiError

    with pytest.raises(ApiError) as exc:
        client.request("POST", "/authoring/validate", json={"yaml": PIPE})
    assert exc.value.status == 400 and "text" in exc.value.message


def test_preview_lines_gives_every_stage_and_the_dead_letters(client: Client) -> None:
    answer = client.preview_text(PIPE, lines=LINES)
    assert answer["ok"] is True, answer
    stages = {s["stage"]: s for s in answer["stages"]}
    assert list(stages) == STAGES
    assert stages["0:extract"]["events_in"] == 4 and stages["0:extract"]["events_out"] == 3
    assert stages["0:extract"]["dropped"] == 1
    assert [e["message"] for e in stages["1:filter"]["events"]] == ["disk full", "n=3"]
    assert stages["2:convert"]["errors"] == 1
    (dead,) = answer["errors"]
    assert dead["stage"] == "2:convert" and "not a valid int" in dead["message"]
    assert dead["event"]["message"] == "n=3"


def test_preview_params_change_the_result(client: Client) -> None:
    answer = client.preview_text(PIPE, lines=LINES, params={"level": "notice"})
    stages = {s["stage"]: s for s in answer["stages"]}
    assert [e["message"] for e in stages["1:filter"]["events"]] == ["started"]


def test_preview_of_an_invalid_pipe_is_its_problems(client: Client) -> None:
    answer = client.preview_text(PIPE.replace("name: levels", "nme: levels"), lines=LINES)
    assert answer["ok"] is False
    assert any(p["line"] == 1 and "'name'" in p["message"] for p in answer["problems"])


def test_the_standalone_server_runs_no_code_and_reads_no_pipe_input(client: Client) -> None:
    """On pipenb server an editor cannot otherwise run code or read files on the server's host:
    a preview reads only the lines it is sent, and a pipe needing exec or script is refused
    (inside Jupyter both run: see the tests below)."""
    text = "name: own\ninput: {echo: {events: [{a: 1}, {a: 2}]}}\noutput: {discard: {}}\n"
    answer = client.preview_text(text)
    assert answer["ok"] is False and "send sample lines" in answer["error"], answer
    shadow = "name: shadow\ninput: {files: {path: /etc/shadow}}\noutput: {discard: {}}\n"
    answer = client.preview_text(shadow)
    assert answer["ok"] is False and answer["stages"] == [], answer
    script = PIPE.replace(
        '  - filter: level == "{{level}}"\n',
        '  - script: {code: "def process(event):\\n  return event"}\n',
    )
    answer = client.preview_text(script, lines=LINES)
    assert answer["ok"] is False and "script" in answer["error"] and "runs code" in answer["error"]
    answer = client.test_text(script)
    assert answer["ok"] is False and "runs code" in answer["error"], answer
    cmd = "name: cmd\ninput: {exec: {command: [id]}}\noutput: {discard: {}}\n"
    answer = client.preview_text(cmd, lines=["x"])
    assert answer["ok"] is False and "exec" in answer["error"], answer


def test_preview_path_needs_a_jupyter_root_on_the_standalone_server(client: Client) -> None:
    from pipenb.errors import ApiError

    with pytest.raises(ApiError) as exc:
        client.preview_text(PIPE, path="x.log")
    assert exc.value.status == 400 and "send the sample as lines" in exc.value.message


def test_tests_report_each_case(client: Client) -> None:
    answer = client.test_text(PIPE)
    assert answer["ok"] is True and answer["passed"] is False
    ok, wrong = answer["results"]
    assert ok["name"] == "keeps errors" and ok["passed"] is True
    assert wrong["passed"] is False and "expected 2 event(s), got 1" in wrong["message"]
    assert wrong["line"] == 14  # "- name: a wrong expectation"


def test_schema_comes_from_the_registry(client: Client) -> None:
    schema = client.pipe_schema()
    defs = schema["$defs"]
    for c in registry.all():
        assert f"{c.kind}.{c.name}" in defs
    assert set(schema["properties"]) >= {"name", "input", "actions", "output", "tests"}
    parse = defs["action.parse"]["properties"]["parse"]
    options = parse["anyOf"][0] if "anyOf" in parse else parse
    assert "on-error" in options["properties"]  # YAML spelling, not the Python one
    assert set(options["properties"]["on-error"]["enum"]) >= {"error", "keep", "drop"}


def test_authoring_routes_are_in_the_openapi_document(client: Client) -> None:
    doc = client.request("GET", "/openapi.json", auth=None)
    for path, method in (
        ("validate", "post"),
        ("preview", "post"),
        ("test", "post"),
        ("schema", "get"),
    ):
        op = doc["paths"][f"/pipenb/api/v1/authoring/{path}"][method]
        assert op["security"] == [{"userToken": []}]
    assert "PreviewRequest" in doc["components"]["schemas"]


def test_authoring_needs_a_user_token(client: Client) -> None:
    from pipenb.errors import AuthError

    anonymous = Client(client.url, None, timeout=10)
    with pytest.raises(AuthError):
        anonymous.validate(PIPE)
    with pytest.raises(AuthError):
        anonymous.preview_text(PIPE, lines=LINES)


# ---------------------------------------------------------------------------- inside Jupyter
@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict:
    return {
        "ServerApp": {
            "jpserver_extensions": {"pipenb.jupyter_ext": True, "jupyter_server_terminals": False},
        },
        "PipenbExtension": {"db_url": f"sqlite:///{tmp_path}/x.db"},
    }


async def _post(jp_fetch, what: str, body: dict) -> tuple[int, dict]:
    r = await jp_fetch(
        "pipenb",
        "api",
        "v1",
        "authoring",
        what,
        method="POST",
        body=json.dumps(body),
        raise_error=False,
    )
    return r.code, json.loads(r.body)


async def test_preview_reads_a_sample_file_under_the_jupyter_root(jp_fetch, jp_root_dir) -> None:
    (jp_root_dir / "logs").mkdir()
    (jp_root_dir / "logs" / "app.log").write_text("\n".join(LINES) + "\n")
    code, answer = await _post(jp_fetch, "preview", {"text": PIPE, "path": "logs/app.log"})
    assert code == 200, answer
    assert answer["stages"][0]["events_out"] == 4
    filtered = answer["stages"][2]["events"]
    assert [e["message"] for e in filtered] == ["disk full", "n=3"]


async def test_sample_paths_outside_the_root_are_refused(jp_fetch, jp_root_dir) -> None:
    outside = jp_root_dir.parent / "secret.log"
    outside.write_text("[error] secret\n")
    os.symlink(outside, jp_root_dir / "link.log")
    for path in ("../secret.log", "logs/../../secret.log", "link.log"):
        code, answer = await _post(jp_fetch, "preview", {"text": PIPE, "path": path})
        assert code == 403, (path, answer)
        assert "outside the Jupyter root" in answer["error"]["message"]
    # hidden files, as Jupyter's file browser hides them (allow_hidden is off by default)
    (jp_root_dir / ".secrets").mkdir()
    (jp_root_dir / ".secrets" / "k.log").write_text("[error] key\n")
    code, answer = await _post(jp_fetch, "preview", {"text": PIPE, "path": ".secrets/k.log"})
    assert code == 403 and "hidden" in answer["error"]["message"], answer
    # paths are the file browser's: an absolute one is read from the root too, not from /
    for path in ("missing.log", str(outside)):
        code, answer = await _post(jp_fetch, "preview", {"text": PIPE, "path": path})
        assert code == 404 and "does not exist" in answer["error"]["message"]


async def test_validate_inside_jupyter_needs_jupyters_auth(jp_fetch) -> None:
    code, answer = await _post(jp_fetch, "validate", {"text": PIPE})
    assert code == 200 and answer["ok"] is True
    r = await jp_fetch(
        "pipenb",
        "api",
        "v1",
        "authoring",
        "validate",
        method="POST",
        body=json.dumps({"text": PIPE}),
        headers={"Authorization": ""},
        raise_error=False,
    )
    assert r.code in (401, 403), r.code


async def test_preview_without_a_sample_reads_the_pipes_own_input(jp_fetch) -> None:
    text = "name: own\ninput: {echo: {events: [{a: 1}, {a: 2}]}}\noutput: {discard: {}}\n"
    code, answer = await _post(jp_fetch, "preview", {"text": text})
    assert code == 200 and answer["ok"] is True, answer
    assert answer["stages"][-1]["events"] == [{"a": 1}, {"a": 2}]


async def test_a_runaway_pipe_is_stopped_and_the_server_keeps_answering(jp_fetch) -> None:
    loop = PIPE.replace(
        '  - filter: level == "{{level}}"\n',
        '  - script: {code: "def process(event):\\n  while True: pass"}\n',
    )
    started = time.monotonic()
    code, answer = await _post(jp_fetch, "preview", {"text": loop, "lines": LINES, "timeout": 2})
    assert code == 200 and answer["ok"] is False
    assert "limit" in answer["error"], answer
    assert time.monotonic() - started < 30  # the 2 s limit, with a generous margin
    r = await jp_fetch("pipenb", "api", "v1", "health", method="GET")
    assert json.loads(r.body)["status"] == "ok"


async def test_a_pipe_that_eats_memory_is_stopped(jp_fetch) -> None:
    hog = PIPE.replace(
        '  - filter: level == "{{level}}"\n',
        '  - script: {code: "def process(event):\\n  return [bytearray(2**20) for _ in range(4096)]"}\n',
    )
    code, answer = await _post(jp_fetch, "preview", {"text": hog, "lines": LINES, "timeout": 20})
    assert code == 200
    # the child cannot get 4 GiB: its events fail (dead letters) or the run stops at the limit
    if answer["ok"]:  # the script's MemoryError sent each event to the dead letters
        assert answer["errors"] and all(
            e["message"].startswith("script") or "Memory" in e["message"] for e in answer["errors"]
        ), answer["errors"]
    else:
        assert "limit" in answer["error"]
