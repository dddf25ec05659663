"""Who may do what (SPEC §8): roles on every route, user tokens, the audit trail.

The auth matrix is generated from the route table: a route added tomorrow is checked for every
kind of caller without anyone editing this file. Its calls use ids that do not exist and empty
bodies, so an allowed call answers 400 or 404 (it got past authorization) and nothing changes.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets

import pytest

from pipenb.server.roles import allows, needed_role

from support import REPO_ROOT
from support.cli import run_cli
from support.edgekit import add_agent, fill, operations
from support.serverproc import ServerProcess
from support.waiting import wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TOKEN = "admin-" + secrets.token_urlsafe(24)
BOGUS = {
    "name": "no-such-thing",
    "agent_id": "no-such-agent",
    "key_id": "0123456789ab",
    "dep_id": "dep-000000000000",
    "command_id": "cmd-000000000000",
    "token_id": "0123456789ab",
    "preview_id": "cmd-000000000000",
}
PIPE = """\
name: audited
description: version {n}
input: {{echo: {{events: [{{n: {n}}}], interval: 1h}}}}
output: {{discard: {{}}}}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("roles"), token=TOKEN, poll_interval=30) as s:
        yield s


def make_user(srv: ServerProcess, name: str, role: str, expires_in: float | None = None) -> str:
    r = srv.request("POST", "/users", json={"name": name, "role": role})
    assert r.status_code in (201, 409), r.text
    r = srv.request("POST", f"/users/{name}/tokens", json={"expires_in": expires_in})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def callers(srv) -> dict[str, str | None]:
    """A bearer token for each kind of caller (None: no Authorization header)."""
    revoked = make_user(srv, "revoked-user", "admin")
    token_id = revoked.split("_")[1]
    assert srv.request("DELETE", f"/users/revoked-user/tokens/{token_id}").status_code == 204
    expired = make_user(srv, "expired-user", "admin", expires_in=0.2)
    wait_until(
        lambda: srv.request("GET", "/whoami", token=expired).status_code == 401,
        timeout=10,
        what="the short-lived token to expire",
    )
    return {
        "anonymous": None,
        "viewer": make_user(srv, "vic", "viewer"),
        "editor": make_user(srv, "ed", "editor"),
        "admin": make_user(srv, "ada", "admin"),
        "server-token": TOKEN,
        "agent-key": add_agent(srv, "matrix-agent"),
        "revoked-token": revoked,
        "expired-token": expired,
    }


def expected(caller: str, method: str, op_role: str | None) -> set[int] | None:
    """The statuses a caller must get on a user operation; None: anything but 401 and 403."""
    if caller in ("anonymous", "revoked-token", "expired-token"):
        return {401}
    if caller == "agent-key":
        return {403}
    role = "admin" if caller == "server-token" else caller
    return None if allows(role, needed_role(method, op_role)) else {403}


