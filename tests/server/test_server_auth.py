"""Who may call what on a real ``pipenb server``: user token, agent keys, enrollment.

Users hold the server's token; agents hold their own API key, valid on agent endpoints only
(SPEC §3). Keys are shown once and stored hashed; enrollment is off unless a key is configured.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from support.edgekit import add_agent
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-secret"
PIPE = "name: auth-pipe\ninput: {echo: {events: [{n: 1}]}}\noutput: {discard: {}}\n"


def error_of(resp, status: int | tuple[int, ...], code: str | None = None) -> dict:
    """The JSON error body ``{"error": {code, message, details}}`` of a refused request."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "details"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], list)
    if code is not None:
        assert err["code"] == code, err
    return err


def checkin(srv: ServerProcess, agent_id: str, key: str | None, seq: int = 0, **body):
    return srv.request(
        "POST", "/agent/checkin", token=key, json={"agent_id": agent_id, "seq": seq, **body}
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("auth"), enroll_key=ENROLL_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def srv_closed(tmp_path_factory):
    """A server started without an enrollment key."""
    with ServerProcess(tmp_path_factory.mktemp("closed")) as s:
        yield s


@pytest.fixture(scope="module")
def agent_a(srv) -> str:
    return add_agent(srv, "auth-a", ["x"])


@pytest.fixture(scope="module")
def agent_b(srv) -> str:
    return add_agent(srv, "auth-b", ["x"])


USER_ENDPOINTS = [
    ("GET", "/pipes", None),
    ("POST", "/pipes", {"yaml": PIPE}),
    ("GET", "/agents", None),
    ("POST", "/agents", {"id": "intruder"}),
    ("PATCH", "/agents/auth-a", {"labels": ["owned"]}),
    ("POST", "/agents/auth-a/keys", None),
    ("GET", "/deployments", None),
    ("POST", "/deployments", {"pipe": "auth-pipe"}),
    ("GET", "/commands/cmd-x", None),
]


# ------------------------------------------------------------------------------ open endpoints


def test_health_and_openapi_need_no_auth(srv):
    r = srv.request("GET", "/health", token=None)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = srv.request("GET", "/openapi.json", token=None)
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")


# ------------------------------------------------------------------------------ user endpoints


@pytest.mark.parametrize("method,path,body", USER_ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-token", ""], ids=["none", "wrong", "empty"])
def test_user_endpoints_refuse_missing_or_wrong_token(srv, agent_a, method, path, body, token):
    r = srv.request(method, path, token=token, json=body)
    error_of(r, 401)


@pytest.mark.parametrize("method,path,body", USER_ENDPOINTS)
def test_agent_key_is_refused_on_user_endpoints(srv, agent_a, method, path, body):
    r = srv.request(method, path, token=agent_a, json=body)
    error_of(r, (401, 403))
    # and nothing happened
    assert srv.request("GET", "/pipes/auth-pipe").status_code == 404
    assert srv.request("GET", "/agents/intruder").status_code == 404
    assert srv.request("GET", "/agents/auth-a").json()["labels"] == ["x"]
    keys = srv.request("GET", "/agents/auth-a/keys").json()["keys"]
    assert len(keys) == 1


def test_user_token_works_with_bearer_scheme(srv):
    r = srv.request("GET", "/agents")
    assert r.status_code == 200
    r = srv.request("GET", "/agents", token=None, headers={"Authorization": srv.token})
    error_of(r, 401)  # no scheme: not a bearer token


# ------------------------------------------------------------------------------ agent endpoints


def test_agent_key_checks_in(srv, agent_a):
    r = checkin(srv, "auth-a", agent_a, seq=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seq"] == 0 and body["desired"] == [] and body["poll_interval"] == 1.0


@pytest.mark.parametrize(
    "key",
    [None, "", "pnb_nosuchkey_secret", "not-a-key", "test-token"],
    ids=["none", "empty", "unknown", "garbage", "user-token"],
)
def test_checkin_refuses_missing_unknown_and_user_credentials(srv, agent_a, key):
    error_of(checkin(srv, "auth-a", key), 401)


def test_user_token_is_refused_on_checkin(srv, agent_a):
    error_of(checkin(srv, "auth-a", srv.token), (401, 403))


def test_right_key_id_with_wrong_secret_is_refused(srv, agent_a):
    key_id = agent_a.split("_")[1]
    error_of(checkin(srv, "auth-a", f"pnb_{key_id}_{'A' * 43}"), 401)


def test_agent_key_cannot_check_in_as_another_agent(srv, agent_a, agent_b):
    before = srv.request("GET", "/agents/auth-b").json()
    r = checkin(srv, "auth-b", agent_a, seq=0, pipes=[{"deployment_id": "d", "state": "failed"}])
    error_of(r, (401, 403))
    after = srv.request("GET", "/agents/auth-b").json()
    assert after["last_seen"] == before["last_seen"] is None
    assert after["state"] == "offline"


# ------------------------------------------------------------------------------ enrollment


def test_enrollment_is_off_without_a_key(srv_closed):
    for key in ("", "anything", ENROLL_KEY):
        r = srv_closed.request("POST", "/agent/enroll", token=None, json={"enroll_key": key})
        error_of(r, 403, "enrollment_disabled")
    assert srv_closed.request("GET", "/agents").json()["agents"] == []


def test_enroll_with_wrong_key_is_refused(srv):
    before = srv.request("GET", "/agents").json()["agents"]
    r = srv.request("POST", "/agent/enroll", token=None, json={"enroll_key": "nope"})
    error_of(r, 401, "invalid_token")
    assert srv.request("GET", "/agents").json()["agents"] == before


def test_enroll_creates_an_agent_whose_key_checks_in(srv):
    r = srv.request(
        "POST",
        "/agent/enroll",
        token=None,
        json={"enroll_key": ENROLL_KEY, "name": "worker one", "attributes": {"os": "linux"}},
    )
    assert r.status_code == 201, r.text
    res = r.json()
    aid = res["agent_id"]
    assert aid.startswith("agent-") and res["api_key"].startswith("pnb_")
    agent = srv.request("GET", f"/agents/{aid}").json()
    assert agent["enrolled"] is True
    assert agent["labels"] == [] == res["labels"]  # the bootstrap key gives no labels
    assert agent["name"] == "worker one"
    assert agent["attributes"] == {"os": "linux"}
    r = checkin(srv, aid, res["api_key"], seq=0)
    assert r.status_code == 200, r.text
    assert srv.request("GET", f"/agents/{aid}").json()["state"] == "online"
    # the enrolled key is for agent endpoints only
    error_of(srv.request("GET", "/agents", token=res["api_key"]), (401, 403))


def test_enroll_without_id_gets_a_new_id(srv):
    r = srv.request("POST", "/agent/enroll", token=None, json={"enroll_key": ENROLL_KEY})
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    assert agent_id
    assert checkin(srv, agent_id, r.json()["api_key"]).status_code == 200


def test_an_enrolling_agent_cannot_choose_its_id_or_labels(srv, agent_a):
    for extra in ({"id": "auth-a"}, {"id": "not-yet"}, {"labels": ["db"]}):
        r = srv.request(
            "POST", "/agent/enroll", token=None, json={"enroll_key": ENROLL_KEY, **extra}
        )
        message = error_of(r, 400, "invalid_body")["message"]
        assert f"cannot choose its {next(iter(extra))}" in message
    assert srv.request("GET", "/agents/not-yet").status_code == 404
    keys = srv.request("GET", "/agents/auth-a/keys").json()["keys"]
    assert len(keys) == 1  # no key was handed out


def test_enrollment_is_rate_limited(srv):
    statuses = []
    retry_after = None
    for _ in range(40):
        r = srv.request("POST", "/agent/enroll", token=None, json={"enroll_key": "wrong"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            error_of(r, 429)
            retry_after = r.headers.get("Retry-After")
            break
    assert 429 in statuses, statuses
    assert statuses[0] == 401
    assert retry_after is not None and int(retry_after) >= 1
    # the limit lifts again: a right key enrolls within a few seconds

    def not_limited() -> Any:
        r = srv.request("POST", "/agent/enroll", token=None, json={"enroll_key": ENROLL_KEY})
        return r if r.status_code != 429 else None

    r = wait_until(not_limited, 5, "the enrollment limit to lift", interval=0.05)
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------ API keys


def test_keys_are_shown_once_and_revocable(srv):
    add = srv.request("POST", "/agents", json={"id": "k-1"})
    assert add.status_code == 201
    created = [srv.request("POST", "/agents/k-1/keys") for _ in range(2)]
    assert [c.status_code for c in created] == [201, 201]
    k1, k2 = (c.json() for c in created)
    assert k1["api_key"] != k2["api_key"] and k1["key_id"] in k1["api_key"]
    listing = srv.request("GET", "/agents/k-1/keys")
    assert listing.status_code == 200
    assert {k["key_id"] for k in listing.json()["keys"]} == {k1["key_id"], k2["key_id"]}
    for k in (k1, k2):
        secret = k["api_key"].split("_", 2)[2]
        assert k["api_key"] not in listing.text and secret not in listing.text
    assert all("api_key" not in k for k in listing.json()["keys"])
    assert k1["api_key"] not in srv.request("GET", "/agents/k-1").text

    assert checkin(srv, "k-1", k1["api_key"]).status_code == 200
    r = srv.request("DELETE", f"/agents/k-1/keys/{k1['key_id']}")
    assert r.status_code == 204
    error_of(checkin(srv, "k-1", k1["api_key"], seq=1), 401)
    assert checkin(srv, "k-1", k2["api_key"], seq=1).status_code == 200
    keys = {k["key_id"]: k for k in srv.request("GET", "/agents/k-1/keys").json()["keys"]}
    assert keys[k1["key_id"]]["revoked_at"] is not None
    assert keys[k2["key_id"]]["revoked_at"] is None


def test_revoking_unknown_or_foreign_keys_is_404(srv, agent_a):
    error_of(srv.request("DELETE", "/agents/auth-a/keys/nosuchkey"), 404)
    foreign = srv.request("POST", "/agents/auth-b/keys")
    assert foreign.status_code == 201
    error_of(srv.request("DELETE", f"/agents/auth-a/keys/{foreign.json()['key_id']}"), 404)
    r = checkin(srv, "auth-b", foreign.json()["api_key"])
    assert r.status_code == 200  # still valid
    error_of(srv.request("POST", "/agents/nobody/keys"), 404)
    error_of(srv.request("GET", "/agents/nobody/keys"), 404)


def test_keys_are_stored_hashed(srv):
    assert srv.request("POST", "/agents", json={"id": "k-hash"}).status_code == 201
    created = srv.request("POST", "/agents/k-hash/keys").json()
    api_key, key_id = created["api_key"], created["key_id"]
    secret = api_key.split("_", 2)[2]
    assert checkin(srv, "k-hash", api_key).status_code == 200

    db = Path(srv.db_url.split("///", 1)[1])
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (stored,) = conn.execute("SELECT hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert stored and stored != api_key and stored != secret
    assert secret not in stored and api_key not in stored
    assert key_id in dump and secret not in dump

    # the raw bytes of the database and its WAL: the key id is there, the key is not
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    assert key_id.encode() in raw
    assert secret.encode() not in raw and api_key.encode() not in raw
