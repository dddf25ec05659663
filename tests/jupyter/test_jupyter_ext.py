"""The pipenb API inside a real Jupyter server (SPEC §5): mounted under the base URL, user
endpoints behind Jupyter's own auth, agent endpoints behind agent and enrollment keys only."""

from __future__ import annotations

import json
import os

import pytest

from pipenb.jupyter_ext.app import jupyter_handler
from pipenb.server.app import ROUTES, handlers

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# With ``allow_unauthenticated_access`` off, jupyter-server warns about extension handler methods
# that are neither authenticated nor explicitly open: here that warning is an error, so the
# extension would fail to load and every API request below would get 404.
pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

ENROLL_KEY = "ek"
PIPE = """\
name: jp-pipe
input: {echo: {events: [{n: 1}]}}
actions:
  - filter: n > 0
output: {discard: {}}
"""
NO_AUTH = {"Authorization": ""}


WHEEL = b"PK not really a wheel, served as it is"


@pytest.fixture
def jp_server_config(tmp_path):
    wheel = tmp_path / "pipenb_fleet-0.1.0-py3-none-any.whl"
    wheel.write_bytes(WHEEL)
    return {
        "ServerApp": {
            "jpserver_extensions": {"pipenb.jupyter_ext": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "PipenbExtension": {
            "db_url": f"sqlite:///{tmp_path}/x.db",
            "enroll_key": ENROLL_KEY,
            "wheel": str(wheel),
        },
    }


def api(*parts: str) -> tuple[str, ...]:
    return ("pipenb", "api", "v1", *parts)


async def call(jp_fetch, method: str, *parts: str, body=None, headers=None):
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = {}
    return await jp_fetch(
        *api(*parts),
        method=method,
        body=None if body is None else json.dumps(body),
        headers=headers,
        raise_error=False,
    )


def error_of(response, statuses: tuple[int, ...]) -> dict:
    assert response.code in statuses, (response.code, response.body)
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)["error"]


async def test_health_and_env(jp_fetch, jp_serverapp):
    r = await call(jp_fetch, "GET", "health", headers=NO_AUTH)
    assert r.code == 200, r.body
    assert os.environ["PIPENB_URL"].startswith("http")
    assert os.environ["PIPENB_URL"].endswith(jp_serverapp.base_url.rstrip("/"))
    # kernels get a token of their own, not Jupyter's
    assert os.environ["PIPENB_TOKEN"] not in ("", jp_serverapp.identity_provider.token)
    # the control plane's background task runs on the server's loop
    assert jp_serverapp.web_app.settings["pipenb"]._task is not None


async def test_the_kernel_token_reaches_pipenb_and_nothing_else_of_jupyter(jp_fetch):
    kernel = {"Authorization": f"token {os.environ['PIPENB_TOKEN']}"}
    r = await call(jp_fetch, "GET", "pipes", headers=kernel)
    assert r.code == 200, r.body
    # a header token needs no XSRF cookie
    r = await call(jp_fetch, "POST", "pipes", body={"yaml": PIPE}, headers=kernel)
    assert r.code == 201, r.body
    # Jupyter's own API does not know it
    r = await jp_fetch("api", "contents", headers=kernel, raise_error=False)
    assert r.code == 403, r.code
    r = await jp_fetch("api", "kernels", headers=kernel, raise_error=False)
    assert r.code == 403, r.code
    # a wrong token is refused, and the pipenb API says so
    wrong = {"Authorization": "token " + os.environ["PIPENB_TOKEN"][:-1] + "x"}
    r = await call(jp_fetch, "GET", "pipes", headers=wrong)
    assert error_of(r, (401, 403))["code"] in ("unauthorized", "forbidden")


async def test_authenticated_list_and_push(jp_fetch):
    r = await call(jp_fetch, "GET", "pipes")
    assert r.code == 200, r.body
    assert json.loads(r.body)["pipes"] == []
    r = await call(jp_fetch, "POST", "pipes", body={"yaml": PIPE, "message": "first"})
    assert r.code == 201, r.body
    assert json.loads(r.body)["version"] == 1
    r = await call(jp_fetch, "GET", "pipes")
    assert [p["name"] for p in json.loads(r.body)["pipes"]] == ["jp-pipe"]


async def test_every_user_endpoint_refuses_anonymous_requests(jp_fetch):
    checked = 0
    for path, cls in ROUTES:
        for verb in cls.SUPPORTED_METHODS:
            op = getattr(getattr(cls, verb.lower(), None), "__pipenb_api__", None)
            if op is None or op.auth != "user":
                continue
            parts = path.strip("/").replace("{", "").replace("}", "").split("/")
            r = await call(jp_fetch, verb, *parts, headers=NO_AUTH)
            err = error_of(r, (401, 403))
            assert err["code"] in ("unauthorized", "forbidden"), (verb, path, err)
            checked += 1
    assert checked > 20


async def test_extension_handlers_pass_jupyters_auth_check(jp_serverapp):
    web_app = jp_serverapp.web_app
    assert web_app.settings["allow_unauthenticated_access"] is False
    for pattern, cls in handlers("/"):
        assert web_app._check_handler_auth(pattern, jupyter_handler(cls)) == []
    # the check is meaningful: the bare pipenb handlers (auth in prepare) would not pass it
    assert web_app._check_handler_auth("/pipes", dict(ROUTES)["/pipes"]) != []


async def test_enroll_checkin_and_agent_key_refused_on_user_endpoints(jp_fetch):
    r = await call(
        jp_fetch, "POST", "agent", "enroll", body={"enroll_key": "nope"}, headers=NO_AUTH
    )
    error_of(r, (401,))
    r = await call(
        jp_fetch,
        "POST",
        "agent",
        "enroll",
        body={"enroll_key": ENROLL_KEY, "name": "jp one"},
        headers=NO_AUTH,
    )
    assert r.code == 201, r.body
    key, agent_id = json.loads(r.body)["api_key"], json.loads(r.body)["agent_id"]
    assert key.startswith("pnb_")
    agent_auth = {"Authorization": f"Bearer {key}"}
    r = await call(
        jp_fetch,
        "POST",
        "agent",
        "checkin",
        body={"agent_id": agent_id, "seq": 0},
        headers=agent_auth,
    )
    assert r.code == 200, r.body
    # the agent key is for agent endpoints only
    assert error_of(await call(jp_fetch, "GET", "agents", headers=agent_auth), (403,))
    # and Jupyter's token is no agent key
    r = await call(jp_fetch, "POST", "agent", "checkin", body={"agent_id": agent_id, "seq": 1})
    error_of(r, (401, 403))
    r = await call(jp_fetch, "GET", "agents", agent_id)
    assert json.loads(r.body)["state"] == "online"


async def test_the_agent_wheel_and_script_are_open_and_the_install_info_is_not(jp_fetch):
    """A worker host has no Jupyter credentials: it fetches the script and the wheel without
    them; what the install line pins (the wheel's SHA-256) needs Jupyter's auth."""
    import hashlib

    r = await call(jp_fetch, "GET", "agent", "wheel", headers=NO_AUTH)
    assert r.code == 200 and r.body == WHEEL
    r = await call(jp_fetch, "GET", "agent", "install.sh", headers=NO_AUTH)
    assert r.code == 200 and r.body.startswith(b"#!/bin/sh")
    assert b"pipenb_fleet-0.1.0-py3-none-any.whl" in r.body
    r = await call(jp_fetch, "GET", "agent", "install", headers=NO_AUTH)
    assert r.code in (401, 403), r.body
    r = await call(jp_fetch, "GET", "agent", "install")
    assert r.code == 200, r.body
    assert json.loads(r.body)["wheel"]["sha256"] == hashlib.sha256(WHEEL).hexdigest()


async def test_body_limits_apply_inside_jupyter_too(jp_fetch):
    """The pipenb handlers stream their bodies inside Jupyter as well: an anonymous check-in is
    refused on its headers, and a check-in over ``max_checkin_body`` is a JSON 413."""
    r = await call(
        jp_fetch, "POST", "agent", "enroll", body={"enroll_key": ENROLL_KEY}, headers=NO_AUTH,
    )  # fmt: skip
    assert r.code == 201, r.body
    enrolled = json.loads(r.body)
    agent_auth = {"Authorization": f"Bearer {enrolled['api_key']}"}
    huge = {"agent_id": enrolled["agent_id"], "seq": 0, "logs": [{"message": "x" * 5000}] * 300}
    r = await call(jp_fetch, "POST", "agent", "checkin", body=huge, headers=agent_auth)
    err = error_of(r, (413,))
    assert err["code"] == "too_large" and "1048576" in err["message"]
    r = await call(jp_fetch, "POST", "agent", "checkin", body=huge, headers=NO_AUTH)
    error_of(r, (401, 413))
    r = await jp_fetch(
        *api("pipes", "p"), method="GET", params={"version": str(2**63)}, raise_error=False
    )
    assert error_of(r, (400,))["code"] == "bad_request"
