"""Enrollment tokens on a real ``pipenb server`` with real ``pipenb agent`` processes (issue 11).

The server decides who an enrolling agent is: it assigns the id, the labels come from the token
(none from the bootstrap ``--enroll-key``), and what the agent calls itself is kept only as a
cleaned display name. Tokens are shown once, may expire and run out, and can be revoked; each
refusal says which. Failed attempts are limited per client address, so a flood of wrong keys
from one address (127.0.0.2) never keeps a valid token from enrolling from another (127.0.0.1).
The rogue-agent attacks from the issue are regression tests at the end.
"""

from __future__ import annotations

import http.client
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from support.agentproc import AgentProcess, end_all
from support.edgekit import error_of
from support.serverproc import PREFIX, ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-" + secrets.token_urlsafe(16)

WEB_PIPE = """\
name: {name}
input: {{echo: {{events: [{{n: 1}}], interval: 1h}}}}
output: {{discard: {{}}}}
"""

DB_PIPE = """\
name: {name}
params:
  password: {{default: none}}
input: {{echo: {{events: [{{n: 1}}], interval: 1h}}}}
output: {{discard: {{}}}}
"""

SERVER = {"enroll_key": ENROLL_KEY}  # the shared srv fixture


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Any]:
    """``agents(server, **AgentProcess options)``: a started agent with a data dir of its own;
    killed (workers too) at the end, its log printed."""
    made: list[AgentProcess] = []

    def start(server: ServerProcess, **kw: Any) -> AgentProcess:
        agent = AgentProcess(server.url, tmp_path / f"agent-{len(made)}", long_poll=2, **kw)
        made.append(agent)
        return agent.start()

    try:
        yield start
    finally:
        end_all(made)


