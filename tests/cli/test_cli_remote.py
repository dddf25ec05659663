"""``pipenb pipes|agents|deploy|deployments|tap`` against a real server, run as a user would run
them: a subprocess with ``PIPENB_URL`` and ``PIPENB_TOKEN`` in its environment."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.client import Client

from support.cli import cli_env
from support.pipes import BAD_PIPE as BAD
from support.pipes import LABELLED_PIPE as PIPE
from support.serverproc import ServerProcess
from support.waiting import wait_until

_ids = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def pipe_file(directory: Path, name: str, label: str = "web", extra: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(PIPE.format(name=name, label=label) + extra)
    return path


def agent_with_key(client: Client, labels: list[str]) -> tuple[str, str]:
    agent_id = unique("agent")
    client.add_agent(agent_id, labels=labels)
    return agent_id, client.create_key(agent_id)["api_key"]


def checkin(client: Client, agent_id: str, key: str, seq: int, **body: Any) -> dict[str, Any]:
    return client.checkin(key, {"agent_id": agent_id, "seq": seq, **body})


# ---------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "args",
    [
        ["pipes"],
        ["pipes", "push"],
        ["pipes", "diff", "x", "1", "two"],
        ["agents", "keys"],
        ["deploy"],
        ["deploy", "x", "--agents", "a", "--labels", "b"],
        ["deploy", "x", "--instances", "0"],
        ["deploy", "x", "--version", "newest"],
        ["deployments", "frobnicate"],
        ["tap", "dep-x", "--limit", "0"],
    ],
)
def test_usage_errors_exit_2(pnb, args: list[str]) -> None:
    code, out, err = pnb(*args)
    assert code == 2, (out, err)
    assert "usage: pipenb" in err


def test_help_names_the_environment_variables(pnb) -> None:
    code, out, _ = pnb("deployments", "status", "--help")
    assert code == 0
    assert "[PIPENB_URL]" in out and "[PIPENB_TOKEN]" in out and "--json" in out


def test_no_url_is_a_usage_error(pnb) -> None:
    code, out, err = pnb("pipes", "list", PIPENB_URL=None)
    assert (code, out) == (2, "")
    assert err.startswith("pipenb: no server URL") and "PIPENB_URL" in err


def test_a_bad_param_is_a_usage_error(pnb) -> None:
    code, _, err = pnb("deploy", "whatever", "--param", "novalue")
    assert code == 2
    assert err == "pipenb: --param takes NAME=VALUE, got 'novalue'\n"


def test_wrong_token_and_unreachable_server_exit_1(pnb, srv: ServerProcess) -> None:
    code, out, err = pnb("agents", "list", "--token", "wrong")
    assert (code, out) == (1, "")
    assert err.startswith("pipenb: ") and "token" in err
    code, _, err = pnb("agents", "list", "--url", "http://127.0.0.1:1")
    assert code == 1
    assert err.startswith("pipenb: cannot reach the server at http://127.0.0.1:1")
    code, out, _ = pnb("agents", "list", "--url", srv.url, PIPENB_URL="http://127.0.0.1:1")
    assert code == 0, "--url wins over PIPENB_URL"


# ---------------------------------------------------------------------------- pipes


def test_pipes_push_list_show_versions_diff_delete(pnb, tmp_path: Path) -> None:
    name = unique("p")
    path = pipe_file(tmp_path, name)
    assert pnb("pipes", "push", str(path), "--message", "first") == (
        0,
        f"pushed {name} version 1\n",
        "",
    )
    assert pnb("pipes", "push", str(path)) == (0, f"{name} is unchanged (version 1)\n", "")
    pipe_file(tmp_path, name, "db")
    code, out, _ = pnb("pipes", "push", str(path), "-m", "to db", "--json")
    assert code == 0
    assert orjson.loads(out) == {"pipe": name, "version": 2, "created": True}

    code, out, _ = pnb("pipes", "list")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["NAME", "VERSION", "VERSIONS"]
    assert re.search(rf"^{name}\s+2\s+2\s+0\s+db\b", out, re.M), out
    code, out, _ = pnb("pipes", "list", "--json")
    assert name in {p["name"] for p in orjson.loads(out)["pipes"]}

    code, out, _ = pnb("pipes", "show", name)
    assert (code, out) == (0, path.read_text())
    code, out, _ = pnb("pipes", "show", name, "--version", "1")
    assert "labels: [web]" in out
    code, out, _ = pnb("pipes", "show", name, "--json")
    assert orjson.loads(out)["version"] == 2

    code, out, _ = pnb("pipes", "versions", name)
    assert code == 0
    assert re.search(r"^1\s+\S+\s+[0-9a-f]{12}\s+admin\s+first$", out, re.M), out
    assert re.search(r"^2\s+\S+\s+[0-9a-f]{12}\s+admin\s+to db$", out, re.M), out

    code, out, _ = pnb("pipes", "diff", name, "1", "2")
    assert code == 0
    assert "-labels: [web]\n+labels: [db]\n" in out
    code, out, _ = pnb("pipes", "diff", name, "2", "2")
    assert out == f"{name}: versions 2 and 2 are identical\n"

    assert pnb("pipes", "delete", name) == (0, f"deleted pipe {name}\n", "")
    code, out, err = pnb("pipes", "show", name)
    assert (code, out, err) == (1, "", f"pipenb: pipe '{name}' does not exist\n")


def test_pushing_an_invalid_pipe_prints_located_problems(pnb, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    code, out, err = pnb("pipes", "push", "bad.yaml")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    # issue 13: the first problem once, not in the message and again in the list
    assert lines[0] == "pipenb: the pipe has 3 problem(s):"
    assert len(lines) == 4
    for line in lines[1:]:
        assert re.match(r"^bad\.yaml:\d+:\d+: \S", line), line
    assert lines[1].startswith("bad.yaml:2:28: unknown option 'bogus' for echo")
    assert lines[2].startswith("bad.yaml:4:5: unknown action 'extrac'")

    code, _, err = pnb("pipes", "push", "missing.yaml")
    assert code == 2
    assert err.startswith("pipenb: cannot read missing.yaml")


# ---------------------------------------------------------------------------- agents


def test_agents_add_list_label_keys_remove(pnb, client: Client) -> None:
    agent_id = unique("agent")
    code, out, _ = pnb("agents", "add", agent_id, "--name", "Box", "--labels", "web, eu")
    assert code == 0
    assert out.splitlines()[0] == f"added agent {agent_id} (labels: web, eu)"
    code, out, _ = pnb("agents", "list")
    assert re.search(rf"^{agent_id}\s+Box\s+offline\s+web,eu\s+0", out, re.M), out
    code, out, _ = pnb("agents", "list", "--json")
    listed = {a["id"]: a for a in orjson.loads(out)["agents"]}
    assert listed[agent_id]["labels"] == ["web", "eu"]

    assert pnb("agents", "label", agent_id, "db,eu") == (
        0,
        f"agent {agent_id} labels: db, eu\n",
        "",
    )
    assert client.agent(agent_id)["labels"] == ["db", "eu"]

    code, out, _ = pnb("agents", "keys", "create", agent_id)
    assert code == 0
    lines = out.splitlines()
    key_id = client.keys(agent_id)["keys"][0]["key_id"]
    assert lines[0] == f"API key {key_id} for agent {agent_id}:"
    assert lines[1].startswith(f"pnb_{key_id}_")
    assert "not shown again" in lines[2]
    code, out, _ = pnb("agents", "keys", "create", agent_id, "--json")
    second = orjson.loads(out)
    assert second["api_key"].startswith("pnb_") and second["key_id"] != key_id

    assert pnb("agents", "keys", "revoke", agent_id, key_id) == (
        0,
        f"revoked key {key_id} of agent {agent_id}\n",
        "",
    )
    revoked = {k["key_id"]: k["revoked_at"] for k in client.keys(agent_id)["keys"]}
    assert revoked[key_id] is not None and revoked[second["key_id"]] is None
    code, _, err = pnb("agents", "keys", "revoke", agent_id, "nope")
    assert code == 1 and "does not exist" in err

    assert pnb("agents", "remove", agent_id) == (0, f"removed agent {agent_id}\n", "")
    code, _, err = pnb("agents", "remove", agent_id)
    assert (code, err) == (1, f"pipenb: agent '{agent_id}' does not exist\n")


# ---------------------------------------------------------------------------- deployments


def test_deploy_prints_only_the_id_for_shell_capture(
    pnb, srv: ServerProcess, client: Client, tmp_path: Path
) -> None:
    name, label = unique("p"), unique("label")
    client.push_file(pipe_file(tmp_path, name, label))
    agent_id, _ = agent_with_key(client, [label])
    script = (
        f'DEP=$("{sys.executable}" -m pipenb deploy {name} --param n=4) && '
        f'"{sys.executable}" -m pipenb deployments status "$DEP" --json'
    )
    env = {k: v for k, v in cli_env().items() if not k.startswith("PIPENB_")}
    env.update(PIPENB_URL=srv.url, PIPENB_TOKEN=srv.token)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    dep = orjson.loads(proc.stdout)
    assert (dep["pipe"], dep["params"]) == (name, {"n": "4"})
    assert [s["agent_id"] for s in dep["status"]] == [agent_id]

    code, out, err = pnb("deploy", name, "--labels", label, "--instances", "1")
    assert code == 0 and err == ""
    assert re.fullmatch(r"dep-[0-9a-f]+\n", out), out
    assert client.deployment(out.strip())["instances"] == 1

    code, out, _ = pnb("deploy", name, "--agents", agent_id, "--version", "1", "--json")
    dep = orjson.loads(out)
    assert (dep["agents"], dep["version"], dep["failover"]) == ([agent_id], 1, False)
    code, out, _ = pnb("deploy", name, "--instances", "2", "--failover", "--json")
    assert orjson.loads(out)["failover"] is True

    code, out, err = pnb("deploy", name, "--param", "n=lots")
    assert (code, out) == (1, "")
    assert "parameter 'n' expects int" in err
    code, _, err = pnb("deploy", "no-such-pipe")
    assert (code, err) == (1, "pipenb: pipe 'no-such-pipe' does not exist\n")


def test_deployments_list_status_start_stop_upgrade_delete(
    pnb, client: Client, tmp_path: Path
) -> None:
    name, label = unique("p"), unique("label")
    client.push_file(pipe_file(tmp_path, name, label))
    agent_id, key = agent_with_key(client, [label])
    dep_id = client.deploy(name, version=1)["id"]

    answer = checkin(client, agent_id, key, 1)
    report = {
        "deployment_id": dep_id,
        "hash": answer["desired"][0]["hash"],
        "state": "running",
        "metrics": {"input": {"events": 17}, "output": {"events": 11}},
    }
    # The agent reports and then holds its check-in open (long poll), so it stays online
    # however slowly the commands below run; `deployments stop` answers the held check-in.
    agent_client = Client(client.url, client.token, timeout=10)
    held = threading.Thread(
        target=checkin,
        args=(agent_client, agent_id, key, 2),
        kwargs={"pipes": [report], "desired_hash": answer["desired_hash"], "wait": 60},
        daemon=True,
    )
    held.start()
    wait_until(
        lambda: client.deployment(dep_id)["state"] == "running",
        what="the reported state to reach the server",
    )

    code, out, _ = pnb("deployments", "list")
    assert code == 0
    assert re.search(rf"^{dep_id}\s+{name}\s+1\s+running\s+all\s+1\s+labels {label}", out, re.M)
    code, out, _ = pnb("deployments", "list", "--json")
    assert dep_id in {d["id"] for d in orjson.loads(out)["deployments"]}

    code, out, _ = pnb("deployments", "status", dep_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"deployment {dep_id}: {name} version 1, running"
    header = next(i for i, line in enumerate(lines) if line.startswith("AGENT"))
    assert lines[header].split() == [
        "AGENT",
        "AGENT_STATE",
        "STATE",
        "IN_SYNC",
        "EVENTS_IN",
        "EVENTS_OUT",
        "ERROR",
    ]
    assert lines[header + 1].split() == [agent_id, "online", "running", "true", "17", "11"]

    code, out, _ = pnb("deployments", "stop", dep_id)
    assert (code, out) == (0, f"stopped {dep_id}: {name} version 1, stopped\n")
    held.join(30)
    assert not held.is_alive()
    assert client.deployment(dep_id)["running"] is False
    code, out, _ = pnb("deployments", "start", dep_id, "--json")
    assert orjson.loads(out)["running"] is True

    client.push_file(pipe_file(tmp_path, name, label, "# v2\n"))
    code, out, _ = pnb("deployments", "upgrade", dep_id)
    assert code == 0
    # issue 13: an upgrade without --version pins the newest version (no longer "latest")
    assert out.startswith(f"upgraded {dep_id}: {name} version 2, ")
    code, out, _ = pnb("deployments", "upgrade", dep_id, "--version", "latest")
    assert out.startswith(f"upgraded {dep_id}: {name} version latest (2), ")
    code, out, _ = pnb("deployments", "upgrade", dep_id, "--version", "1", "--json")
    assert orjson.loads(out)["version"] == 1
    code, _, err = pnb("deployments", "upgrade", dep_id, "--version", "9")
    assert (code, err) == (1, f"pipenb: pipe '{name}' has no version 9\n")

    code, _, err = pnb("pipes", "delete", name)
    assert code == 1 and "is deployed" in err
    assert pnb("deployments", "delete", dep_id) == (0, f"deleted deployment {dep_id}\n", "")
    code, _, err = pnb("deployments", "status", dep_id)
    assert (code, err) == (1, f"pipenb: deployment '{dep_id}' does not exist\n")


# ---------------------------------------------------------------------------- tap


def test_tap_shows_events_captured_by_the_agent(pnb, client: Client, tmp_path: Path) -> None:
    name, label = unique("p"), unique("label")
    client.push_file(pipe_file(tmp_path, name, label))
    agent_id, key = agent_with_key(client, [label])
    dep_id = client.deploy(name)["id"]
    dhash = checkin(client, agent_id, key, 1)["desired_hash"]
    events = [{"_raw": "first", "n": 1}, {"_raw": "second", "n": 2}, {"_raw": "third", "n": 3}]
    errors: list[BaseException] = []

    def agent(expected: int) -> None:
        """Hold check-ins (long poll) until a capture arrives, then send the events back."""
        try:
            seq, deadline = 10 * expected, time.monotonic() + 30
            while time.monotonic() < deadline:
                seq += 1
                answer = checkin(client, agent_id, key, seq, desired_hash=dhash, wait=2)
                for c in answer["commands"]:
                    got = events[: c["args"]["limit"]]
                    cap = {"command_id": c["id"], "events": got}
                    checkin(client, agent_id, key, seq + 1, acks=[c["id"]], captures=[cap])
                    return
        except BaseException as exc:
            errors.append(exc)

    for round_, (args, check) in enumerate(
        [
            (["--json", "--limit", "2"], lambda out: orjson.loads(out) == events[:2]),
            (["--stage", "input"], lambda out: out.splitlines()[0].split() == ["_RAW", "N"]),
        ],
        start=1,
    ):
        thread = threading.Thread(target=agent, args=(round_,), daemon=True)
        thread.start()
        code, out, err = pnb("tap", dep_id, *args)
        thread.join(30)
        assert not errors, errors
        assert code == 0, err
        assert check(out), out

    commands = client.commands(dep_id)["commands"]
    assert [c["args"] for c in commands] == [
        {"stage": "output", "limit": 2},
        {"stage": "input", "limit": 10},
    ]


def test_tap_exits_1_when_no_agent_answers(pnb, client: Client, tmp_path: Path) -> None:
    name, label = unique("p"), unique("label")
    client.push_file(pipe_file(tmp_path, name, label))
    agent_id, _ = agent_with_key(client, [label])
    dep_id = client.deploy(name)["id"]
    code, out, err = pnb("tap", dep_id, "--timeout", "0.2")
    assert (code, out) == (1, "")
    assert err.startswith(f"pipenb: no capture from agent(s) {agent_id} within 0.2 s")


def test_environment_is_not_leaked_into_help(pnb) -> None:
    code, out, _ = pnb("tap", "--help", PIPENB_TOKEN="s3cret")
    assert code == 0 and "s3cret" not in out
