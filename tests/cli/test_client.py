"""``pipenb.Client`` against a real ``pipenb server``: every method, its errors, and ``tap`` with
a simulated agent checking in from a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipenb.client import Client
from pipenb.errors import ApiError, AuthError, UsageError

from support.pipes import BAD_PIPE as BAD
from support.pipes import position
from support.serverproc import ServerProcess

PIPE = """\
name: {name}
description: a pipe for the client tests
labels: [{label}]
params:
  level: {{default: error, enum: [warn, error]}}
  n: {{default: 1, type: int}}
input: {{echo: {{lines: ['[error] disk full']}}}}
actions:
  - filter: 'True'
output: {{discard: {{}}}}
"""


def pipe_text(name: str, label: str = "web", extra: str = "") -> str:
    return PIPE.format(name=name, label=label) + extra


SERVER = {"enroll_key": "ek"}  # the shared srv fixture


@pytest.fixture
def client(srv: ServerProcess) -> Iterator[Client]:
    with Client(srv.url, srv.token, timeout=10) as c:
        yield c


_ids = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    """Tests share one server: every pipe and agent gets a name of its own."""
    return f"{prefix}-{next(_ids)}"


class FakeAgent:
    """The agent side of the check-in protocol, enough to answer commands and report state."""

    def __init__(self, client: Client, agent_id: str, api_key: str):
        self.client, self.id, self.key = client, agent_id, api_key
        self.seq = 0
        self.desired_hash: str | None = None

    def checkin(self, wait: float = 0, **body: Any) -> dict[str, Any]:
        self.seq += 1
        answer = self.client.checkin(
            self.key,
            {
                "agent_id": self.id,
                "seq": self.seq,
                "desired_hash": self.desired_hash,
                "wait": wait,
                **body,
            },
        )
        self.desired_hash = answer["desired_hash"]
        return answer

    def serve_captures(self, events: list[Any], deadline: float, errors: list[BaseException]):
        """Until a capture command arrives (or the deadline), then send its events back."""
        try:
            while time.monotonic() < deadline:
                # The server holds this check-in until something changes for the agent.
                answer = self.checkin(wait=max(0.1, min(2.0, deadline - time.monotonic())))
                captures = [c for c in answer["commands"] if c["type"] == "capture"]
                if captures:
                    self.checkin(
                        acks=[c["id"] for c in captures],
                        captures=[
                            {"command_id": c["id"], "events": events[: c["args"]["limit"]]}
                            for c in captures
                        ],
                    )
                    return
            raise AssertionError("no capture command reached the agent")
        except BaseException as exc:
            errors.append(exc)


def new_agent(client: Client, labels: list[str]) -> FakeAgent:
    agent_id = unique("agent")
    client.add_agent(agent_id, labels=labels)
    key = client.create_key(agent_id)["api_key"]
    # A session of its own: the agent may check in from a thread while the test calls the API.
    return FakeAgent(Client(client.url, client.token, timeout=10), agent_id, key)


# ---------------------------------------------------------------------------- connection


def test_health_and_the_url_forms_a_client_accepts(srv: ServerProcess) -> None:
    for url in (srv.url, srv.url + "/", srv.url + "/pipenb/api/v1", srv.url[len("http://") :]):
        health = Client(url, srv.token).health()
        assert health["status"] == "ok"
        assert health["version"]


def test_url_and_token_come_from_the_environment(
    srv: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPENB_URL", srv.url)
    monkeypatch.setenv("PIPENB_TOKEN", srv.token)
    assert "pipes" in Client().pipes()
    monkeypatch.delenv("PIPENB_URL")
    with pytest.raises(UsageError, match="PIPENB_URL"):
        Client()


def test_an_unreachable_server_is_an_api_error_with_status_0() -> None:
    with pytest.raises(ApiError) as info:
        Client("http://127.0.0.1:1", "t").pipes()
    assert (info.value.status, info.value.code) == (0, "unreachable")
    assert "cannot reach the server at http://127.0.0.1:1" in info.value.message


def test_a_wrong_or_missing_token_is_an_auth_error(srv: ServerProcess) -> None:
    for token in ("wrong", None):
        with pytest.raises(AuthError) as info:
            Client(srv.url, token).pipes()
        assert info.value.status == 401
    assert Client(srv.url, None).health()["status"] == "ok"  # health needs no token


def test_an_agent_key_is_refused_on_user_endpoints(client: Client, srv: ServerProcess) -> None:
    agent = new_agent(client, [])
    with pytest.raises(AuthError) as info:
        Client(srv.url, agent.key).agents()
    assert info.value.status == 403


# ---------------------------------------------------------------------------- pipes


def test_push_dedupes_identical_content_and_keeps_versions(client: Client) -> None:
    name = unique("p")
    first = client.push(pipe_text(name), "first")
    assert first == {"pipe": name, "version": 1, "created": True}
    assert client.push(pipe_text(name), "again") == {"pipe": name, "version": 1, "created": False}
    second = client.push(pipe_text(name, "db"), "second")
    assert (second["version"], second["created"]) == (2, True)

    versions = client.versions(name)["versions"]
    assert [(v["version"], v["message"]) for v in versions] == [(1, "first"), (2, "second")]
    assert all(v["yaml"] is None for v in versions)

    assert client.pipe(name)["yaml"] == pipe_text(name, "db")
    assert client.pipe(name, 1)["yaml"] == pipe_text(name)
    assert client.pipe(name, "1")["version"] == 1

    diff = client.diff(name, 1, 2)
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    assert "-labels: [web]\n+labels: [db]\n" in diff["diff"]

    summary = next(p for p in client.pipes()["pipes"] if p["name"] == name)
    assert summary["latest_version"] == 2
    assert summary["versions"] == 2
    assert summary["labels"] == ["db"]
    assert summary["description"] == "a pipe for the client tests"


def test_an_invalid_pipe_is_a_400_with_located_problems(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        client.push(BAD)
    exc = info.value
    assert not isinstance(exc, AuthError)
    assert (exc.status, exc.code) == (400, "invalid_pipe")
    assert len(exc.details) == 3
    found = {(d["line"], d["column"]) for d in exc.details}
    assert position(BAD, "bogus") in found
    assert position(BAD, "extrac") in found
    assert all(d["file"] == "<pushed>" and d["message"] for d in exc.details)

    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(ApiError) as info:
        client.push_file(path)
    assert {d["file"] for d in info.value.details} == {str(path)}
    assert str(path) in info.value.message and "<pushed>" not in info.value.message


def test_push_file(client: Client, tmp_path: Path) -> None:
    name = unique("p")
    path = tmp_path / "p.yaml"
    path.write_text(pipe_text(name))
    assert client.push_file(path, "from a file")["version"] == 1
    assert client.versions(name)["versions"][0]["message"] == "from a file"
    with pytest.raises(UsageError, match="cannot read"):
        client.push_file(tmp_path / "missing.yaml")


def test_missing_things_are_404s(client: Client) -> None:
    calls = [
        lambda: client.pipe("no-such-pipe"),
        lambda: client.versions("no-such-pipe"),
        lambda: client.agent("no-such-agent"),
        lambda: client.deployment("no-such-deployment"),
        lambda: client.get_command("no-such-command"),
        lambda: client.delete_pipe("no-such-pipe"),
    ]
    for call in calls:
        with pytest.raises(ApiError) as info:
            call()
        assert (info.value.status, info.value.code) == (404, "not_found")
    name = unique("p")
    client.push(pipe_text(name))
    with pytest.raises(ApiError) as info:
        client.pipe(name, 7)
    assert info.value.status == 404


def test_delete_pipe(client: Client) -> None:
    name = unique("p")
    client.push(pipe_text(name))
    assert client.delete_pipe(name) is None
    assert name not in {p["name"] for p in client.pipes()["pipes"]}


# ---------------------------------------------------------------------------- agents


def test_agents_add_label_keys_revoke_remove(client: Client) -> None:
    agent_id = unique("agent")
    added = client.add_agent(agent_id, name="Box", labels=["web", "eu", "web"])
    assert (added["id"], added["name"], added["labels"]) == (agent_id, "Box", ["web", "eu"])
    assert added["state"] == "offline" and added["enrolled"] is False
    with pytest.raises(ApiError) as info:
        client.add_agent(agent_id)
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        client.add_agent("bad id!")
    assert (info.value.status, info.value.code) == (400, "invalid_body")

    assert client.update_agent(agent_id, labels=["db"])["labels"] == ["db"]
    assert client.update_agent(agent_id, name="Renamed")["labels"] == ["db"]
    assert client.agent(agent_id)["name"] == "Renamed"
    assert agent_id in {a["id"] for a in client.agents()["agents"]}

    key = client.create_key(agent_id)
    assert key["agent_id"] == agent_id and key["api_key"].startswith("pnb_")
    listed = client.keys(agent_id)["keys"]
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "api_key" not in listed[0]

    agent = FakeAgent(client, agent_id, key["api_key"])
    agent.checkin()
    assert client.agent(agent_id)["state"] == "online"

    assert client.revoke_key(agent_id, key["key_id"]) is None
    assert client.keys(agent_id)["keys"][0]["revoked_at"] is not None
    with pytest.raises(AuthError) as auth:
        agent.checkin()
    assert auth.value.status == 401

    assert client.remove_agent(agent_id) is None
    with pytest.raises(ApiError) as info:
        client.agent(agent_id)
    assert info.value.status == 404


def test_enroll_needs_only_the_enrollment_key(srv: ServerProcess) -> None:
    anonymous = Client(srv.url, token="")
    user = Client(srv.url, srv.token)
    made = user.create_enroll_token(["edge"], name="edge hosts", uses=2, expires_in="1h")
    assert made["token"].startswith("pnbe_") and made["state"] == "active"
    assert made["max_uses"] == 2 and made["expires_at"] is not None
    result = anonymous.enroll(made["token"], name="Enrolled", attributes={"host": "h1"})
    agent_id = result["agent_id"]
    assert agent_id.startswith("agent-") and result["api_key"].startswith("pnb_")
    assert result["labels"] == ["edge"]
    FakeAgent(anonymous, agent_id, result["api_key"]).checkin()

    agent = user.agent(agent_id)
    assert agent["enrolled"] is True
    assert agent["labels"] == ["edge"] and agent["name"] == "Enrolled"
    assert agent["attributes"] == {"host": "h1"}
    assert agent["state"] == "online"
    listed = {t["id"]: t for t in user.enroll_tokens()["tokens"]}
    assert listed[made["id"]]["uses"] == 1 and "token" not in listed[made["id"]]

    bootstrap = anonymous.enroll("ek")
    assert bootstrap["agent_id"].startswith("agent-") and bootstrap["labels"] == []
    with pytest.raises(AuthError) as info:
        anonymous.enroll("wrong-key")
    assert info.value.status == 401
    user.revoke_enroll_token(made["id"])
    assert user.enroll_token(made["id"])["state"] == "revoked"
    with pytest.raises(AuthError) as revoked:
        anonymous.enroll(made["token"])
    assert revoked.value.status == 401 and "revoked" in str(revoked.value)
    with pytest.raises(UsageError):
        user.create_enroll_token(expires_in="soon")


# ---------------------------------------------------------------------------- deployments


def test_deploy_by_labels_reaches_only_matching_agents(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    match = new_agent(client, [label, "eu"])
    other = new_agent(client, ["eu"])

    dep = client.deploy(name, params={"level": "warn", "n": "3"}, labels=[label])
    assert dep["id"].startswith("dep-")
    assert (dep["pipe"], dep["version"], dep["resolved_version"]) == (name, "latest", 1)
    assert dep["labels"] == [label] and dep["instances"] == "all" and dep["running"] is True
    assert [s["agent_id"] for s in dep["status"]] == [match.id]
    assert dep["id"] in {d["id"] for d in client.deployments()["deployments"]}

    desired = match.checkin()["desired"]
    assert [d["deployment_id"] for d in desired] == [dep["id"]]
    assert desired[0]["params"] == {"level": "warn", "n": "3"}
    assert desired[0]["builtins"]["agent.id"] == match.id
    assert other.checkin()["desired"] == []


def test_deploy_defaults_to_the_pipes_labels_and_counts_instances(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agents = [new_agent(client, [label]) for _ in range(3)]
    dep = client.deploy(name, instances=2)
    assert dep["labels"] == [label] and dep["instances"] == 2
    assert len(dep["status"]) == 2
    by_id = client.deploy(name, agents=[agents[2].id], labels=[], instances="1", version="1")
    assert [s["agent_id"] for s in by_id["status"]] == [agents[2].id]
    assert by_id["version"] == 1
    with pytest.raises(ApiError) as info:
        client.deploy(name, params={"n": "many"})
    assert (info.value.status, info.value.code) == (400, "invalid_pipe")
    assert info.value.details[0]["line"] > 0
    with pytest.raises(ApiError) as info:
        client.deploy("no-such-pipe")
    assert info.value.status == 404


def test_stop_start_upgrade_delete(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep = client.deploy(name, version=1)
    dep_id = dep["id"]

    stopped = client.stop(dep_id)
    assert (stopped["running"], stopped["state"]) == (False, "stopped")
    assert agent.checkin()["desired"] == []
    started = client.start(dep_id)
    assert started["running"] is True
    assert [d["deployment_id"] for d in agent.checkin()["desired"]] == [dep_id]

    client.push(pipe_text(name, label, "# v2\n"))
    assert client.deployment(dep_id)["resolved_version"] == 1  # pinned to version 1
    upgraded = client.upgrade(dep_id)
    assert (upgraded["version"], upgraded["resolved_version"]) == ("latest", 2)
    assert agent.checkin()["desired"][0]["version"] == 2
    back = client.upgrade(dep_id, version=1, params={"n": "5"})
    assert (back["version"], back["params"]) == (1, {"n": "5"})
    assert client.upgrade(dep_id, "1")["params"] == {"n": "5"}  # params kept when not given

    with pytest.raises(ApiError) as info:
        client.delete_pipe(name)
    assert (info.value.status, info.value.code) == (409, "deployed")
    assert client.delete_deployment(dep_id) is None
    with pytest.raises(ApiError) as info:
        client.deployment(dep_id)
    assert info.value.status == 404
    assert agent.checkin()["desired"] == []
    client.delete_pipe(name)


# ---------------------------------------------------------------------------- commands


def test_commands_are_queued_delivered_and_acked(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep_id = client.deploy(name)["id"]

    queued = client.command(dep_id, "restart")["commands"]
    assert [(c["type"], c["agent_id"], c["acked_at"]) for c in queued] == [
        ("restart", agent.id, None)
    ]
    delivered = agent.checkin()["commands"]
    assert [c["id"] for c in delivered] == [queued[0]["id"]]
    agent.checkin(acks=[queued[0]["id"]])
    assert client.get_command(queued[0]["id"])["acked_at"] is not None
    assert agent.checkin()["commands"] == []

    capture = client.command(dep_id, "capture", agent=agent.id, stage="input", limit=3)
    assert capture["commands"][0]["args"] == {"stage": "input", "limit": 3}
    assert {c["type"] for c in client.commands(dep_id)["commands"]} == {"restart", "capture"}
    with pytest.raises(ApiError) as info:
        client.command(dep_id, "capture", agent="not-there")
    assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        client.command(dep_id, "explode")
    assert (info.value.status, info.value.code) == (400, "invalid_body")


def test_tap_returns_the_events_an_agent_captured(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep_id = client.deploy(name)["id"]
    agent.checkin()  # now it runs the deployment and its desired hash is current

    events = [{"_raw": f"line {i}"} for i in range(5)]
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=agent.serve_captures, args=(events, time.monotonic() + 20, errors), daemon=True
    )
    thread.start()
    got = client.tap(dep_id, stage="output", limit=2, timeout=20)
    thread.join(20)
    assert not errors, errors
    assert got == events[:2]
    done = [c for c in client.commands(dep_id)["commands"] if c["type"] == "capture"]
    assert done[0]["result"] == {"events": events[:2], "error": None}
    assert done[0]["args"] == {"stage": "output", "limit": 2}


def test_tap_times_out_when_no_agent_answers(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep_id = client.deploy(name)["id"]
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        client.tap(dep_id, timeout=0.3)
    assert (info.value.status, info.value.code) == (0, "timeout")
    assert agent.id in info.value.message
    assert time.monotonic() - started < 5


def test_tap_reports_a_failed_capture(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep_id = client.deploy(name)["id"]
    agent.checkin()

    def fail_capture() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = agent.checkin(wait=2)
            if answer["commands"]:
                cid = answer["commands"][0]["id"]
                agent.checkin(acks=[cid], captures=[{"command_id": cid, "error": "no stage 9"}])
                return

    thread = threading.Thread(target=fail_capture, daemon=True)
    thread.start()
    with pytest.raises(ApiError) as info:
        client.tap(dep_id, stage="9", timeout=20)
    thread.join(20)
    assert info.value.code == "capture_failed"
    assert "no stage 9" in info.value.message


def test_tap_of_a_deployment_placed_nowhere_is_refused(client: Client) -> None:
    name = unique("p")
    client.push(pipe_text(name, unique("label")))
    dep_id = client.deploy(name)["id"]
    with pytest.raises(ApiError) as info:
        client.tap(dep_id, timeout=1)
    assert (info.value.status, info.value.code) == (409, "not_placed")


# ---------------------------------------------------------------------------- metrics and logs


def test_metrics_and_logs_reported_at_checkin(client: Client) -> None:
    name, label = unique("p"), unique("label")
    client.push(pipe_text(name, label))
    agent = new_agent(client, [label])
    dep_id = client.deploy(name)["id"]
    desired = agent.checkin()["desired"][0]
    metrics = {"input": {"events": 5}, "output": {"events": 3}}
    agent.checkin(
        pipes=[
            {
                "deployment_id": dep_id,
                "hash": desired["hash"],
                "state": "running",
                "metrics": metrics,
            }
        ],
        logs=[{"level": "warning", "deployment_id": dep_id, "message": "slow disk"}],
    )

    status = client.deployment(dep_id)["status"][0]
    assert (status["state"], status["in_sync"], status["metrics"]) == ("running", True, metrics)
    assert client.deployment(dep_id)["state"] == "running"

    points = client.metrics(dep_id)["metrics"]
    assert [(p["agent_id"], p["data"]) for p in points] == [(agent.id, metrics)]
    assert client.metrics(dep_id, agent=agent.id, since=points[0]["time"])["metrics"] == points
    assert client.metrics(dep_id, agent="someone-else")["metrics"] == []
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert client.metrics(dep_id, since=later)["metrics"] == []
    assert client.logs(dep_id, since=later)["logs"] == []
    assert client.agent_metrics(agent.id)["metrics"] == points

    lines = client.logs(dep_id)["logs"]
    assert [(x["level"], x["message"]) for x in lines] == [("warning", "slow disk")]
    assert client.logs(dep_id, agent=agent.id)["logs"] == lines
    assert client.agent_logs(agent.id)["logs"] == lines
    with pytest.raises(ApiError) as info:
        client.logs(dep_id, since="yesterday")
    assert info.value.status == 400
