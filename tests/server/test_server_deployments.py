"""Deployments on a real ``pipenb server``: targeting, placement, start/stop, upgrade, failover.

SPEC §3: a deployment is a pipe version (or "latest"), parameter values, a target (agent ids or
labels an agent must all carry), an instance count (``all`` or N) and failover on/off; the
server renders each agent's desired set; with failover, instances on an agent that went offline
move to another eligible agent, starting from the checkpoint it last reported.
"""

from __future__ import annotations

import itertools
import time

from support.edgekit import error_of
from support.serverproc import ServerProcess
from support.waiting import wait_until as wait_for

POLL = 1.0  # the server's poll interval: agents are offline after 3 of them
_ids = itertools.count()


def pipe_yaml(name: str, marker: int = 1, extra: str = "") -> str:
    return (
        f"name: {name}\ninput: {{echo: {{events: [{{n: {marker}}}]}}}}\n"
        f"output: {{discard: {{}}}}\n{extra}"
    )


PARAM_PIPE = """\
name: {name}
params:
  path: {{type: str}}
  level: {{default: error, enum: [warn, error]}}
  every: {{default: 5, type: int}}
input: {{echo: {{events: [{{p: "{{{{path}}}}", l: "{{{{level}}}}", e: "{{{{every}}}}"}}]}}}}
output: {{discard: {{}}}}
"""


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


SERVER = {"poll_interval": POLL}  # the shared srv fixture


class Agent:
    """A hand-added agent and its key; checks in like ``pipenb agent`` would."""

    def __init__(self, srv: ServerProcess, agent_id: str, labels: list[str] | None = None):
        self.srv, self.id, self.seq = srv, agent_id, 0
        r = srv.request("POST", "/agents", json={"id": agent_id, "labels": labels or []})
        assert r.status_code == 201, r.text
        r = srv.request("POST", f"/agents/{agent_id}/keys")
        assert r.status_code == 201, r.text
        self.key = r.json()["api_key"]

    def checkin(self, **body) -> dict:
        r = self.srv.request(
            "POST",
            "/agent/checkin",
            token=self.key,
            json={"agent_id": self.id, "seq": self.seq, **body},
        )
        assert r.status_code == 200, r.text
        self.seq += 1
        return r.json()

    def desired(self) -> dict[str, dict]:
        """deployment id -> desired pipe (a check-in that does not wait)."""
        return {d["deployment_id"]: d for d in self.checkin()["desired"]}


def push(srv: ServerProcess, yaml: str) -> int:
    r = srv.request("POST", "/pipes", json={"yaml": yaml})
    assert r.status_code in (200, 201), r.text
    return r.json()["version"]


def deploy(srv: ServerProcess, **body) -> dict:
    r = srv.request("POST", "/deployments", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def placed(srv: ServerProcess, dep_id: str) -> set[str]:
    r = srv.request("GET", f"/deployments/{dep_id}")
    assert r.status_code == 200, r.text
    return {s["agent_id"] for s in r.json()["status"]}


# ------------------------------------------------------------------------------ targeting


def test_labels_target_agents_carrying_all_of_them(srv):
    x, y, z = uid("lx"), uid("ly"), uid("lz")
    both = Agent(srv, uid("t-both"), [x, y])
    only_x = Agent(srv, uid("t-x"), [x])
    only_y = Agent(srv, uid("t-y"), [y])
    more = Agent(srv, uid("t-more"), [z, y, x])
    name = uid("p-labels")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, labels=[x, y])
    assert dep["labels"] == [x, y] and dep["instances"] == "all"
    assert placed(srv, dep["id"]) == {both.id, more.id}
    assert dep["id"] in both.desired() and dep["id"] in more.desired()
    assert dep["id"] not in only_x.desired() and dep["id"] not in only_y.desired()


