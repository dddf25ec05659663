"""Secret parameters: sealed at rest, masked in every answer and log, clear only on the agent.

A pipe declares ``params: {password: {secret: true}}``; the value given at deploy time must be
absent from API answers, CLI output, the server's logs and the database file's bytes (WAL
included), and present in what the agent runs. The database, the key and the agent's data dir
are their owner's alone.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from pipenb.errors import ApiError, PipeSyntaxError
from pipenb.lang.validate import load_pipe
from pipenb.server.secrets import MASK, SecretBox, default_key_file, is_sealed, mask_params

from support.agentproc import AgentProcess
from support.cli import run_cli
from support.serverproc import ServerProcess
from support.waiting import wait_until

TOKEN = "user-" + secrets.token_urlsafe(24)
ENROLL_KEY = "enroll-" + secrets.token_urlsafe(24)

PIPE = """\
name: {name}
params:
  password: {{secret: true, description: the collector's password}}
  out: {{default: "{out}"}}
input: {{echo: {{lines: ["one", "two"]}}}}
actions:
  - add: {{auth: "{{{{password}}}}"}}
output: {{file: {{path: "{{{{out}}}}"}}}}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------ the language


def test_a_secret_param_takes_no_default_and_says_where():
    text = "name: p\nparams:\n  pw: {secret: true, default: hunter2}\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n"
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(text, "p.yml", {})
    problem = err.value.problems[0]
    assert (problem.line, problem.column) == (3, 22)  # the `default` key
    assert "takes no default" in problem.message and "--param pw=" in problem.message


def test_secret_must_be_a_boolean():
    text = "name: p\nparams:\n  pw: {secret: yes please}\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n"
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(text, "p.yml", {"pw": "x"})
    assert "secret must be true or false" in str(err.value)


def test_a_wrong_secret_value_is_never_quoted_in_the_error():
    text = (
        "name: p\nparams:\n  port: {secret: true, type: int}\n"
        "input: {echo: {lines: [a]}}\noutput: {discard: {}}\n"
    )
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(text, "p.yml", {"port": "not-a-number-s3cr3t"})
    assert "expects int, got ***" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_a_secret_param_is_a_plain_value_in_a_local_run():
    text = (
        "name: p\nparams:\n  pw: {secret: true}\ninput: {echo: {lines: [a]}}\n"
        "actions:\n  - add: {auth: '{{pw}}'}\noutput: {discard: {}}\n"
    )
    spec = load_pipe(text, "p.yml", {"pw": "hunter2"})
    assert spec.params["pw"].secret and spec.values["pw"] == "hunter2"


# ------------------------------------------------------------------------------ the box


def test_the_box_seals_opens_and_keeps_an_unchanged_secret_sealed_the_same(tmp_path):
    box = SecretBox(str(tmp_path / "k" / "secret.key"))
    stored = box.seal_params({"pw": "hunter2", "n": 3}, {"pw"})
    assert is_sealed(stored["pw"]) and stored["n"] == 3
    assert "hunter2" not in str(stored)
    assert box.open_params(stored) == {"pw": "hunter2", "n": 3}
    assert mask_params(stored) == {"pw": MASK, "n": 3}
    # the same value again keeps its sealed form (the pipe's hash, so no restart); a new one not
    assert box.seal_params({"pw": "hunter2"}, {"pw"}, stored)["pw"] == stored["pw"]
    assert box.seal_params({"pw": "other"}, {"pw"}, stored)["pw"] != stored["pw"]
    assert mode(tmp_path / "k" / "secret.key") == 0o600
    # a second box (another process) reads the same key
    assert SecretBox(str(tmp_path / "k" / "secret.key")).open(stored["pw"]) == "hunter2"


def test_without_a_key_file_secrets_are_refused_not_stored_in_clear():
    assert default_key_file("postgresql://db/pipenb") is None
    with pytest.raises(ApiError) as err:
        SecretBox(None).seal("hunter2")
    assert err.value.status == 400 and "--secret-key-file" in str(err.value)


# ------------------------------------------------------------------------------ end to end


def test_a_secret_param_reaches_the_agent_and_nothing_else(tmp_path):
    password = "pw-" + secrets.token_urlsafe(24)
    srv = ServerProcess(tmp_path / "server", token=TOKEN, enroll_key=ENROLL_KEY)
    agent: AgentProcess | None = None
    cli_output: list[str] = []
    try:
        srv.start()
        agent_dir = tmp_path / "agent"
        agent = AgentProcess(
            srv.url, agent_dir, enroll_key=ENROLL_KEY, labels=["sec"], long_poll=2, token=TOKEN
        ).start()
        agent_id = agent.wait_enrolled()
        out = agent_dir / "out" / "secret.ndjson"
        pipe_file = tmp_path / "secret.yml"
        pipe_file.write_text(PIPE.format(name="secret-pipe", out=out))
        remote = ("--url", srv.url, "--token", TOKEN)
        p = run_cli("pipes", "push", pipe_file, *remote)
        assert p.returncode == 0, p.stderr
        p = run_cli(
            "-vv", "deploy", "secret-pipe", "--labels", "sec", "--param", f"password={password}",
            *remote,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        cli_output += [p.stdout, p.stderr]
        dep = p.stdout.strip().splitlines()[-1].split()[0]

        # the agent ran the pipe with the clear value
        wait_until(
            lambda: out.exists() and password in out.read_text(),
            timeout=30,
            what="the agent's output with the secret in it",
            info=lambda: srv.request("GET", f"/deployments/{dep}").json(),
        )
        # every answer masks it
        one = srv.request("GET", f"/deployments/{dep}").json()
        assert one["params"] == {"password": MASK}
        listed = srv.request("GET", "/deployments").json()["deployments"]
        assert [d["params"] for d in listed if d["id"] == dep] == [{"password": MASK}]
        p = run_cli("-vv", "deployments", "status", dep, *remote)
        assert p.returncode == 0, p.stderr
        cli_output += [p.stdout, p.stderr]

        # an upgrade that keeps the params keeps the secret (sealed the same: no restart)
        before = {s["agent_id"]: s["hash"] for s in one["status"]}
        up = srv.request("POST", f"/deployments/{dep}/upgrade", json={"version": "latest"})
        assert up.status_code == 200, up.text
        assert up.json()["params"] == {"password": MASK}
        wait_until(
            lambda: all(
                s["in_sync"] for s in srv.request("GET", f"/deployments/{dep}").json()["status"]
            ),
            timeout=30,
            what="the upgraded deployment in sync",
        )
        after = srv.request("GET", f"/deployments/{dep}").json()
        assert (
            {s["agent_id"]: s["hash"] for s in after["status"]}
            == before
            == {agent_id: before[agent_id]}
        )
        assert agent.terminate() == 0
    finally:
        if agent is not None:
            agent.cleanup()
        srv.stop()

    server_dir = tmp_path / "server"
    db = server_dir / "server.db"
    raw = b"".join(f.read_bytes() for f in server_dir.iterdir() if f.name.startswith(db.name))
    assert b"secret-pipe" in raw  # the database was read: this is not a vacuous check
    assert password.encode() not in raw
    for f in server_dir.rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f
    assert password not in "\n".join(cli_output)
    # the agent's logs never show it; its desired set holds it, readable by the agent's user only
    for f in (tmp_path / "agent").rglob("*"):
        if f.is_file() and f.name not in ("desired.json", "secret.ndjson"):
            text = f.read_bytes()
            if f.name == "agent.log":  # the harness writes the command line there
                text = b"\n".join(x for x in text.splitlines() if not x.startswith(b"--- "))
            assert password.encode() not in text, f
    assert password.encode() in (tmp_path / "agent" / "desired.json").read_bytes()
    assert mode(db) == 0o600
    assert mode(server_dir / "secret.key") == 0o600
    assert mode(tmp_path / "agent") == 0o700
    assert mode(tmp_path / "agent" / "desired.json") == 0o600
    logs = list((tmp_path / "agent" / "logs").glob("*.log"))
    assert logs and all(mode(f) == 0o600 for f in logs)