def test_every_route_for_every_kind_of_caller(srv, callers):
    checked = 0
    for method, path, op in operations():
        url = fill(path, BOGUS)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for caller, token in callers.items():
            r = srv.request(method, url, token=token if token else None, json=body)
            if op.auth == "none":
                assert r.status_code < 500, (caller, method, path, r.status_code, r.text)
                continue
            if op.auth == "agent":
                # user credentials of any kind are not agent keys
                if caller != "agent-key":
                    assert r.status_code in (401, 403), (caller, method, path, r.status_code)
                continue
            want: set[int] | None = expected(caller, method, op.role)
            if want is None:
                assert r.status_code not in (401, 403) and r.status_code < 500, (
                    caller, method, path, r.status_code, r.text,
                )  # fmt: skip
            else:
                assert r.status_code in want, (caller, method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
            checked += 1
    assert checked >= 8 * 25  # every user operation, every caller


def test_admin_only_operations_are_the_documented_ones():
    admin_ops = sorted(f"{m} {p}" for m, p, op in operations() if op.role == "admin")
    assert admin_ops == sorted(
        [
            "POST /agents",
            "PATCH /agents/{agent_id}",
            "DELETE /agents/{agent_id}",
            "POST /agents/{agent_id}/keys",
            "DELETE /agents/{agent_id}/keys/{key_id}",
            "POST /users",
            "DELETE /users/{name}",
            "GET /users/{name}/tokens",
            "POST /users/{name}/tokens",
            "DELETE /users/{name}/tokens/{token_id}",
            "GET /enroll-tokens",
            "POST /enroll-tokens",
            "GET /enroll-tokens/{token_id}",
            "DELETE /enroll-tokens/{token_id}",
            "PUT /agent-settings",
        ]
    )
    documented = (REPO_ROOT / "docs" / "security.md").read_text()
    for op in admin_ops:
        assert f"`{op}`" in documented, f"{op} is admin-only but docs/security.md does not say so"


def test_a_refusal_names_the_role_needed(srv, callers):
    r = srv.request("POST", "/pipes", token=callers["viewer"], json={"yaml": "x"})
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "vic is a viewer; this needs the editor role"
    r = srv.request("GET", "/whoami", token="not-a-token")
    assert r.status_code == 401 and "invalid" in r.json()["error"]["message"]
    r = srv.request("GET", "/whoami", token=None)
    assert r.status_code == 401 and "required" in r.json()["error"]["message"]


def test_user_tokens_are_stored_hashed(srv, callers):
    raw = b"".join(p.read_bytes() for p in srv.data_dir.iterdir() if p.name.startswith("server.db"))
    assert b"vic" in raw  # the file holds the users: this is not a vacuous check
    for caller in ("viewer", "editor", "admin"):
        token = callers[caller]
        assert token is not None
        assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw


def test_two_users_session_through_the_cli_and_the_audit_trail(srv, tmp_path):
    ana = make_user(srv, "ana", "editor")
    bo = make_user(srv, "bo", "editor")
    vic = make_user(srv, "vic", "viewer")
    add_agent(srv, "audit-agent", ["audit"])

    def cli(token: str, *args: str):
        return run_cli(*args, "--url", srv.url, "--token", token)

    p = cli(ana, "whoami")
    assert p.returncode == 0 and p.stdout.startswith("ana (editor, by user-token)"), p.stdout
    f = tmp_path / "audited.yml"
    f.write_text(PIPE.format(n=1))
    assert cli(ana, "pipes", "push", f, "-m", "first").returncode == 0
    p = cli(ana, "deploy", "audited", "--labels", "audit", "--version", "1")
    assert p.returncode == 0, p.stderr
    dep = p.stdout.strip().splitlines()[-1]
    f.write_text(PIPE.format(n=2))
    assert cli(bo, "pipes", "push", f, "-m", "second").returncode == 0
    p = cli(bo, "deployments", "upgrade", dep, "--version", "2")
    assert p.returncode == 0, p.stderr
    p = cli(ana, "deployments", "stop", dep)
    assert p.returncode == 0, p.stderr
    p = cli(vic, "deployments", "start", dep)
    assert p.returncode == 1 and "vic is a viewer; this needs the editor role" in p.stderr

    p = cli(vic, "pipes", "versions", "audited")
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()
    assert "AUTHOR" in header.split(), p.stdout
    authors = {row.split()[0]: row.split()[header.split().index("AUTHOR")] for row in rows}
    assert authors == {"1": "ana", "2": "bo"}, p.stdout
    listed = srv.request("GET", "/pipes", token=vic).json()["pipes"]
    assert [x["author"] for x in listed if x["name"] == "audited"] == ["bo"]  # the newest
    p = cli(vic, "deployments", "status", dep)
    assert "created by ana at" in p.stdout and "last changed by ana at" in p.stdout, p.stdout

    trail = srv.request("GET", "/audit", params={"object": dep}, token=vic).json()["entries"]
    assert [(e["user"], e["method"], e["route"], e["status"]) for e in trail] == [
        ("ana", "POST", "/deployments", 201),
        ("bo", "POST", "/deployments/{dep_id}/upgrade", 200),
        ("ana", "POST", "/deployments/{dep_id}/stop", 200),
        ("vic", "POST", "/deployments/{dep_id}/start", 403),
    ]
    created = srv.request("GET", "/audit", params={"user": "ana"}).json()["entries"]
    assert ("POST", "/deployments", dep) in [
        (e["method"], e["route"], e["object"]) for e in created
    ]
    assert all(e["address"] == "127.0.0.1" for e in created)
    p = cli(vic, "audit", "--user", "bo", "--since", "1h")
    assert p.returncode == 0 and "POST /pipes" in p.stdout and "bo" in p.stdout, p.stdout
    p = cli(TOKEN, "users", "list")
    assert p.returncode == 0 and "ana" in p.stdout and "editor" in p.stdout, p.stdout


# ------------------------------------------------------------------------------ inside Jupyter


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"pipenb.jupyter_ext": True, "jupyter_server_terminals": False},
            "identity_provider_class": "test_roles.NamedUsers",
            "disable_check_xsrf": True,  # the test's users sign in by header, not by cookie
        },
        "PipenbExtension": {
            "db_url": f"sqlite:///{tmp_path}/jp.db",
            "roles": {"bo": "editor"},
        },
    }