def test_pipe_labels_are_the_default_target(srv):
    lab = uid("pl")
    yes, no = Agent(srv, uid("d-yes"), [lab]), Agent(srv, uid("d-no"), [])
    name = uid("p-deflab")
    push(srv, pipe_yaml(name, extra=f"labels: [{lab}]\n"))
    dep = deploy(srv, pipe=name)
    assert dep["labels"] == [lab]
    assert placed(srv, dep["id"]) == {yes.id}
    assert no.id not in placed(srv, dep["id"])


def test_agent_ids_target_exactly_those_agents(srv):
    lab = uid("ids")
    a, b, c = (Agent(srv, uid(f"t-id{i}-"), [lab]) for i in range(3))
    name = uid("p-ids")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, agents=[a.id, c.id], labels=[])
    assert placed(srv, dep["id"]) == {a.id, c.id}
    assert dep["id"] in a.desired() and dep["id"] not in b.desired()
    # ids and labels together: an agent must be listed and carry the labels
    other = uid("other")
    srv.request("PATCH", f"/agents/{c.id}", json={"labels": [lab, other]})
    dep2 = deploy(srv, pipe=name, agents=[a.id, b.id, c.id], labels=[other])
    assert placed(srv, dep2["id"]) == {c.id}


def test_instances_go_to_the_agents_running_fewest_pipes(srv):
    lab = uid("few")
    busy, some, idle = (Agent(srv, uid(f"f{i}-"), [lab]) for i in range(3))
    name = uid("p-few")
    push(srv, pipe_yaml(name))
    for _ in range(2):
        deploy(srv, pipe=name, agents=[busy.id], labels=[])
    deploy(srv, pipe=name, agents=[some.id], labels=[])

    one = deploy(srv, pipe=name, labels=[lab], instances=1)
    assert one["instances"] == 1
    assert placed(srv, one["id"]) == {idle.id}
    two = deploy(srv, pipe=name, labels=[lab], instances=2)
    # loads now: busy 2, some 1, idle 1 -> the two least loaded
    assert placed(srv, two["id"]) == {some.id, idle.id}
    many = deploy(srv, pipe=name, labels=[lab], instances=5)
    assert placed(srv, many["id"]) == {busy.id, some.id, idle.id}  # at most one per agent
    agents = {a["id"]: a for a in srv.request("GET", "/agents").json()["agents"]}
    assert agents[busy.id]["pipes"] == 3 and agents[idle.id]["pipes"] == 3


def test_all_follows_agents_that_gain_or_lose_the_labels(srv):
    lab = uid("all")
    first = Agent(srv, uid("all-a"), [lab])
    name = uid("p-all")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, labels=[lab], instances="all")
    assert placed(srv, dep["id"]) == {first.id}
    late = Agent(srv, uid("all-late"), [lab])
    assert placed(srv, dep["id"]) == {first.id, late.id}
    assert dep["id"] in late.desired()
    relabel = Agent(srv, uid("all-relabel"), [])
    assert srv.request("PATCH", f"/agents/{relabel.id}", json={"labels": [lab]}).ok
    assert placed(srv, dep["id"]) == {first.id, late.id, relabel.id}
    assert srv.request("PATCH", f"/agents/{first.id}", json={"labels": []}).ok
    assert placed(srv, dep["id"]) == {late.id, relabel.id}
    assert dep["id"] not in first.desired()
    assert srv.request("DELETE", f"/agents/{late.id}").status_code == 204
    assert placed(srv, dep["id"]) == {relabel.id}


def test_bad_deployments_are_refused(srv):
    name = uid("p-bad")
    push(srv, pipe_yaml(name))
    nowhere = {"labels": [uid("nowhere")]}  # should one be accepted, it runs nowhere

    def attempt(**body):
        return srv.request("POST", "/deployments", json={**nowhere, **body})

    error_of(attempt(pipe="no-such-pipe"), 404)
    error_of(attempt(pipe=name, version=7), 404)
    error_of(attempt(pipe=name, instances=0), 400)
    error_of(attempt(pipe=name, version="newest"), 400, "invalid_body")
    error_of(attempt(pipe=name, instances="most"), 400, "invalid_body")
    names = {d["pipe"] for d in srv.request("GET", "/deployments").json()["deployments"]}
    assert name not in names


