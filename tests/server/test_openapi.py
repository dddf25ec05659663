"""The OpenAPI document describes exactly the mounted API (SPEC §3).

The route table (``pipenb.server.app.ROUTES``) and the HTTP methods its handler classes define
are compared with the document a running ``pipenb server`` serves, both ways; every operation
has a summary and every ``$ref`` resolves.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import tornado.web

from pipenb.server.app import ROUTES

from support.serverproc import PREFIX, ServerProcess

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def defined_methods(handler: type) -> set[str]:
    """The HTTP methods a handler class implements (not the RequestHandler defaults)."""
    return {
        m
        for m in HTTP_METHODS
        if getattr(handler, m, None) is not getattr(tornado.web.RequestHandler, m, None)
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("openapi")) as s:
        yield s


@pytest.fixture(scope="module")
def doc(srv) -> dict[str, Any]:
    r = srv.request("GET", "/openapi.json", token=None)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_document_header(doc):
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["schemas"]
    assert set(doc["components"]["securitySchemes"]) >= {"userToken", "agentKey"}


def test_every_route_is_documented_with_exactly_its_methods(doc):
    mounted = {PREFIX + path: defined_methods(handler) for path, handler in ROUTES}
    documented = {path: set(item) for path, item in doc["paths"].items()}
    assert set(documented) == set(mounted)
    for path, methods in mounted.items():
        assert methods, f"{path} has no methods"
        assert documented[path] == methods, path


def test_the_document_lists_the_spec_endpoints(doc):
    paths = doc["paths"]
    assert "post" in paths[PREFIX + "/agent/checkin"]
    assert "get" in paths[PREFIX + "/openapi.json"]
    assert {"get", "post"} <= set(paths[PREFIX + "/pipes"])
    assert {"get", "post"} <= set(paths[PREFIX + "/deployments"])


def test_every_operation_has_a_summary_and_a_success_response(doc):
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert isinstance(op.get("summary"), str) and op["summary"].strip(), (path, method)
            ok = [code for code in op["responses"] if code.startswith("2")]
            assert ok, (path, method)
            ids.append(op["operationId"])
            names = set(re.findall(r"\{(\w+)\}", path))
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == names, (path, method)
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_every_ref_resolves(doc):
    schemas = doc["components"]["schemas"]
    found = refs(doc)
    assert found, "the document uses no $ref at all"
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_auth_is_declared_where_it_is_enforced(doc):
    paths = doc["paths"]
    assert paths[PREFIX + "/agent/checkin"]["post"]["security"] == [{"agentKey": []}]
    assert paths[PREFIX + "/pipes"]["get"]["security"] == [{"userToken": []}]
    for path in ("/health", "/openapi.json", "/agent/enroll"):
        for op in paths[PREFIX + path].values():
            assert "security" not in op, path


def test_every_documented_operation_is_served(srv, doc):
    """Each documented method reaches its handler (no 404/405); undocumented ones are 405."""
    for path, item in doc["paths"].items():
        concrete = re.sub(r"\{\w+\}", "x", path).removeprefix(PREFIX)
        for method in HTTP_METHODS[:5]:
            r = srv.request(method.upper(), concrete, token=None)
            if method in item:
                if item[method].get("security"):
                    assert r.status_code == 401, (method, path, r.status_code)
                elif r.status_code == 404:  # the agent wheel and script, when none is served
                    assert r.json()["error"]["code"] == "no_wheel", (method, path)
                else:  # health, openapi.json: 200; enroll without a body: 400
                    assert r.status_code in (200, 400), (method, path, r.status_code)
            else:
                assert r.status_code == 405, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "method_not_allowed"


def test_documented_schemas_match_what_the_server_returns(srv, doc):
    """Spot check: a health answer has exactly the fields of its schema."""
    op = doc["paths"][PREFIX + "/health"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    body = srv.request("GET", "/health", token=None).json()
    assert set(body) == set(schema["properties"])
    assert set(schema.get("required", [])) <= set(body)