try:
    from jupyter_server.auth import IdentityProvider, User

    class NamedUsers(IdentityProvider):
        """Each request is the user its ``X-Test-User`` header names, as a hub would say."""

        def get_user(self, handler):  # type: ignore[no-untyped-def]
            name = handler.request.headers.get("X-Test-User")
            return User(username=name) if name else None

except ImportError:  # pragma: no cover - jupyter_server is a dev dependency
    pass


async def test_two_jupyter_users_get_their_roles_and_their_names_in_the_trail(
    jp_fetch, monkeypatch
):
    monkeypatch.setenv("JUPYTERHUB_USER", "ana")  # this server is ana's

    async def call(user: str | None, method: str, *parts: str, body=None, token=None):
        headers = {"X-Test-User": user} if user else {}
        if token:
            headers["Authorization"] = f"token {token}"
        if body is None and method == "POST":
            body = {}
        return await jp_fetch(
            "pipenb", "api", "v1", *parts, method=method, headers=headers,
            body=None if body is None else json.dumps(body), raise_error=False,
        )  # fmt: skip

    r = await call("ana", "GET", "whoami")
    assert json.loads(r.body) == {"name": "ana", "role": "admin", "via": "jupyter"}
    r = await call("bo", "GET", "whoami")
    assert json.loads(r.body) == {"name": "bo", "role": "editor", "via": "jupyter"}
    r = await call("cy", "GET", "whoami")
    assert json.loads(r.body) == {"name": "cy", "role": "viewer", "via": "jupyter"}

    r = await call("bo", "POST", "pipes", body={"yaml": PIPE.format(n=1)})
    assert r.code == 201, r.body
    r = await call("cy", "POST", "pipes", body={"yaml": PIPE.format(n=2)})
    assert r.code == 403 and b"cy is a viewer" in r.body
    r = await call("bo", "POST", "users", body={"name": "dee", "role": "viewer"})
    assert r.code == 403
    r = await call("ana", "POST", "users", body={"name": "dee", "role": "viewer"})
    assert r.code == 201, r.body
    # the kernels' token carries the server's user (ana) and her role, and nothing more
    r = await call(None, "GET", "whoami", token=os.environ["PIPENB_TOKEN"])
    assert json.loads(r.body) == {"name": "ana", "role": "admin", "via": "kernel"}

    r = await call("cy", "GET", "audit")
    trail = [
        (e["user"], e["method"], e["route"], e["status"]) for e in json.loads(r.body)["entries"]
    ]
    assert trail == [
        ("bo", "POST", "/pipes", 201),
        ("cy", "POST", "/pipes", 403),
        ("bo", "POST", "/users", 403),
        ("ana", "POST", "/users", 201),
    ]
    r = await call("ana", "GET", "pipes", "audited", "versions")
    assert [v["author"] for v in json.loads(r.body)["versions"]] == ["bo"]


def test_a_plain_jupyter_server_names_its_own_account():
    """Without JupyterHub, Jupyter's token logins get a made-up name; the trail names the account
    the server runs as, and that one user is an admin."""
    from pipenb.jupyter_ext.app import jupyter_role, owner_name

    env = dict(os.environ)
    os.environ.pop("JUPYTERHUB_USER", None)
    try:
        assert owner_name() == getpass.getuser()
        assert jupyter_role({}, "anyone") == "admin"
        assert jupyter_role({"pipenb_roles": {"anyone": "viewer"}}, "anyone") == "viewer"
    finally:
        os.environ.clear()
        os.environ.update(env)
