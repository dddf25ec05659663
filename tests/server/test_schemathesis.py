"""The HTTP API against its own OpenAPI document, with schemathesis.

A real ``pipenb server`` (``tests/support/serverproc.py``) is started with a user token and an
enrollment key, and seeded: a pipe with two versions, an agent with an API key that has checked
in (so it has metrics and logs), a deployment on it and a capture command. The document the
server serves at ``/pipenb/api/v1/openapi.json`` is loaded with schemathesis, and every
operation is fed generated requests, both schema-valid (positive) and schema-invalid (negative).
Half of the generated requests get the seeded ids in their path and known good values in their
body (the right agent id for a check-in, the enrollment key, an existing pipe), so the success
paths are reached too, not only the 404s.

Assertions, on every response: no 5xx; the status code is one the document lists for the
operation; the content type and the body match the document's schema.

User endpoints get the user token and agent endpoints the seeded agent's key. Hypothesis is
deterministic here (``derandomize=True``) and the example count is small, so the file runs in
well under a minute.
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from pipenb.server.app import ROUTES
from pipenb.server.openapi import openapi_document, operations

from support.serverproc import PREFIX, ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "fuzz-enroll-key"
EXAMPLES = 8  # per operation and generation mode (62 cases, about 500 requests)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PIPE_V1 = """\
name: fuzz-pipe
labels: [fuzz]
params:
  level: {default: error}
input: {echo: {events: [{level: error}]}}
actions:
  - filter: level == "{{level}}"