def test_negative_instances_are_refused(srv):
    name = uid("p-neg")
    push(srv, pipe_yaml(name))
    for n in (-1, -2):
        r = srv.request(
            "POST", "/deployments", json={"pipe": name, "labels": [uid("neg")], "instances": n}
        )
        error_of(r, 400)


# ------------------------------------------------------------------------------ lifecycle


def test_stop_empties_the_desired_set_and_start_refills_it(srv):
    agent = Agent(srv, uid("ss"))
    name = uid("p-ss")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, agents=[agent.id], labels=[])
    first = agent.checkin()
    assert [d["deployment_id"] for d in first["desired"]] == [dep["id"]]

    r = srv.request("POST", f"/deployments/{dep['id']}/stop")
    assert r.status_code == 200 and r.json()["running"] is False
    assert r.json()["state"] == "stopped"
    stopped = agent.checkin()
    assert stopped["desired"] == [] and stopped["desired_hash"] != first["desired_hash"]
    assert placed(srv, dep["id"]) == {agent.id}  # the placement is kept

    r = srv.request("POST", f"/deployments/{dep['id']}/start")
    assert r.status_code == 200 and r.json()["running"] is True
    again = agent.checkin()
    assert again["desired"] == first["desired"]
    assert again["desired_hash"] == first["desired_hash"]


def test_deploy_stopped_and_start_later(srv):
    agent = Agent(srv, uid("later"))
    name = uid("p-later")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, agents=[agent.id], labels=[], start=False)
    assert dep["running"] is False
    assert agent.desired() == {}
    srv.request("POST", f"/deployments/{dep['id']}/start")
    assert list(agent.desired()) == [dep["id"]]


