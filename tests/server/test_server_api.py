"""The HTTP API of a real ``pipenb server``: pipes and their versions, agents, errors, bad input.

SPEC §3: pipes have immutable numbered versions; identical content makes no new version;
versions can be listed and diffed; every error is ``{"error": {code, message, details}}`` with
the right status, never a 500 or an HTML page.
"""

from __future__ import annotations

import socket

import pytest
import requests

from support.serverproc import ServerProcess

PIPE_V1 = """\
name: api-pipe
description: first cut
labels: [web]
input: {echo: {events: [{n: 1}]}}
actions:
  - filter: n > 0
output: {discard: {}}
"""
PIPE_V2 = PIPE_V1.replace("n > 0", "n > 1")
PIPE_V3 = PIPE_V2.replace("first cut", "third cut")

# three problems, each on its own line: an unknown input (line 2), an unknown action (line 5)
# and a broken expression (line 6)
INVALID = """\
name: broken
input: {echx: {events: []}}
output: {discard: {}}
actions:
  - filtr: n > 1
  - filter: 'n =='
"""


def error_of(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"code", "message", "details"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("api")) as s:
        yield s


def alive(srv: ServerProcess) -> None:
    r = srv.request("GET", "/health", token=None)
    assert r.status_code == 200 and r.json()["status"] == "ok"


# ------------------------------------------------------------------------------ pipes


def test_push_numbers_versions_and_skips_identical_content(srv):
    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V1, "message": "first"})
    assert r.status_code == 201, r.text
    assert r.json() == {"pipe": "api-pipe", "version": 1, "created": True}

    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V1, "message": "again"})
    assert r.status_code == 200, r.text
    assert r.json() == {"pipe": "api-pipe", "version": 1, "created": False}

    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V2, "message": "stricter"})
    assert r.status_code == 201
    assert r.json() == {"pipe": "api-pipe", "version": 2, "created": True}
    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V3})
    assert r.json()["version"] == 3

    versions = srv.request("GET", "/pipes/api-pipe/versions")
    assert versions.status_code == 200
    vs = versions.json()["versions"]
    assert [v["version"] for v in vs] == [1, 2, 3]
    assert [v["message"] for v in vs] == ["first", "stricter", ""]
    assert len({v["hash"] for v in vs}) == 3
    assert all(v["created_at"].endswith("Z") for v in vs)

    listed = {p["name"]: p for p in srv.request("GET", "/pipes").json()["pipes"]}
    assert listed["api-pipe"]["latest_version"] == 3
    assert listed["api-pipe"]["versions"] == 3
    assert listed["api-pipe"]["description"] == "third cut"
    assert listed["api-pipe"]["labels"] == ["web"]


def test_pushing_an_old_content_again_makes_a_new_version(srv):
    """Identical to the newest makes no version; identical to an older one is a change back."""
    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V1.replace("api-pipe", "api-back")})
    assert r.json()["version"] == 1
    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V2.replace("api-pipe", "api-back")})
    assert r.json()["version"] == 2
    r = srv.request("POST", "/pipes", json={"yaml": PIPE_V1.replace("api-pipe", "api-back")})
    assert r.status_code == 201 and r.json()["version"] == 3


def test_show_returns_the_newest_or_the_asked_version(srv):
    r = srv.request("GET", "/pipes/api-pipe")
    assert r.status_code == 200
    assert r.json()["version"] == 3 and r.json()["yaml"] == PIPE_V3
    r = srv.request("GET", "/pipes/api-pipe", params={"version": 1})
    assert r.status_code == 200
    assert r.json()["version"] == 1 and r.json()["yaml"] == PIPE_V1
    assert r.json()["message"] == "first"
    error_of(srv.request("GET", "/pipes/api-pipe", params={"version": 9}), 404, "not_found")
    error_of(srv.request("GET", "/pipes/api-pipe", params={"version": "one"}), 400)