output: {discard: {}}
"""
PIPE_V2 = PIPE_V1.replace("[fuzz]", "[fuzz, two]")

#: every documented operation, known without a server (the document is built from ROUTES);
#: destructive ones last, so the others see the seeded resources
OPERATIONS = sorted(
    ((m.upper(), PREFIX + path) for path, handler in ROUTES for m in operations(handler)),
    key=lambda op: (op[0] == "DELETE", op[1], op[0]),
)
_DOC = openapi_document(ROUTES, PREFIX)
#: (generation mode, method, path); negative requests only where there is something to break
CASES = [
    (mode, method, path)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE
    or {"parameters", "requestBody", "security"} & set(_DOC["paths"][path][method.lower()])
]


class Seed:
    """Resources the generated requests can hit: ids for paths, values for bodies."""

    def __init__(self, srv: ServerProcess):
        self.srv = srv
        self.ids: dict[str, str] = {}
        self.agent_key = ""
        self.seq = 0

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.srv.request(method, path, **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json() if r.content else {}

    def exists(self, path: str) -> bool:
        return self.srv.request("GET", path).status_code == 200

    def ensure(self) -> dict[str, str]:
        """(Re)create what an earlier operation (a DELETE) removed; returns the ids."""
        ids = self.ids
        if not self.exists("/pipes/fuzz-pipe"):
            self.ok("POST", "/pipes", json={"yaml": PIPE_V1, "message": "one"})
            self.ok("POST", "/pipes", json={"yaml": PIPE_V2, "message": "two"})
        ids["name"] = "fuzz-pipe"
        if not self.exists("/agents/fuzz-agent"):
            self.ok("POST", "/agents", json={"id": "fuzz-agent", "labels": ["fuzz"]})
            self.agent_key = ""
        ids["agent_id"] = "fuzz-agent"
        keys = self.ok("GET", "/agents/fuzz-agent/keys")["keys"]
        live = {k["key_id"] for k in keys if k["revoked_at"] is None}
        if not self.agent_key or ids.get("key_id") not in live:
            made = self.ok("POST", "/agents/fuzz-agent/keys")
            self.agent_key, ids["key_id"] = made["api_key"], made["key_id"]
        if not ids.get("dep_id") or not self.exists(f"/deployments/{ids['dep_id']}"):
            self.checkin(None)  # online first: deployments are placed on online agents
            dep = self.ok(
                "POST",
                "/deployments",
                json={"pipe": "fuzz-pipe", "agents": ["fuzz-agent"], "labels": []},
            )
            ids["dep_id"] = dep["id"]

            def capture() -> Any:
                self.checkin(ids["dep_id"])
                r = self.srv.request(
                    "POST",
                    f"/deployments/{ids['dep_id']}/commands",
                    json={"type": "capture", "stage": "output", "limit": 2},
                )
                return r.status_code == 201 and r.json()["commands"][0]["id"]

            ids["command_id"] = wait_until(capture, what="the deployment to be placed")
        return ids

    def checkin(self, dep_id: str | None) -> None:
        """A check-in with a report, metrics and a log line: telemetry to read back."""
        self.seq += 1
        report = {
            "deployment_id": dep_id,
            "state": "running",
            "metrics": {"input": {"events": 1}},
            "checkpoint": {"offset": 1},
        }
        self.ok(
            "POST",
            "/agent/checkin",
            token=self.agent_key,
            json={
                "agent_id": "fuzz-agent",
                "seq": self.seq,
                "attributes": {"host": "fuzz", "python": "3"},
                "pipes": [report] if dep_id else [],
                "logs": [{"level": "info", "deployment_id": dep_id, "message": "hello"}],
            },
        )


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(
        tmp_path_factory.mktemp("schemathesis"),
        enroll_key=ENROLL_KEY,
        poll_interval=1.0,
        long_poll=0.2,  # a held check-in answers within 0.2 s
    ) as s:
        yield s


@pytest.fixture(scope="module")
def seed(srv) -> Seed:
    return Seed(srv)


@pytest.fixture(scope="module")
def api_schema(srv):
    return schemathesis.openapi.from_url(srv.api + "/openapi.json", timeout=10)


def known_values(case: Any, ids: dict[str, str]) -> None:
    """Put seeded ids and good values where the generator put random ones."""
    for name in list(case.path_parameters or {}):
        if name in ids:
            case.path_parameters[name] = ids[name]
    path = case.operation.path
    if path.endswith("/diff"):
        case.query = {"from": "1", "to": "2"}
    body = case.body
    if not isinstance(body, dict):
        return
    body = case.body = copy.deepcopy(body)
    if path.endswith("/agent/checkin"):
        body["agent_id"] = "fuzz-agent"
        for report in body.get("pipes") or []:
            if isinstance(report, dict):
                report["deployment_id"] = ids["dep_id"]
    elif path.endswith("/agent/enroll"):
        body["enroll_key"] = ENROLL_KEY
    elif path.endswith(PREFIX + "/deployments"):
        body.update(pipe="fuzz-pipe", agents=["fuzz-agent"], params={"level": "warn"})
    elif path.endswith("/upgrade"):
        body.update(version=2, params={"level": "warn"})
    elif path.endswith("/commands"):
        body["agent"] = "fuzz-agent"
    elif path.endswith(PREFIX + "/pipes"):
        body["yaml"] = PIPE_V1.replace("fuzz-pipe", "fuzz-pushed")


@pytest.mark.parametrize(
    ("mode", "method", "path"), CASES, ids=[f"{m.value} {o} {p}" for m, o, p in CASES]
)
def test_the_api_answers_as_its_document_says(api_schema, seed, srv, mode, method, path):
    operation = api_schema[path][method]
    ids = seed.ensure()
    agent = path.startswith(PREFIX + "/agent/")
    headers = {"Authorization": f"Bearer {seed.agent_key if agent else srv.token}"}
    statuses: collections.Counter[int] = collections.Counter()
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
    def run(case, known):
        if known:
            known_values(case, ids)
        response = case.call_and_validate(
            headers=headers, session=session, checks=CHECKS, timeout=10
        )
        statuses[response.status_code] += 1

    try:
        run()
    finally:
        session.close()
    assert sum(statuses.values()) > 0
    assert not [s for s in statuses if s >= 500], statuses


def test_the_served_document_is_the_one_the_operations_come_from(api_schema):
    """Every operation this file parametrizes over is in the served document, and back."""
    paths = api_schema.raw_schema["paths"]
    served = {(m.upper(), path) for path, item in paths.items() for m in item}
    assert served == set(OPERATIONS)