def test_upgrade_moves_a_pinned_deployment_to_a_new_version(srv):
    agent = Agent(srv, uid("up"))
    name = uid("p-up")
    assert push(srv, pipe_yaml(name, 1)) == 1
    dep = deploy(srv, pipe=name, version=1, agents=[agent.id], labels=[])
    assert dep["version"] == 1 and dep["resolved_version"] == 1
    v1 = agent.desired()[dep["id"]]
    assert v1["version"] == 1 and v1["yaml"] == pipe_yaml(name, 1)

    assert push(srv, pipe_yaml(name, 2)) == 2
    assert agent.desired()[dep["id"]] == v1  # pinned: a push does not move it

    r = srv.request("POST", f"/deployments/{dep['id']}/upgrade", json={"version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["resolved_version"] == 2
    v2 = agent.desired()[dep["id"]]
    assert v2["version"] == 2 and v2["yaml"] == pipe_yaml(name, 2)
    assert v2["hash"] != v1["hash"]

    r = srv.request("POST", f"/deployments/{dep['id']}/upgrade", json={"version": 1})
    assert r.status_code == 200
    assert agent.desired()[dep["id"]]["hash"] == v1["hash"]  # back to the same rendering
    r = srv.request("POST", f"/deployments/{dep['id']}/upgrade", json={})
    assert r.json()["version"] == "latest" and r.json()["resolved_version"] == 2
    error_of(srv.request("POST", f"/deployments/{dep['id']}/upgrade", json={"version": 9}), 404)
    error_of(srv.request("POST", "/deployments/nope/upgrade", json={}), 404)


def test_latest_follows_a_new_push(srv):
    agent = Agent(srv, uid("latest"))
    name = uid("p-latest")
    push(srv, pipe_yaml(name, 1))
    dep = deploy(srv, pipe=name, agents=[agent.id], labels=[])
    assert dep["version"] == "latest" and dep["resolved_version"] == 1
    before = agent.checkin()
    push(srv, pipe_yaml(name, 2))
    after = agent.checkin()
    (d,) = after["desired"]
    assert d["version"] == 2 and d["yaml"] == pipe_yaml(name, 2)
    assert d["hash"] != before["desired"][0]["hash"]
    assert after["desired_hash"] != before["desired_hash"]
    assert srv.request("GET", f"/deployments/{dep['id']}").json()["resolved_version"] == 2


def test_params_are_validated_at_deploy_time(srv):
    agent = Agent(srv, uid("params"))
    name = uid("p-params")
    r = srv.request("POST", "/pipes", json={"yaml": PARAM_PIPE.format(name=name)})
    assert r.status_code == 201, r.text  # a required param without value is fine in a push

    def attempt(params):
        return srv.request(
            "POST",
            "/deployments",
            json={"pipe": name, "agents": [agent.id], "labels": [], "params": params},
        )

    err = error_of(attempt({}), 400)
    assert "path" in err["message"] + str(err["details"])
    err = error_of(attempt({"path": "/x", "colour": "red"}), 400)
    assert "colour" in err["message"] + str(err["details"])
    err = error_of(attempt({"path": "/x", "level": "debug"}), 400)
    assert "level" in err["message"] + str(err["details"])
    error_of(attempt({"path": "/x", "every": "often"}), 400)
    assert agent.desired() == {}  # nothing was deployed

    r = attempt({"path": "/var/log/x.log", "every": "7"})
    assert r.status_code == 201, r.text
    dep_id = r.json()["id"]
    d = agent.desired()[dep_id]
    assert d["params"]["path"] == "/var/log/x.log"
    assert d["builtins"]["agent.id"] == agent.id and d["builtins"]["deployment.id"] == dep_id

    bad = srv.request("POST", f"/deployments/{dep_id}/upgrade", json={"params": {"level": "warn"}})
    error_of(bad, 400)  # path is required and now missing
    ok = srv.request(
        "POST",
        f"/deployments/{dep_id}/upgrade",
        json={"params": {"path": "/y", "level": "warn"}},
    )
    assert ok.status_code == 200, ok.text
    assert agent.desired()[dep_id]["params"]["path"] == "/y"
    assert agent.desired()[dep_id]["hash"] != d["hash"]


def test_delete_removes_the_deployment_everywhere(srv):
    lab = uid("del")
    a, b = Agent(srv, uid("del-a"), [lab]), Agent(srv, uid("del-b"), [lab])
    name = uid("p-del")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, labels=[lab])
    assert dep["id"] in a.desired() and dep["id"] in b.desired()
    assert srv.request("DELETE", f"/deployments/{dep['id']}").status_code == 204
    assert dep["id"] not in a.desired() and dep["id"] not in b.desired()
    error_of(srv.request("GET", f"/deployments/{dep['id']}"), 404)
    error_of(srv.request("DELETE", f"/deployments/{dep['id']}"), 404)
    ids = {d["id"] for d in srv.request("GET", "/deployments").json()["deployments"]}
    assert dep["id"] not in ids
    assert srv.request("DELETE", f"/pipes/{name}").status_code == 204


def test_renaming_an_agent_renders_its_pipes_again(srv):
    agent = Agent(srv, uid("rn"))
    name = uid("p-rn")
    push(srv, pipe_yaml(name))
    dep = deploy(srv, pipe=name, agents=[agent.id], labels=[])
    before = agent.desired()[dep["id"]]
    assert before["builtins"]["agent.name"] == agent.id
    r = srv.request("PATCH", f"/agents/{agent.id}", json={"name": "web-01"})
    assert r.status_code == 200
    after = agent.desired()[dep["id"]]
    assert after["builtins"]["agent.name"] == "web-01"
    assert after["hash"] != before["hash"]


# ------------------------------------------------------------------------------ failover


def test_failover_moves_an_instance_with_its_checkpoint(srv):
    lab = uid("fo")
    a = Agent(srv, uid("fo-a"), [lab])
    b = Agent(srv, uid("fo-b"), [lab])
    name = uid("p-fo")
    push(srv, pipe_yaml(name))
    a.checkin()  # A is online, B not yet: both deployments go to A
    pinned = deploy(srv, pipe=name, labels=[lab], instances=1)  # no failover
    moving = deploy(srv, pipe=name, labels=[lab], instances=1, failover=True)
    assert placed(srv, pinned["id"]) == {a.id}
    assert placed(srv, moving["id"]) == {a.id}

    desired = a.checkin()["desired"]
    checkpoint = {"files": {"/var/log/x": {"offset": 4096, "inode": 12}}}
    reports = [
        {"deployment_id": d["deployment_id"], "hash": d["hash"], "state": "running"}
        for d in desired
    ]
    for r in reports:
        if r["deployment_id"] == moving["id"]:
            r["checkpoint"] = checkpoint
    assert b.desired() == {}  # B comes online with nothing to run
    a.checkin(pipes=reports)
    last_a = time.monotonic()
    status = srv.request("GET", f"/deployments/{moving['id']}").json()["status"]
    assert status[0]["checkpoint"] == checkpoint

    # A goes silent; B keeps checking in until the instance reaches it
    got = wait_for(lambda: b.desired().get(moving["id"]), 3 * POLL + 4, "the instance to move to B")
    moved_after = time.monotonic() - last_a
    assert moved_after >= 3 * POLL - 0.5, "moved before A missed 3 check-ins"
    assert got["checkpoint"] == checkpoint
    assert got["checkpoint_seq"] > 0  # a stamp that only grows
    assert placed(srv, moving["id"]) == {b.id}
    assert placed(srv, pinned["id"]) == {a.id}  # failover off: stays
    assert srv.request("GET", f"/agents/{a.id}").json()["state"] == "offline"

    # A comes back: the moved instance stays on B
    back = a.desired()
    assert moving["id"] not in back and pinned["id"] in back
    assert placed(srv, moving["id"]) == {b.id}


def test_a_leaving_agent_hands_its_failover_instance_over_at_once(srv):
    lab = uid("leave")
    a = Agent(srv, uid("leave-a"), [lab])
    b = Agent(srv, uid("leave-b"), [lab])
    name = uid("p-leave")
    push(srv, pipe_yaml(name))
    a.checkin()
    dep = deploy(srv, pipe=name, labels=[lab], instances=1, failover=True)
    assert placed(srv, dep["id"]) == {a.id}
    assert b.desired() == {}
    current = a.checkin()
    a.checkin(wait=1.5, desired_hash=current["desired_hash"])  # A runs a while
    (d,) = current["desired"]
    checkpoint = {"offset": 777}
    report = {"deployment_id": dep["id"], "hash": d["hash"], "state": "stopped"}
    a.checkin(leaving=True, pipes=[{**report, "checkpoint": checkpoint}])
    t0 = time.monotonic()
    assert srv.request("GET", f"/agents/{a.id}").json()["state"] == "offline"
    got = wait_for(lambda: b.desired().get(dep["id"]), 2.5, "B to take over from a leaving A")
    assert time.monotonic() - t0 < 3 * POLL, "it waited for A to miss its check-ins"
    assert got["checkpoint"] == checkpoint and got["checkpoint_seq"] > 0


def test_failover_deployment_is_placed_once_an_agent_comes_online(tmp_path):
    # its own server: in a busy fleet, any other agent going offline reconciles everything
    with ServerProcess(tmp_path, poll_interval=POLL) as quiet:
        name = uid("p-fo-late")
        push(quiet, pipe_yaml(name))
        agent = Agent(quiet, uid("fo-late-a"), ["late"])
        dep = deploy(quiet, pipe=name, labels=["late"], instances=1, failover=True)
        assert placed(quiet, dep["id"]) == set()  # nobody online yet
        wait_for(lambda: dep["id"] in agent.desired(), 2 * POLL + 1, "the deployment to reach it")
        assert placed(quiet, dep["id"]) == {agent.id}