def test_diff_between_versions_is_a_unified_diff(srv):
    r = srv.request("GET", "/pipes/api-pipe/diff", params={"from": 1, "to": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from_version"], body["to_version"]) == (1, 2)
    lines = body["diff"].splitlines()
    assert lines[0].startswith("---") and "v1" in lines[0]
    assert lines[1].startswith("+++") and "v2" in lines[1]
    assert any(line.startswith("@@") for line in lines)
    assert "-  - filter: n > 0" in lines
    assert "+  - filter: n > 1" in lines
    assert not any(line.startswith(("-", "+")) and "first cut" in line for line in lines[2:])

    same = srv.request("GET", "/pipes/api-pipe/diff", params={"from": 2, "to": 2})
    assert same.status_code == 200 and same.json()["diff"] == ""
    error_of(srv.request("GET", "/pipes/api-pipe/diff", params={"from": 1}), 400)
    error_of(srv.request("GET", "/pipes/api-pipe/diff", params={"from": 1, "to": 7}), 404)
    error_of(srv.request("GET", "/pipes/nope/diff", params={"from": 1, "to": 2}), 404)


def test_invalid_pipe_is_refused_with_every_located_problem(srv):
    r = srv.request("POST", "/pipes", json={"yaml": INVALID})
    err = error_of(r, 400)
    details = err["details"]
    assert len(details) == 3, details
    for d in details:
        assert isinstance(d["line"], int) and d["line"] >= 1
        assert isinstance(d["column"], int) and d["column"] >= 1
        assert d["message"]
    by_line = {d["line"]: d for d in details}
    assert sorted(by_line) == [2, 5, 6]
    assert "echx" in by_line[2]["message"]
    assert "filtr" in by_line[5]["message"]
    assert by_line[2]["column"] == INVALID.splitlines()[1].index("echx") + 1
    assert by_line[5]["column"] == INVALID.splitlines()[4].index("filtr") + 1
    error_of(srv.request("GET", "/pipes/broken"), 404)  # nothing stored


@pytest.mark.parametrize(
    "text",
    ["", "just a string", "- a list\n", "name: x\n", "name: [unclosed\n"],
    ids=["empty", "scalar", "list", "no-input", "bad-yaml"],
)
def test_unusable_documents_are_400_with_details(srv, text):
    err = error_of(srv.request("POST", "/pipes", json={"yaml": text}), 400)
    assert err["details"], err
    alive(srv)


def test_delete_is_refused_while_deployed(srv):
    y = PIPE_V1.replace("api-pipe", "api-del")
    assert srv.request("POST", "/pipes", json={"yaml": y}).status_code == 201
    dep = srv.request("POST", "/deployments", json={"pipe": "api-del", "labels": []})
    assert dep.status_code == 201, dep.text
    dep_id = dep.json()["id"]

    err = error_of(srv.request("DELETE", "/pipes/api-del"), 409)
    assert dep_id in err["message"] or dep_id in err["details"]
    assert srv.request("GET", "/pipes/api-del").status_code == 200

    assert srv.request("DELETE", f"/deployments/{dep_id}").status_code == 204
    assert srv.request("DELETE", "/pipes/api-del").status_code == 204
    error_of(srv.request("GET", "/pipes/api-del"), 404)
    error_of(srv.request("GET", "/pipes/api-del/versions"), 404)
    error_of(srv.request("DELETE", "/pipes/api-del"), 404)
    assert "api-del" not in {p["name"] for p in srv.request("GET", "/pipes").json()["pipes"]}
    # the name is free again, and starts over at version 1
    r = srv.request("POST", "/pipes", json={"yaml": y})
    assert r.status_code == 201 and r.json()["version"] == 1


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/pipes/nope"),
        ("GET", "/pipes/nope/versions"),
        ("DELETE", "/pipes/nope"),
        ("GET", "/agents/nope"),
        ("DELETE", "/agents/nope"),
        ("GET", "/agents/nope/metrics"),
        ("GET", "/agents/nope/logs"),
        ("GET", "/deployments/nope"),
        ("DELETE", "/deployments/nope"),
        ("POST", "/deployments/nope/start"),
        ("POST", "/deployments/nope/stop"),
        ("GET", "/deployments/nope/metrics"),
        ("GET", "/deployments/nope/logs"),
        ("GET", "/deployments/nope/commands"),
        ("GET", "/commands/nope"),
    ],
)
def test_missing_resources_are_json_404(srv, method, path):
    error_of(srv.request(method, path), 404, "not_found")


