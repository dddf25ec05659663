"""Security rules, a test per rule (SPEC §3, §4, §5).

Already covered elsewhere and referenced, not repeated: agent keys added by hand are stored
hashed (test_server_auth.py::test_keys_are_stored_hashed), an agent key is refused on a sample of
user endpoints and cannot check in under another agent's id (test_server_auth.py, and
test_edges.py for a forged check-in carrying every field), enrollment with wrong keys is rate
limited (test_server_auth.py::test_enrollment_is_rate_limited), refused capabilities are reported
as failed (test_agent_e2e.py::test_failing_pipes_are_reported_and_others_keep_running), and
inside Jupyter every user endpoint refuses anonymous requests and every handler passes Jupyter's
own auth check (test_jupyter_ext.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from support.agentproc import AgentProcess
from support.cli import run_cli
from support.edgekit import (
    PIPE,
    VerboseServer,
    World,
    agent_view,
    checkin,
    error_of,
    fill,
    make_world,
    operations,
    serves,
)
from support.serverproc import ServerProcess
from support.waiting import wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TOKEN = "user-" + secrets.token_urlsafe(24)
ENROLL_KEY = "enroll-" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # a long poll interval: agents stay online through a test unless something makes them leave
    with ServerProcess(
        tmp_path_factory.mktemp("security"), token=TOKEN, enroll_key=ENROLL_KEY, poll_interval=30
    ) as s:
        yield s


@pytest.fixture(scope="module")
def world(srv) -> World:
    return make_world(srv, "sec")


def enroll(srv: ServerProcess, name: str | None = None, key: str = ENROLL_KEY):
    """Enroll; the server assigns the id (``name`` is only a display name)."""
    body = {"enroll_key": key} if name is None else {"enroll_key": key, "name": name}
    return srv.request("POST", "/agent/enroll", token=None, json=body)


def agent_names(srv: ServerProcess) -> dict[str, str]:
    """name -> id of every agent the server knows."""
    return {a["name"]: a["id"] for a in srv.request("GET", "/agents").json()["agents"]}


# ------------------------------------------------------------------------------ stored hashed


def test_keys_and_tokens_are_stored_only_hashed(srv, world):
    """The user token, the bootstrap enrollment key, an enrollment token, a key added by hand
    and keys handed out at enrollment: none of them, nor a key's secret part, is anywhere in the
    database file (or its WAL), in any table."""
    r = enroll(srv, "sec-enrolled")
    assert r.status_code == 201, r.text
    enrolled = r.json()["api_key"]
    assert checkin(srv, enrolled, r.json()["agent_id"]).status_code == 200
    made = srv.request("POST", "/enroll-tokens", json={"labels": ["sec"]})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    r = enroll(srv, "sec-by-token", key=token)
    assert r.status_code == 201, r.text
    by_token = r.json()["api_key"]
    keys = [world.key_a, world.key_b, enrolled, by_token]

    db = Path(srv.db_url.split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    finally:
        conn.close()
    cells = "\n".join(repr(row) for t in tables for row in rows[t])
    assert "api_keys" in tables and len(rows["api_keys"]) == 4
    assert "enroll_tokens" in tables and len(rows["enroll_tokens"]) == 1

    secrets_ = [TOKEN, ENROLL_KEY, token, *keys, *(k.split("_", 2)[2] for k in [*keys, token])]
    for s in secrets_:
        assert s.encode() not in raw, s
        assert s not in cells, s
    # what is there instead: each key's id and the SHA-256 of its secret
    for k in [*keys, token]:
        _, key_id, secret = k.split("_", 2)
        assert key_id in cells and hashlib.sha256(secret.encode()).hexdigest() in cells


# ------------------------------------------------------------------------------ constant time


def test_secret_comparisons_are_constant_time(tmp_path, monkeypatch):
    """Every check of a user token, an enrollment key, an agent key and an http-server input
    token goes through ``hmac.compare_digest``, for right and wrong values alike; agent keys are
    compared as hashes, so not even the comparison sees the secret."""
    from pipenb.engine.inputs.http_server import _bearer_ok
    from pipenb.errors import AuthError
    from pipenb.server import models as M
    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.handlers.base import user_token_auth
    from pipenb.server.settings import ServerSettings

    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    monkeypatch.setattr(secrets, "compare_digest", counting)

    def compared(fn) -> list[tuple[object, object]]:
        """The comparisons ``fn()`` made (an AuthError counts as its answer)."""
        start = len(calls)
        try:
            fn()
        except AuthError:
            pass
        return calls[start:]

    cp = ControlPlane(
        ServerSettings(db_url=f"sqlite:///{tmp_path}/cp.db", token="tok-right", enroll_key="ek-1")
    )
    try:
        for bearer, ok in (("tok-right", True), ("tok-wronG", False), ("x", False)):
            handler = SimpleNamespace(cp=cp, bearer=lambda b=bearer: b)
            assert (user_token_auth(handler) is not None) is ok  # type: ignore[arg-type]
            assert len(compared(lambda h=handler: user_token_auth(h))) == 1, bearer

        def enroll(key: str) -> None:
            result.append(cp.enrollment.enroll(M.EnrollRequest(enroll_key=key), "127.0.0.1"))

        result: list = []
        assert len(compared(lambda: enroll("ek-2"))) == 1
        assert len(compared(lambda: enroll("ek-1"))) == 1
        key = result[0].api_key
        assert cp.agents.authenticate(key) == result[0].agent_id
        # an enrollment token is compared as a hash, right or wrong
        token = cp.enrollment.create_token(M.EnrollTokenCreate(labels=["x"])).token
        bad = token[:-1] + ("A" if token[-1] != "A" else "B")
        for attempt in (bad, token):
            (made,) = compared(lambda a=attempt: enroll(a))
            assert all(re.fullmatch(r"[0-9a-f]{64}", x) for x in made), made
        assert result[-1].labels == ["x"]

        prefix, key_id, secret = key.split("_", 2)
        wrong = f"{prefix}_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
        for attempt in (key, key, wrong):  # from the database, from the cache, a wrong one
            (made,) = compared(lambda a=attempt: cp.agents.authenticate(a))
            assert all(re.fullmatch(r"[0-9a-f]{64}", x) for x in made), made  # hashes only
        with pytest.raises(AuthError):
            cp.agents.authenticate(wrong)
    finally:
        cp.engine.dispose()

    for header, ok in (("Bearer s3cret", True), ("Bearer s3creT", False), ("Bearer ", False)):
        start = len(calls)
        assert _bearer_ok(header, "s3cret") is ok
        assert len(calls) == start + 1, header


# ------------------------------------------------------------------------------ agent isolation


def test_an_agent_key_reaches_only_its_own_agents_data(srv, world):
    """Agent a, with its own valid key, reporting about agent b's deployment and command under
    its own id: the server drops what a says about a deployment not assigned to it (no status,
    metrics or log rows, under anyone's name), nothing of b's changes, and a is handed neither
    b's desired pipes nor b's commands."""
    before = agent_view(srv, world)
    r = checkin(
        srv,
        world.key_a,
        world.a,
        seq=0,
        pipes=[
            {
                "deployment_id": world.dep,
                "state": "failed",
                "error": "from a",
                "metrics": {"input": {"events": 0}},
                "checkpoint": {"owner": world.a},
            }
        ],
        acks=[world.command],
        captures=[{"command_id": world.command, "events": [{"from": "a"}]}],
        logs=[{"level": "error", "deployment_id": world.dep, "message": "from a"}],
    )
    assert r.status_code == 200, r.text
    assert r.json()["desired"] == [] and r.json()["commands"] == []
    assert agent_view(srv, world) == before
    command = srv.request("GET", f"/commands/{world.command}").json()
    assert command["acked_at"] is None and command["result"] is None
    # b itself still gets its pipe and its command
    r = checkin(srv, world.key_b, world.b, seq=2)
    assert [d["deployment_id"] for d in r.json()["desired"]] == [world.dep]
    assert [c["id"] for c in r.json()["commands"]] == [world.command]
    # what a said about b's deployment is stored nowhere
    logs = srv.request("GET", f"/deployments/{world.dep}/logs").json()["logs"]
    assert [line for line in logs if line["message"] == "from a"] == []
    metrics = srv.request("GET", f"/deployments/{world.dep}/metrics").json()["metrics"]
    assert [m for m in metrics if m["agent_id"] == world.a] == []
    assert {line["agent_id"] for line in logs if "says hello" in line["message"]} == {world.b}


def test_an_agent_key_is_refused_on_every_user_endpoint(srv, world):
    """Every user operation of the route table, aimed at agent b's own resources, with agent
    a's key (and with b's own key): 403, and nothing changed."""
    before = agent_view(srv, world)
    pipes_before = srv.request("GET", "/pipes").json()
    checked = 0
    for method, path, op in operations():
        if op.auth != "user":
            continue
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for key in (world.key_a, world.key_b):
            r = srv.request(method, fill(path, world.ids), token=key, json=body)
            err = error_of(r, 403, "forbidden")
            assert "agent keys are for agent endpoints only" in err["message"], (path, err)
        checked += 1
    assert checked >= 20
    assert agent_view(srv, world) == before
    assert srv.request("GET", "/pipes").json() == pipes_before
    # nor is an agent key an enrollment key
    error_of(enroll(srv, "sec-by-key", key=world.key_a), 401)
    assert "sec-by-key" not in agent_names(srv)
    serves(srv)


# ------------------------------------------------------------------------------ enrollment


def test_enrollment_bursts_are_refused_with_retry_info_even_with_the_right_key(srv):
    """A burst of enrollments with the right key: some get through (up to the rate), the rest
    429 with ``Retry-After`` and create nothing; a little later enrollment works again."""
    started = time.monotonic()
    answers = [enroll(srv, f"burst-{i}") for i in range(30)]
    elapsed = time.monotonic() - started
    made = [i for i, r in enumerate(answers) if r.status_code == 201]
    refused = [r for r in answers if r.status_code != 201]
    assert refused and made, [r.status_code for r in answers]
    assert len(made) <= 10 + int(elapsed * 10) + 1  # the burst allowance (10/s) and no more
    for r in refused:
        err = error_of(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1 and err["details"] == [{"retry_after": 1}]
    names = agent_names(srv)
    assert {a for a in names if a.startswith("burst-")} == {f"burst-{i}" for i in made}
    r = wait_until(
        lambda: (x := enroll(srv, "burst-later")).status_code != 429 and x,
        timeout=10,
        what="the limit to lift",
    )
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------ logs


class VerboseAgent(AgentProcess):
    def args(self) -> list[str]:
        args = super().args()
        args[args.index("-v")] = "-vv"
        return args


def test_the_user_token_and_keys_never_reach_logs_or_output(tmp_path):
    """A server, an agent running a pipe, and CLI commands, all with -vv: the user token, the
    enrollment key and the agent's key appear in no log, no output, no file either leaves
    behind (but the agent's own identity file, which holds its key by design)."""
    token = "tok-" + secrets.token_urlsafe(24)
    enroll_key = "ek-" + secrets.token_urlsafe(24)
    srv = VerboseServer(tmp_path / "server", token=token, enroll_key=enroll_key)
    agent: AgentProcess | None = None
    outputs: list[str] = []
    try:
        srv.start()
        agent = VerboseAgent(
            srv.url,
            tmp_path / "agent",
            enroll_key=enroll_key,
            labels=["logs"],
            long_poll=2,
            token=token,
        ).start()
        agent_id = agent.wait_enrolled()
        api_key = agent.identity()["api_key"]  # type: ignore[index]
        enroll_token = agent.enroll_token["token"]  # type: ignore[index]

        pipe_file = tmp_path / "pipe.yaml"
        pipe_file.write_text(PIPE.format(name="logs-pipe"))
        remote = ("--url", srv.url, "--token", token)
        steps = [
            ("pipes", "push", pipe_file, *remote),
            ("deploy", "logs-pipe", "--labels", "logs", *remote),
        ]
        for step in steps:
            p = run_cli("-vv", *step)
            assert p.returncode == 0, p.stderr
            outputs += [p.stdout, p.stderr]
        dep = outputs[-2].strip()

        def running() -> bool:
            d = srv.request("GET", f"/deployments/{dep}").json()
            return any(s["agent_id"] == agent_id and s["state"] == "running" for s in d["status"])

        wait_until(running, timeout=30, what="the pipe running on the agent")
        p = run_cli("-vv", "deployments", "status", dep, *remote)
        assert p.returncode == 0 and "running" in p.stdout, p.stdout + p.stderr
        outputs += [p.stdout, p.stderr]
        # refusals are logged too: a wrong key, the agent's key where it does not belong
        error_of(checkin(srv, "pnb_nosuch_key", agent_id), 401)
        error_of(srv.request("GET", "/agents", token=api_key), 403)
        assert agent.terminate() == 0
    finally:
        if agent is not None:
            agent.cleanup()
        srv.stop()

    texts = {"cli": "\n".join(outputs)}
    for root in (tmp_path / "server", tmp_path / "agent"):
        for f in root.rglob("*"):
            if f.is_file() and f.name != "identity.json":
                texts[str(f.relative_to(tmp_path))] = f.read_bytes().decode("utf-8", "replace")
    # the test harness writes the agent's command line (with --enroll-key and the enrollment
    # token it made) into agent.log
    texts["agent/agent.log"] = "\n".join(
        line for line in texts["agent/agent.log"].splitlines() if not line.startswith("--- ")
    )
    # the logs are there and say things: this is not a vacuous check
    assert "DEBUG" in texts["server/server.log"] and "/agent/checkin" in texts["server/server.log"]
    assert f"checked in with {srv.url} as {agent_id}" in texts["agent/agent.log"]
    assert any(name.startswith("agent/logs/") for name in texts), sorted(texts)
    assert "PIPENB_TOKEN: the token given with --token" in texts["server/stdout.log"]
    for secret in (token, enroll_key, api_key, api_key.split("_", 2)[2], enroll_token):
        leaks = [name for name, text in texts.items() if secret in text]
        assert not leaks, (secret, leaks)


# ------------------------------------------------------------------------------ capabilities


def test_exec_and_script_are_refused_where_disabled_and_never_run(srv, tmp_path):
    """The same exec and script pipes deployed to an agent started with ``--disable exec`` and
    without ``--allow-scripts``, and to one whose policy allows both: the latter runs them (its
    canary files appear), the former reports each instance refused with the rule and never runs
    either (its canary files never appear, no worker is left, none is restarted)."""
    label = "caps-" + secrets.token_hex(3)
    canary = tmp_path / "canaries"
    canary.mkdir()
    exec_pipe = (
        "name: caps-exec\n"
        f"input: {{exec: {{command: 'touch {canary}/exec-{{{{agent.id}}}}'}}}}\n"
        "output: {discard: {}}\n"
    )
    code = (
        "import pathlib\n"
        f"pathlib.Path('{canary}/script-{{{{agent.id}}}}').touch()\n"
        "def process(event):\n"
        "    return event\n"
    )
    script_pipe = (
        "name: caps-script\n"
        "input: {echo: {events: [{n: 1}], interval: 1h}}\n"
        f"actions:\n  - script: {{code: {json.dumps(code)}}}\n"
        "output: {discard: {}}\n"
    )
    agents: list[AgentProcess] = []
    try:
        strict = AgentProcess(
            srv.url,
            tmp_path / "strict",
            enroll_key=ENROLL_KEY,
            labels=[label],
            disable=["exec"],
            token=TOKEN,
        ).start()
        agents.append(strict)
        lax = AgentProcess(
            srv.url,
            tmp_path / "lax",
            enroll_key=ENROLL_KEY,
            labels=[label],
            allow_scripts=True,
            token=TOKEN,
            extra=("--allow-exec", "any"),
        ).start()
        agents.append(lax)
        strict_id, lax_id = strict.wait_enrolled(), lax.wait_enrolled()
        deps = {}
        for name, text in (("caps-exec", exec_pipe), ("caps-script", script_pipe)):
            assert srv.request("POST", "/pipes", json={"yaml": text}).status_code == 201
            r = srv.request("POST", "/deployments", json={"pipe": name, "labels": [label]})
            assert r.status_code == 201, r.text
            deps[name] = r.json()["id"]

        def instance(dep: str, agent_id: str) -> dict:
            d = srv.request("GET", f"/deployments/{dep}").json()
            return next((s for s in d["status"] if s["agent_id"] == agent_id), {})

        # the agent that allows both runs them: the canaries work
        for what in ("exec", "script"):
            wait_until(
                lambda w=what: (canary / f"{w}-{lax_id}").exists(),
                timeout=30,
                what=f"the {what} canary of the agent that allows it",
            )
        errors = {
            name: wait_until(
                lambda d=dep: (s := instance(d, strict_id)).get("state") == "refused" and s,
                timeout=30,
                what=f"{name} reported refused on the strict agent",
            )["error"]
            for name, dep in deps.items()
        }
        assert "exec" in errors["caps-exec"] and "policy is off" in errors["caps-exec"], errors
        assert "script" in errors["caps-script"] and "policy is off" in errors["caps-script"]
        assert "--allow-scripts" in errors["caps-script"]
        # the server refused them at deploy time; the agent refuses them too, and says so
        wait_until(
            lambda: srv.request("GET", f"/agents/{strict_id}").json()["state"] == "degraded",
            timeout=30,
            what="the strict agent degraded by its own refusals",
        )
        wait_until(lambda: not strict.worker_pids(), timeout=20, what="no worker left")
        assert sorted(p.name for p in canary.iterdir()) == [f"exec-{lax_id}", f"script-{lax_id}"]
        assert "restarting pipe" not in strict.log_text()
        assert strict.alive() and lax.alive()
    finally:
        for a in agents:
            a.cleanup()
        for name in ("caps-exec", "caps-script"):
            for d in srv.request("GET", "/deployments").json()["deployments"]:
                if d["pipe"] == name:
                    srv.request("DELETE", f"/deployments/{d['id']}")


# ------------------------------------------------------------------------------ Jupyter


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"pipenb.jupyter_ext": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "PipenbExtension": {"db_url": f"sqlite:///{tmp_path}/jp.db", "enroll_key": ENROLL_KEY},
    }


@pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")
async def test_inside_jupyter_user_endpoints_refuse_wrong_tokens_and_agent_keys(jp_fetch):
    """What test_jupyter_ext.py leaves out: a wrong Jupyter token and an agent key on every
    user endpoint, and agent endpoints without a key."""

    async def call(method: str, path: str, headers: dict[str, str], body=None):
        parts = ("pipenb", "api", "v1", *path.strip("/").split("/"))
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = {}
        return await jp_fetch(
            *parts,
            method=method,
            body=None if body is None else json.dumps(body),
            headers=headers,
            raise_error=False,
        )

    r = await call("POST", "/agent/enroll", {"Authorization": ""}, {"enroll_key": ENROLL_KEY})
    assert r.code == 201, r.body
    key, agent_id = orjson.loads(r.body)["api_key"], orjson.loads(r.body)["agent_id"]
    ids = {
        "name": "p",
        "agent_id": agent_id,
        "key_id": "k",
        "dep_id": "d",
        "command_id": "c",
        "token_id": "t",
        "preview_id": "p",
    }
    checked = 0
    for method, path, op in operations():
        if op.auth != "user":
            continue
        for headers, statuses in (
            ({"Authorization": "token wrong-" + secrets.token_hex(8)}, (401, 403)),
            ({"Authorization": f"Bearer {key}"}, (403,)),
        ):
            r = await call(method, fill(path, ids), headers)
            assert r.code in statuses, (method, path, headers, r.code, r.body)
            assert orjson.loads(r.body)["error"]["code"] in ("unauthorized", "forbidden")
        checked += 1
    assert checked >= 20
    r = await call(
        "POST", "/agent/checkin", {"Authorization": ""}, {"agent_id": agent_id, "seq": 0}
    )
    assert r.code == 401, r.body
    # the agent itself is untouched and its key still checks in
    r = await call(
        "POST",
        "/agent/checkin",
        {"Authorization": f"Bearer {key}"},
        {"agent_id": agent_id, "seq": 0},
    )
    assert r.code == 200, r.body