def new_token(srv: ServerProcess, **body: Any) -> dict[str, Any]:
    r = srv.request("POST", "/enroll-tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def enroll(srv: ServerProcess, key: str, **body: Any):
    return srv.request("POST", "/agent/enroll", token=None, json={"enroll_key": key, **body})


def agent_info(srv: ServerProcess, agent_id: str) -> dict[str, Any]:
    r = srv.request("GET", f"/agents/{agent_id}")
    assert r.status_code == 200, r.text
    return r.json()


def deploy(srv: ServerProcess, pipe: str, yaml: str, **body: Any) -> str:
    r = srv.request("POST", "/pipes", json={"yaml": yaml})
    assert r.status_code in (200, 201), r.text
    r = srv.request("POST", "/deployments", json={"pipe": pipe, **body})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def placed_on(srv: ServerProcess, dep_id: str) -> set[str]:
    return {s["agent_id"] for s in srv.request("GET", f"/deployments/{dep_id}").json()["status"]}


def running_on(srv: ServerProcess, dep_id: str, agent_id: str) -> bool:
    status = srv.request("GET", f"/deployments/{dep_id}").json()["status"]
    return any(s["agent_id"] == agent_id and s["state"] == "running" for s in status)


# ------------------------------------------------------------------------------ tokens


def test_an_agent_gets_the_tokens_labels_an_assigned_id_and_a_cleaned_name(srv, agents):
    """A real agent enrolls with a token: the server assigns its id (saved in the identity
    file), gives it the token's labels, and keeps its ``--name`` without control characters."""
    label = "blue-" + secrets.token_hex(3)
    token = new_token(srv, labels=[label, "eu"], name="blue hosts")
    assert token["token"].startswith("pnbe_") and token["state"] == "active"
    listed = {t["id"]: t for t in srv.request("GET", "/enroll-tokens").json()["tokens"]}
    assert "token" not in listed[token["id"]]  # shown once, at creation
    dirty = "evil\x1b[2J\x07name\twith\u202econtrols\n" + "x" * 300
    agent = agents(srv, enroll_key=token["token"], name=dirty)
    agent_id = agent.wait_enrolled()
    assert agent_id.startswith("agent-") and agent_id == agent.identity()["agent_id"]  # type: ignore[index]
    info = agent_info(srv, agent_id)
    assert info["labels"] == [label, "eu"] and info["enrolled"] is True
    assert info["name"].startswith("evil [2J name with controls x")
    assert len(info["name"]) == 100
    assert all(c.isprintable() for c in info["name"]), info["name"]
    assert f"enrolled as {agent_id} (labels: {label}, eu)" in agent.log_text()
    wait_until(lambda: agent_info(srv, agent_id)["state"] == "online", what="the agent online")
    assert srv.request("GET", f"/enroll-tokens/{token['id']}").json()["uses"] == 1
    # the bootstrap key still enrolls (for labs), with no labels
    r = enroll(srv, ENROLL_KEY, name="lab box")
    assert r.status_code == 201, r.text
    assert r.json()["labels"] == [] and agent_info(srv, r.json()["agent_id"])["labels"] == []


def test_a_token_runs_out_after_its_uses(srv, agents):
    token = new_token(srv, labels=["once"], uses=2)
    ids = {enroll(srv, token["token"]).json()["agent_id"] for _ in range(2)}
    assert len(ids) == 2  # each enrollment a new id
    err = error_of(enroll(srv, token["token"]), 401, "token_used_up")
    assert "used up" in err["message"] and "2 of 2" in err["message"]
    shown = srv.request("GET", f"/enroll-tokens/{token['id']}").json()
    assert shown["uses"] == 2 and shown["state"] == "used_up"
    # an agent given the used-up token says why and exits
    agent = agents(srv, enroll_key=token["token"])
    wait_until(lambda: not agent.alive(), what="the agent to give up")
    assert agent.returncode() == 1
    assert "enrollment refused" in agent.log_text() and "used up" in agent.log_text()


def test_a_token_expires(srv):
    token = new_token(srv, labels=["brief"], expires_in=1)
    assert token["expires_at"] is not None
    wait_until(
        lambda: srv.request("GET", f"/enroll-tokens/{token['id']}").json()["state"] == "expired",
        timeout=10,
        what="the token to expire",
    )
    err = error_of(enroll(srv, token["token"]), 401, "token_expired")
    assert "expired at" in err["message"]
    # an expiry in the past, or two ways of giving one, is refused
    error_of(
        srv.request("POST", "/enroll-tokens", json={"expires_at": "2001-01-01T00:00:00Z"}), 400
    )
    both = {"expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}
    error_of(srv.request("POST", "/enroll-tokens", json=both), 400, "invalid_body")
    error_of(srv.request("POST", "/enroll-tokens", json={"expires_in": 2**63}), 400)


def test_a_revoked_token_enrolls_no_one_but_its_agents_keep_working(srv):
    token = new_token(srv, labels=["rev"])
    first = enroll(srv, token["token"])
    assert first.status_code == 201
    assert srv.request("DELETE", f"/enroll-tokens/{token['id']}").status_code == 204
    err = error_of(enroll(srv, token["token"]), 401, "token_revoked")
    assert "revoked" in err["message"]
    assert srv.request("GET", f"/enroll-tokens/{token['id']}").json()["state"] == "revoked"
    r = srv.request(
        "POST",
        "/agent/checkin",
        token=first.json()["api_key"],
        json={"agent_id": first.json()["agent_id"], "seq": 0},
    )
    assert r.status_code == 200, r.text
    # a wrong secret for a real token id is just invalid: it tells nothing about the token
    forged = token["token"][:-4] + "AAAA"
    error_of(enroll(srv, forged), 401, "invalid_token")
    error_of(srv.request("DELETE", "/enroll-tokens/no-such"), 404)


def test_enroll_tokens_from_the_cli(srv, tmp_path):
    import subprocess
    import sys

    def pnb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipenb", *args, "--url", srv.url, "--token", srv.token],
            capture_output=True,
            text=True,
            timeout=60,
        )

    p = pnb("enroll-tokens", "create", "--labels", "cli,eu", "--expires", "24h", "--uses", "3")
    assert p.returncode == 0, p.stderr
    token = next(line for line in p.stdout.splitlines() if line.startswith("pnbe_"))
    assert "labels: cli, eu; uses: 3" in p.stdout
    r = enroll(srv, token)
    assert r.status_code == 201 and r.json()["labels"] == ["cli", "eu"]
    p = pnb("enroll-tokens", "list", "--json")
    tokens = {t["id"]: t for t in orjson.loads(p.stdout)["tokens"]}
    token_id = token.split("_")[1]
    assert tokens[token_id]["uses"] == 1 and tokens[token_id]["max_uses"] == 3
    p = pnb("enroll-tokens", "revoke", token_id)
    assert p.returncode == 0 and "revoked" in p.stdout, p.stderr
    error_of(enroll(srv, token), 401, "token_revoked")
    p = pnb("enroll-tokens", "create", "--expires", "soon")
    assert p.returncode == 2 and "expected a duration" in p.stderr, p.stderr


# ------------------------------------------------------------------------------ floods


def post_from(source: str, port: int, body: dict[str, Any]) -> int:
    """POST an enrollment from the loopback address ``source`` (requests cannot choose it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(
            "POST",
            PREFIX + "/agent/enroll",
            orjson.dumps(body),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_flood_of_wrong_keys_from_one_address_never_locks_out_a_valid_token(srv):
    """127.0.0.2 sends wrong keys as fast as it can; meanwhile a valid token enrolls from
    127.0.0.1 every time. The flooding address is answered 429 (after a burst of 401s), and a
    wrong key from 127.0.0.1 is still just a 401: the limit is per address."""
    token = new_token(srv, labels=["calm"])
    flood: Counter[int] = Counter()
    stop = threading.Event()

    def flooder() -> None:
        while not stop.is_set():
            flood[
                post_from("127.0.0.2", srv.port, {"enroll_key": "wrong-" + secrets.token_hex(4)})
            ] += 1

    thread = threading.Thread(target=flooder, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_until(
            lambda: flood[429] >= 20, timeout=30, what="the flood to be limited", info=lambda: flood
        )
        calm = [post_from("127.0.0.1", srv.port, {"enroll_key": token["token"]}) for _ in range(5)]
        wrong_here = post_from("127.0.0.1", srv.port, {"enroll_key": "wrong-but-rare"})
        flooded_right = post_from("127.0.0.2", srv.port, {"enroll_key": token["token"]})
    finally:
        stop.set()
        thread.join(30)
    elapsed = time.monotonic() - started
    assert calm == [201] * 5, calm
    assert wrong_here == 401
    assert flooded_right == 429  # the flooding address waits, whatever key it tries
    # at most the burst (10) and the refill (1 a second) got as far as a key check
    assert set(flood) == {401, 429} and flood[401] <= 10 + elapsed + 1, (flood, elapsed)
    assert srv.request("GET", f"/enroll-tokens/{token['id']}").json()["uses"] == 5


# ------------------------------------------------------------------------------ rogue agents


def test_a_rogue_agent_cannot_give_itself_labels(srv, agents, tmp_path):
    """Issue 11: an agent enrolled with ``labels: [db]`` received a db deployment and its
    parameters. Now an agent asking for labels is refused (the API and the CLI say where labels
    come from), and one enrolled with a ``web`` token never sees the db deployment."""
    db, web = "db-" + secrets.token_hex(3), "web-" + secrets.token_hex(3)
    password = "s3cret-" + secrets.token_hex(4)
    db_dep = deploy(srv, db, DB_PIPE.format(name=db), labels=[db], params={"password": password})
    web_dep = deploy(srv, web, WEB_PIPE.format(name=web), labels=[web])
    token = new_token(srv, labels=[web])
    # asking for labels, through the API or the agent's command line, is refused
    err = error_of(enroll(srv, token["token"], labels=[db]), 400, "invalid_body")
    assert "cannot choose its labels" in err["message"] and "enroll-tokens" in err["message"]
    asking = agents(srv, enroll_key=token["token"], extra=("--labels", db))
    wait_until(lambda: not asking.alive(), what="the agent to refuse --labels")
    assert asking.returncode() == 2 and "--labels is gone" in asking.log_text()
    assert asking.identity() is None
    # enrolled with the web token, it runs the web pipe and never gets the db one
    rogue = agents(srv, enroll_key=token["token"], name="db-please")
    rogue_id = rogue.wait_enrolled()
    wait_until(lambda: running_on(srv, web_dep, rogue_id), timeout=30, what="the web pipe running")
    assert agent_info(srv, rogue_id)["labels"] == [web]
    assert rogue_id not in placed_on(srv, db_dep)
    desired = orjson.loads((rogue.data_dir / "desired.json").read_bytes())
    assert [d["deployment_id"] for d in desired] == [web_dep]
    assert password not in (rogue.data_dir / "desired.json").read_text()
    # only an admin can give labels: then (and only then) the db pipe goes there
    r = srv.request("PATCH", f"/agents/{rogue_id}", json={"labels": [web, db]})
    assert r.status_code == 200 and r.json()["labels"] == [web, db]
    wait_until(lambda: running_on(srv, db_dep, rogue_id), timeout=30, what="the db pipe placed")


def test_a_rogue_agent_cannot_take_an_id_nor_its_deployment(srv, agents):
    """Issue 11: an agent enrolled as a not-yet-existing id took the deployment made for it.
    Now the id is the server's to give: asking for one is refused, an enrolled agent gets a new
    id, and the deployment waits for the agent an admin adds under that id."""
    future = "db-host-" + secrets.token_hex(3)
    pipe = "for-" + future
    dep = deploy(srv, pipe, DB_PIPE.format(name=pipe), agents=[future], params={"password": "pw"})
    token = new_token(srv, labels=[])
    err = error_of(enroll(srv, token["token"], id=future), 400, "invalid_body")
    assert "cannot choose its id" in err["message"]
    asking = agents(srv, enroll_key=token["token"], extra=("--id", future))
    wait_until(lambda: not asking.alive(), what="the agent to refuse --id")
    assert asking.returncode() == 2 and "--id goes with --api-key" in asking.log_text()
    rogue = agents(srv, enroll_key=token["token"], name=future)
    rogue_id = rogue.wait_enrolled()
    assert rogue_id != future and agent_info(srv, rogue_id)["name"] == future
    desired = rogue.data_dir / "desired.json"
    wait_until(desired.exists, what="the rogue's first check-in answered")
    assert srv.request("GET", f"/agents/{future}").status_code == 404
    assert placed_on(srv, dep) <= {future}
    assert orjson.loads(desired.read_bytes()) == []
    # the admin adds the real host by hand, with the id the deployment names
    assert srv.request("POST", "/agents", json={"id": future}).status_code == 201
    wait_until(lambda: placed_on(srv, dep) == {future}, what="the deployment placed on its agent")


def test_the_table_of_addresses_is_bounded_and_limits_each_address_alone():
    """The per-address buckets behind the flood test, without a server: one address spending
    its burst is refused while another is not, and a spray of addresses keeps at most
    ``max_addresses`` buckets."""
    from pipenb.server.ratelimit import BucketsByAddress

    table = BucketsByAddress(rate=0.001, burst=3, max_addresses=100)
    for _ in range(3):
        assert table.allows("10.0.0.1")
        table.spend("10.0.0.1")
    assert not table.allows("10.0.0.1") and table.allows("10.0.0.2")
    for i in range(1000):
        table.spend(f"10.1.{i // 256}.{i % 256}")
    assert len(table.buckets) <= 100