def test_unknown_routes_are_json_404(srv):
    for path in ("/nope", "/pipes/a/b/c/d", "/agent/nope"):
        error_of(srv.request("GET", path), 404, "not_found")
    r = srv.request("GET", "/", token=None)
    error_of(r, 404)
    # outside the API prefix too
    r = requests.get(srv.url + "/elsewhere", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405(srv):
    err = error_of(srv.request("PUT", "/pipes", json={}), 405)
    assert err["code"]
    error_of(srv.request("DELETE", "/health", token=None), 405)
    alive(srv)


# ------------------------------------------------------------------------------ agents


def test_add_agent_by_hand_and_edit_its_labels(srv):
    r = srv.request(
        "POST", "/agents", json={"id": "api-a1", "name": "first", "labels": ["web", " eu ", "web"]}
    )
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["id"] == "api-a1" and a["name"] == "first"
    assert a["labels"] == ["web", "eu"]
    assert a["enrolled"] is False and a["state"] == "offline" and a["last_seen"] is None

    error_of(srv.request("POST", "/agents", json={"id": "api-a1"}), 409)

    r = srv.request("PATCH", "/agents/api-a1", json={"labels": ["db"]})
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == ["db"] and r.json()["name"] == "first"
    r = srv.request("PATCH", "/agents/api-a1", json={"name": "renamed"})
    assert r.json()["labels"] == ["db"] and r.json()["name"] == "renamed"
    got = srv.request("GET", "/agents/api-a1").json()
    assert got["labels"] == ["db"] and got["name"] == "renamed"
    ids = [a["id"] for a in srv.request("GET", "/agents").json()["agents"]]
    assert "api-a1" in ids

    assert srv.request("DELETE", "/agents/api-a1").status_code == 204
    error_of(srv.request("GET", "/agents/api-a1"), 404)


def test_agent_without_name_is_named_after_its_id(srv):
    r = srv.request("POST", "/agents", json={"id": "api-a2"})
    assert r.status_code == 201 and r.json()["name"] == "api-a2" and r.json()["labels"] == []


@pytest.mark.parametrize("agent_id", ["", "has space", "-dash", "x" * 201, "a/b"])
def test_bad_agent_ids_are_400(srv, agent_id):
    err = error_of(srv.request("POST", "/agents", json={"id": agent_id}), 400)
    assert err["details"] and err["details"][0]["field"] == "id"


# ------------------------------------------------------------------------------ bad input


def test_invalid_json_is_400(srv):
    r = srv.request(
        "POST", "/pipes", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    error_of(r, 400, "invalid_json")
    alive(srv)


@pytest.mark.parametrize(
    "path,body,fields",
    [
        ("/pipes", {"yaml": 42}, {"yaml"}),
        ("/pipes", {"message": "no yaml"}, {"yaml"}),
        ("/pipes", {"yaml": "x", "extra": 1}, {"extra"}),
        ("/agents", {"id": "ok", "labels": "web"}, {"labels"}),
        ("/agents", {"id": 7, "labels": [1, 2]}, {"id", "labels.0", "labels.1"}),
        ("/deployments", {"pipe": "api-pipe", "instances": "three"}, {"instances"}),
        ("/deployments", {"pipe": "api-pipe", "failover": "maybe"}, {"failover"}),
        ("/deployments", {"pipe": "api-pipe", "params": []}, {"params"}),
    ],
)
def test_wrong_types_are_400_with_details(srv, path, body, fields):
    err = error_of(srv.request("POST", path, json=body), 400, "invalid_body")
    got = {d["field"] for d in err["details"]}
    assert all(any(g == f or g.startswith(f + ".") for g in got) for f in fields), got
    assert all(d["message"] for d in err["details"])


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"text"'])
def test_json_that_is_not_an_object_is_400(srv, raw):
    r = srv.request("POST", "/agents", data=raw, headers={"Content-Type": "application/json"})
    error_of(r, 400)


def test_empty_body_where_one_is_needed_is_400(srv):
    error_of(srv.request("POST", "/pipes"), 400, "invalid_body")


def test_body_over_the_limit_is_413_and_the_server_goes_on(srv):
    big = b'{"yaml": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    r = srv.request("POST", "/pipes", data=big, headers={"Content-Type": "application/json"})
    error_of(r, 413)
    alive(srv)
    assert srv.request("GET", "/pipes").status_code == 200


def test_a_client_that_hangs_up_does_not_hurt_the_server(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /pipenb/api/v1/pipes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        s.recv(1024)
    alive(srv)


def test_bad_query_parameters_are_400(srv):
    error_of(srv.request("GET", "/agents/api-a2/logs", params={"limit": "many"}), 400)
    error_of(srv.request("GET", "/agents/api-a2/metrics", params={"since": "yesterday"}), 400)
    r = srv.request("GET", "/agents/api-a2/logs", params={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json() == {"logs": []}


@pytest.mark.parametrize("limit", ["-1", "99999999999999999999"])
def test_out_of_range_limits_are_400(srv, limit):
    r = srv.request("POST", "/agents", json={"id": f"api-limit{limit[:2]}"})
    assert r.status_code == 201
    agent = r.json()["id"]
    for what in ("logs", "metrics"):
        r = srv.request("GET", f"/agents/{agent}/{what}", params={"limit": limit})
        assert r.status_code < 500, (what, r.status_code, r.text)
        error_of(r, 400)
    alive(srv)
