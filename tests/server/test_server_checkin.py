"""The agent check-in on a real ``pipenb server``: long poll, reports, state, commands, telemetry.

SPEC §3: the agent sends its identity, a sequence number, the state of each pipe and acks; the
answer is its desired pipes, pending commands and the poll interval. The server holds the
request until something changes for that agent, so a deploy reaches it in well under a second.
Commands are kept until acknowledged; captures come back on a later check-in.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta, timezone

from support.edgekit import error_of
from support.serverproc import ServerProcess
from support.waiting import wait_until as wait_for

POLL = 1.0
_ids = itertools.count()


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def pipe_yaml(name: str, marker: int = 1) -> str:
    return (
        f"name: {name}\ninput: {{echo: {{events: [{{n: {marker}}}]}}}}\noutput: {{discard: {{}}}}\n"
    )


SERVER = {"poll_interval": POLL}  # the shared srv fixture


class Agent:
    def __init__(self, srv: ServerProcess, agent_id: str | None = None):
        self.srv, self.id, self.seq = srv, agent_id or uid("ag-"), 0
        assert srv.request("POST", "/agents", json={"id": self.id}).status_code == 201
        r = srv.request("POST", f"/agents/{self.id}/keys")
        assert r.status_code == 201
        self.key = r.json()["api_key"]

    def post(self, **body):
        body.setdefault("seq", self.seq)
        if isinstance(body["seq"], int):
            self.seq = body["seq"] + 1
        return self.srv.request(
            "POST",
            "/agent/checkin",
            token=self.key,
            json={"agent_id": self.id, **body},
            timeout=60,
        )

    def checkin(self, **body) -> dict:
        r = self.post(**body)
        assert r.status_code == 200, r.text
        return r.json()

    def state(self) -> str:
        return self.srv.request("GET", f"/agents/{self.id}").json()["state"]


def deploy_to(srv: ServerProcess, *agents: Agent, name: str | None = None) -> str:
    name = name or uid("p-")
    r = srv.request("POST", "/pipes", json={"yaml": pipe_yaml(name)})
    assert r.status_code in (200, 201), r.text
    r = srv.request(
        "POST", "/deployments", json={"pipe": name, "agents": [a.id for a in agents], "labels": []}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


class Held:
    """A check-in sent from another thread, to be woken by something this thread does."""

    def __init__(self, agent: Agent, **body):
        self.agent, self.body = agent, body
        self.response = None
        self.returned_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.response = self.agent.post(**self.body)
        self.returned_at = time.monotonic()

    def __enter__(self) -> Held:
        self.started_at = time.monotonic()
        self.thread.start()
        # it is held: still unanswered after half a second
        self.thread.join(0.5)  # returns early only when the answer came
        assert self.thread.is_alive(), f"not held: {self.response and self.response.text}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)

    def result(self, timeout: float = 10.0) -> dict:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the held check-in was never answered"
        assert self.response is not None and self.response.status_code == 200
        return self.response.json()


# ------------------------------------------------------------------------------ long poll


def test_a_deploy_wakes_a_held_checkin_within_a_second(srv):
    agent = Agent(srv)
    first = agent.checkin()
    assert first["desired"] == []
    with Held(agent, wait=20, desired_hash=first["desired_hash"]) as held:
        t_deploy = time.monotonic()
        dep_id = deploy_to(srv, agent)
        answer = held.result()
    assert held.returned_at - t_deploy < 1.0, held.returned_at - t_deploy
    assert [d["deployment_id"] for d in answer["desired"]] == [dep_id]
    assert answer["desired_hash"] != first["desired_hash"]

    # and a stop wakes it again, with the pipe gone
    with Held(agent, wait=20, desired_hash=answer["desired_hash"]) as held:
        t_stop = time.monotonic()
        assert srv.request("POST", f"/deployments/{dep_id}/stop").status_code == 200
        stopped = held.result()
    assert held.returned_at - t_stop < 1.0, held.returned_at - t_stop
    assert stopped["desired"] == []


def test_a_push_wakes_an_agent_running_latest(srv):
    agent = Agent(srv)
    name = uid("p-latest-")
    dep_id = deploy_to(srv, agent, name=name)
    current = agent.checkin()
    with Held(agent, wait=20, desired_hash=current["desired_hash"]) as held:
        t_push = time.monotonic()
        r = srv.request("POST", "/pipes", json={"yaml": pipe_yaml(name, 2)})
        assert r.status_code == 201
        answer = held.result()
    assert held.returned_at - t_push < 1.0
    (d,) = answer["desired"]
    assert d["deployment_id"] == dep_id and d["version"] == 2


def test_an_idle_checkin_is_held_for_its_wait(srv):
    agent = Agent(srv)
    first = agent.checkin()
    t0 = time.monotonic()
    second = agent.checkin(wait=1, desired_hash=first["desired_hash"])
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 5.0, elapsed
    assert second["desired_hash"] == first["desired_hash"]
    assert agent.state() == "online"


def test_a_stale_desired_hash_is_answered_at_once(srv):
    agent = Agent(srv)
    deploy_to(srv, agent)
    t0 = time.monotonic()
    answer = agent.checkin(wait=20, desired_hash="not-what-you-run")
    assert time.monotonic() - t0 < 1.0
    assert len(answer["desired"]) == 1


def test_a_command_wakes_a_held_checkin(srv):
    agent = Agent(srv)
    dep_id = deploy_to(srv, agent)
    current = agent.checkin()
    with Held(agent, wait=20, desired_hash=current["desired_hash"]) as held:
        t_cmd = time.monotonic()
        r = srv.request("POST", f"/deployments/{dep_id}/commands", json={"type": "restart"})
        assert r.status_code == 201, r.text
        answer = held.result()
    assert held.returned_at - t_cmd < 1.0
    assert [c["type"] for c in answer["commands"]] == ["restart"]


def test_a_newer_checkin_answers_the_held_one(srv):
    agent = Agent(srv)
    first = agent.checkin()
    with Held(agent, wait=20, desired_hash=first["desired_hash"]) as held:
        t_new = time.monotonic()
        agent.checkin()
        held.result()
    assert held.returned_at - t_new < 1.0


# ------------------------------------------------------------------------------ reports


def test_a_seq_gap_on_a_delta_report_asks_for_a_full_one(srv):
    agent = Agent(srv)
    assert agent.checkin(seq=0, full=True)["full_report"] is False
    assert agent.checkin(seq=1, full=False)["full_report"] is False
    gap = agent.checkin(seq=5, full=False)
    assert gap["full_report"] is True and gap["seq"] == 5
    assert agent.checkin(seq=6, full=True)["full_report"] is False
    assert agent.checkin(seq=7, full=False)["full_report"] is False
    # a delta from an agent the server has not heard from yet
    fresh = Agent(srv)
    assert fresh.checkin(seq=3, full=False)["full_report"] is True


def test_a_full_report_request_is_not_held(srv):
    agent = Agent(srv)
    first = agent.checkin(seq=0)
    t0 = time.monotonic()
    gap = agent.checkin(seq=9, full=False, wait=20, desired_hash=first["desired_hash"])
    assert gap["full_report"] is True
    assert time.monotonic() - t0 < 1.0


def test_attributes_and_pipe_reports_are_stored(srv):
    agent = Agent(srv)
    dep_id = deploy_to(srv, agent)
    (d,) = agent.checkin()["desired"]
    attrs = {"host": "w1", "os": "linux", "python": "3.11", "pipenb": "0.1", "capabilities": []}
    agent.checkin(
        attributes=attrs,
        pipes=[{"deployment_id": dep_id, "hash": d["hash"], "state": "running"}],
    )
    assert srv.request("GET", f"/agents/{agent.id}").json()["attributes"] == attrs
    dep = srv.request("GET", f"/deployments/{dep_id}").json()
    (st,) = dep["status"]
    assert st["state"] == "running" and st["in_sync"] is True and st["hash"] == d["hash"]
    assert dep["state"] == "running"
    # an old hash is reported: not in sync
    agent.checkin(pipes=[{"deployment_id": dep_id, "hash": "old", "state": "running"}])
    dep = srv.request("GET", f"/deployments/{dep_id}").json()
    assert dep["status"][0]["in_sync"] is False and dep["state"] == "pending"


def test_agent_state_online_degraded_offline(srv):
    agent = Agent(srv)
    assert agent.state() == "offline"  # never seen
    dep_id = deploy_to(srv, agent)
    agent.checkin()
    assert agent.state() == "online"

    agent.checkin(
        pipes=[{"deployment_id": dep_id, "hash": "h", "state": "failed", "error": "boom"}]
    )
    assert agent.state() == "degraded"
    dep = srv.request("GET", f"/deployments/{dep_id}").json()
    assert dep["state"] == "degraded"
    assert dep["status"][0]["state"] == "failed" and dep["status"][0]["error"] == "boom"

    agent.checkin(full=False, pipes=[{"deployment_id": dep_id, "hash": "h", "state": "running"}])
    assert agent.state() == "online"

    last = time.monotonic()
    wait_for(lambda: agent.state() == "offline", 3 * POLL + 3, "the agent to go offline")
    assert time.monotonic() - last >= 3 * POLL - 0.5
    dep = srv.request("GET", f"/deployments/{dep_id}").json()
    assert dep["status"][0]["agent_state"] == "offline"
    agent.checkin()
    assert agent.state() == "online"


def test_a_leaving_agent_is_offline_at_once(srv):
    agent = Agent(srv)
    agent.checkin()
    assert agent.state() == "online"
    agent.checkin(leaving=True)
    assert agent.state() == "offline"
    agent.checkin()
    assert agent.state() == "online"


def test_checkin_body_is_validated(srv):
    agent = Agent(srv)
    error_of(agent.post(seq=-1), 400, "invalid_body")
    error_of(agent.post(seq="x"), 400, "invalid_body")
    error_of(agent.post(seq=0, wait=1000), 400, "invalid_body")
    err = error_of(agent.post(seq=0, pipes=[{"deployment_id": "d", "state": "dancing"}]), 400)
    assert any(d["field"].startswith("pipes.0.state") for d in err["details"])
    r = srv.request("POST", "/agent/checkin", token=agent.key, json={"seq": 0})
    error_of(r, 400)  # no agent_id
    assert agent.checkin(seq=0)["seq"] == 0  # still fine afterwards


# ------------------------------------------------------------------------------ commands


def test_commands_are_delivered_until_acknowledged(srv):
    a, b = Agent(srv), Agent(srv)
    dep_id = deploy_to(srv, a, b)
    r = srv.request("POST", f"/deployments/{dep_id}/commands", json={"type": "restart"})
    assert r.status_code == 201, r.text
    cmds = {c["agent_id"]: c for c in r.json()["commands"]}
    assert set(cmds) == {a.id, b.id}
    cmd_a = cmds[a.id]
    assert cmd_a["acked_at"] is None

    for _ in range(2):  # kept across check-ins until acked
        got = a.checkin()["commands"]
        assert [(c["id"], c["type"], c["deployment_id"]) for c in got] == [
            (cmd_a["id"], "restart", dep_id)
        ]

    # B acknowledging A's command is ignored
    b_answer = b.checkin(acks=[cmd_a["id"], cmds[b.id]["id"]])
    assert b_answer["commands"] == []
    assert [c["id"] for c in a.checkin()["commands"]] == [cmd_a["id"]]
    assert srv.request("GET", f"/commands/{cmd_a['id']}").json()["acked_at"] is None
    assert srv.request("GET", f"/commands/{cmds[b.id]['id']}").json()["acked_at"] is not None

    assert a.checkin(acks=[cmd_a["id"]])["commands"] == []
    assert a.checkin()["commands"] == []
    shown = srv.request("GET", f"/commands/{cmd_a['id']}").json()
    assert shown["acked_at"] is not None and shown["type"] == "restart"
    listed = srv.request("GET", f"/deployments/{dep_id}/commands").json()["commands"]
    assert {c["id"] for c in listed} == {cmd_a["id"], cmds[b.id]["id"]}


def test_a_command_for_one_agent_of_a_deployment(srv):
    a, b, c = Agent(srv), Agent(srv), Agent(srv)
    dep_id = deploy_to(srv, a, b)
    r = srv.request(
        "POST", f"/deployments/{dep_id}/commands", json={"type": "restart", "agent": b.id}
    )
    assert r.status_code == 201
    assert [x["agent_id"] for x in r.json()["commands"]] == [b.id]
    assert a.checkin()["commands"] == [] and len(b.checkin()["commands"]) == 1
    r = srv.request(
        "POST", f"/deployments/{dep_id}/commands", json={"type": "restart", "agent": c.id}
    )
    error_of(r, 400)
    error_of(srv.request("POST", f"/deployments/{dep_id}/commands", json={"type": "jump"}), 400)
    error_of(srv.request("POST", "/deployments/nope/commands", json={"type": "restart"}), 404)


def test_a_capture_comes_back_through_the_api(srv):
    a, b = Agent(srv), Agent(srv)
    dep_id = deploy_to(srv, a)
    r = srv.request(
        "POST",
        f"/deployments/{dep_id}/commands",
        json={"type": "capture", "stage": "input", "limit": 3},
    )
    assert r.status_code == 201, r.text
    (cmd,) = r.json()["commands"]
    assert cmd["args"] == {"stage": "input", "limit": 3}
    (got,) = a.checkin()["commands"]
    assert got["id"] == cmd["id"] and got["type"] == "capture" and got["args"]["limit"] == 3

    events = [{"n": 1}, {"n": 2, "msg": "two"}, {"n": 3}]
    # another agent cannot answer it
    b.checkin(captures=[{"command_id": cmd["id"], "events": [{"forged": True}]}])
    assert srv.request("GET", f"/commands/{cmd['id']}").json()["result"] is None

    answer = a.checkin(captures=[{"command_id": cmd["id"], "events": events}], acks=[cmd["id"]])
    assert answer["commands"] == []
    shown = srv.request("GET", f"/commands/{cmd['id']}")
    assert shown.status_code == 200
    assert shown.json()["result"]["events"] == events
    assert shown.json()["acked_at"] is not None


def test_reset_checkpoint_renders_a_new_desired_pipe(srv):
    a = Agent(srv)
    dep_id = deploy_to(srv, a)
    (before,) = a.checkin()["desired"]
    assert before["checkpoint_seq"] == 0
    r = srv.request("POST", f"/deployments/{dep_id}/commands", json={"type": "reset-checkpoint"})
    assert r.status_code == 201
    answer = a.checkin()
    (after,) = answer["desired"]
    assert after["checkpoint_seq"] > before["checkpoint_seq"] and after["checkpoint"] is None
    assert after["hash"] != before["hash"]
    assert [c["type"] for c in answer["commands"]] == ["reset-checkpoint"]


def test_commands_need_a_placed_deployment(srv):
    name = uid("p-unplaced-")
    srv.request("POST", "/pipes", json={"yaml": pipe_yaml(name)})
    r = srv.request("POST", "/deployments", json={"pipe": name, "labels": [uid("none-")]})
    dep_id = r.json()["id"]
    r = srv.request("POST", f"/deployments/{dep_id}/commands", json={"type": "restart"})
    assert r.status_code in (400, 409), r.text
    assert srv.request("GET", f"/deployments/{dep_id}/commands").json()["commands"] == []


# ------------------------------------------------------------------------------ telemetry


def test_metrics_and_logs_are_readable_per_deployment_and_agent(srv):
    # a line's own time is kept when the server's clock allows it (up to clock_skew ahead)
    ahead = datetime.now(timezone.utc) + timedelta(seconds=30)
    stamp = ahead.strftime("%Y-%m-%dT%H:%M:%S")
    a, b = Agent(srv), Agent(srv)
    dep_id = deploy_to(srv, a, b)
    other = deploy_to(srv, a)
    metrics = {"events_in": 10, "events_out": 7, "errors": 1, "lag": 0.5}
    a.checkin(
        pipes=[
            {"deployment_id": dep_id, "hash": "h", "state": "running", "metrics": metrics},
            {"deployment_id": other, "hash": "h", "state": "running", "metrics": {"n": 1}},
        ],
        logs=[
            {"level": "warn", "message": "disk is slow", "deployment_id": dep_id},
            {"level": "info", "message": "agent started"},
            {
                "level": "error",
                "message": "other broke",
                "deployment_id": other,
                "time": stamp + "Z",
            },
        ],
    )
    b.checkin(
        pipes=[{"deployment_id": dep_id, "hash": "h", "state": "running", "metrics": {"x": 2}}],
        logs=[{"level": "info", "message": "b here", "deployment_id": dep_id}],
    )

    dm = srv.request("GET", f"/deployments/{dep_id}/metrics").json()["metrics"]
    assert {(m["agent_id"], tuple(sorted(m["data"].items()))) for m in dm} == {
        (a.id, tuple(sorted(metrics.items()))),
        (b.id, (("x", 2),)),
    }
    only_a = srv.request("GET", f"/deployments/{dep_id}/metrics", params={"agent": a.id})
    assert [m["data"] for m in only_a.json()["metrics"]] == [metrics]

    am = srv.request("GET", f"/agents/{a.id}/metrics").json()["metrics"]
    assert {m["deployment_id"] for m in am} == {dep_id, other}
    assert all(m["agent_id"] == a.id and m["time"].endswith("Z") for m in am)

    dl = srv.request("GET", f"/deployments/{dep_id}/logs").json()["logs"]
    assert sorted((x["agent_id"], x["level"], x["message"]) for x in dl) == sorted(
        [(a.id, "warn", "disk is slow"), (b.id, "info", "b here")]
    )
    al = srv.request("GET", f"/agents/{a.id}/logs").json()["logs"]
    assert [x["message"] for x in al] == ["disk is slow", "agent started", "other broke"]
    assert al[-1]["time"].startswith(stamp)
    limited = srv.request("GET", f"/agents/{a.id}/logs", params={"limit": 1}).json()["logs"]
    assert [x["message"] for x in limited] == ["other broke"]  # the newest
    since = srv.request("GET", f"/agents/{a.id}/logs", params={"since": stamp + "Z"}).json()["logs"]
    assert [x["message"] for x in since] == ["other broke"]

    dep = srv.request("GET", f"/deployments/{dep_id}").json()
    by_agent = {s["agent_id"]: s for s in dep["status"]}
    assert by_agent[a.id]["metrics"] == metrics
