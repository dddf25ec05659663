"""The control plane as the edge, security, request-limit and role tests see it.

A control-plane fixture world (a pipe, agents with keys, a deployment placed on one of them),
the API's operations enumerated from the route table, the error body every refusal has, and a
``pipenb server`` subprocess started with ``-vv``.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from pipenb.server.app import ROUTES
from pipenb.server.handlers.base import Operation

from support.processes import clean_env
from support.serverproc import ServerProcess
from support.waiting import wait_until, wait_until_up

# ------------------------------------------------------------------------------ answers


def error_of(resp: requests.Response, status: int | tuple[int, ...], code: str | None = None):
    """The ``{"error": {code, message, details}}`` body of a refused request."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def serves(srv: ServerProcess) -> None:
    """The server still answers a normal request, open and authenticated."""
    r = srv.request("GET", "/health", token=None)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    r = srv.request("GET", "/pipes")
    assert r.status_code == 200 and "pipes" in r.json(), r.text


# ------------------------------------------------------------------------------ the API


def operations() -> Iterator[tuple[str, str, Operation]]:
    """Every mounted operation as ``(METHOD, path template, Operation)``."""
    for path, cls in ROUTES:
        for verb in cls.SUPPORTED_METHODS:
            op = getattr(getattr(cls, verb.lower(), None), "__pipenb_api__", None)
            if op is not None:
                yield verb, path, op


def fill(path: str, ids: dict[str, str]) -> str:
    """A path template with its ``{name}`` segments replaced by real ids."""
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


# ------------------------------------------------------------------------------ a small world

PIPE = """\
name: {name}
input: {{echo: {{events: [{{n: 1}}], interval: 1h}}}}
output: {{discard: {{}}}}
"""


def add_agent(srv: ServerProcess, agent_id: str, labels: list[str] | None = None) -> str:
    """An agent added by hand with one API key; returns the key."""
    r = srv.request("POST", "/agents", json={"id": agent_id, "labels": labels or []})
    assert r.status_code == 201, r.text
    r = srv.request("POST", f"/agents/{agent_id}/keys")
    assert r.status_code == 201, r.text
    return r.json()["api_key"]


def checkin(srv: ServerProcess, key: str | None, agent_id: str, seq: int = 0, **body: Any):
    return srv.request(
        "POST", "/agent/checkin", token=key, json={"agent_id": agent_id, "seq": seq, **body}
    )


@dataclass
class World:
    """Agents ``a`` and ``b`` (keys ``key_a``, ``key_b``) and a deployment ``dep`` of the pipe
    ``pipe`` placed on ``b`` only, which reported it running with a checkpoint, metrics and a
    log line; a capture command ``command`` waits for ``b``."""

    a: str
    b: str
    key_a: str
    key_b: str
    key_id_b: str
    pipe: str
    dep: str
    command: str
    report: dict[str, Any]

    @property
    def ids(self) -> dict[str, str]:
        return {
            "name": self.pipe,
            "agent_id": self.b,
            "key_id": self.key_id_b,
            "dep_id": self.dep,
            "command_id": self.command,
            "token_id": "0123456789ab",
            "preview_id": self.command,
        }


def make_world(srv: ServerProcess, prefix: str) -> World:
    a, b, pipe = f"{prefix}-a", f"{prefix}-b", f"{prefix}-pipe"
    key_a, key_b = add_agent(srv, a), add_agent(srv, b)
    assert srv.request("POST", "/pipes", json={"yaml": PIPE.format(name=pipe)}).status_code == 201
    r = srv.request("POST", "/deployments", json={"pipe": pipe, "agents": [b]})
    assert r.status_code == 201, r.text
    dep = r.json()["id"]
    answer = checkin(srv, key_b, b, seq=0)
    assert answer.status_code == 200, answer.text
    (desired,) = answer.json()["desired"]
    report = {
        "deployment_id": dep,
        "hash": desired["hash"],
        "state": "running",
        "metrics": {"input": {"events": 7}},
        "checkpoint": {"owner": b, "offset": 7},
    }
    log = {"level": "info", "deployment_id": dep, "message": f"{b} says hello"}
    r = checkin(srv, key_b, b, seq=1, pipes=[report], logs=[log], attributes={"host": b})
    assert r.status_code == 200, r.text
    r = srv.request("POST", f"/deployments/{dep}/commands", json={"type": "capture", "limit": 1})
    assert r.status_code == 201, r.text
    (command,) = r.json()["commands"]
    key_id_b = key_b.split("_")[1]
    return World(a, b, key_a, key_b, key_id_b, pipe, dep, command["id"], report)


def agent_view(srv: ServerProcess, w: World) -> dict[str, Any]:
    """Everything the server holds about agent ``b`` and its instance, as a user sees it."""
    agent = srv.request("GET", f"/agents/{w.b}").json()
    dep = srv.request("GET", f"/deployments/{w.dep}").json()
    return {
        "agent": {k: agent[k] for k in ("state", "attributes", "labels", "name", "pipes")},
        "instances": [
            {k: s[k] for k in ("agent_id", "state", "error", "hash", "metrics", "checkpoint")}
            for s in dep["status"]
        ],
        "running": dep["running"],
        "command": srv.request("GET", f"/commands/{w.command}").json(),
        "logs": srv.request("GET", f"/agents/{w.b}/logs").json(),
        "metrics": srv.request("GET", f"/agents/{w.b}/metrics").json(),
        "keys": srv.request("GET", f"/agents/{w.b}/keys").json(),
    }


# ------------------------------------------------------------------------------ processes


class VerboseServer(ServerProcess):
    """``pipenb -vv server``: debug logs on stderr, and all of stdout kept in ``stdout.log``."""

    def start(self, port: int = 0, timeout: float = 20.0) -> VerboseServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.out = self.data_dir / "stdout.log"
        with open(self.out, "ab") as out, open(self.log, "ab") as err:
            self.proc = subprocess.Popen(  # type: ignore[assignment]
                self.args(port, verbosity="-vv"), stdout=out, stderr=err, env=clean_env()
            )
        deadline = time.monotonic() + timeout

        def listening() -> str | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server did not start:\n{self.log.read_text()}")
            m = re.search(r"listening on (http://[\d.]+:\d+)", self.out.read_text())
            return m.group(1) if m else None

        try:
            self.url = wait_until(
                listening, timeout, "the server's banner", self.log.read_text, error=RuntimeError
            )
        except RuntimeError:
            self.stop()
            raise
        left = max(0.0, deadline - time.monotonic())
        wait_until_up(self.proc, self.api + "/health", "the server", self.log.read_text, left)
        return self
