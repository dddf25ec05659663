"""The OpenAPI 3.1 document, built from the mounted routes and their ``@api`` records."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pipenb import __version__
from pipenb.server.handlers.base import Operation
from pipenb.server.handlers.params import QUERY_PARAMS
from pipenb.server.models import ErrorBody

METHODS = ("get", "post", "put", "patch", "delete")


def operations(handler: type) -> dict[str, Operation]:
    out = {}
    for m in METHODS:
        fn = handler.__dict__.get(m)
        op = getattr(fn, "__pipenb_api__", None)
        if op is not None:
            out[m] = op
    return out


def openapi_document(routes: list[tuple[str, type]], prefix: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for _, handler in routes:
        for op in operations(handler).values():
            models.update(m for m in (op.body, op.response) if m is not None)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = defs.get("$defs", {})

    def ref(m: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{m.__name__}"}

    error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorBody)}}}
    paths: dict[str, Any] = {}
    for path, handler in routes:
        item: dict[str, Any] = {}
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"\{(\w+)\}", path)
        ]
        for method, op in operations(handler).items():
            entry: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{method}_{handler.__name__.removesuffix('Handler')}",
                "responses": {},
            }
            qs = [
                {
                    "name": q,
                    "in": "query",
                    "required": False,
                    "description": QUERY_PARAMS[q].description,
                    "schema": QUERY_PARAMS[q].schema(),
                }
                for q in op.query
            ]
            if params or qs:
                entry["parameters"] = params + qs
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.body)}},
                }
            ok: dict[str, Any] = {"description": "success"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": ref(op.response)}}
            if op.status == 201 and op.response is not None:
                entry["responses"]["200"] = ok  # e.g. a push of identical content
            entry["responses"][str(op.status)] = ok
            for code in ("400", "404", "409", "413", "503"):
                entry["responses"][code] = error
            if op.auth != "none":
                entry["security"] = (
                    [{"agentKey": []}] if op.auth == "agent" else [{"userToken": []}]
                )
                entry["responses"]["401"] = error
                entry["responses"]["403"] = error
            if handler.__name__ == "EnrollHandler":
                entry["responses"]["401"] = error
                entry["responses"]["403"] = error
                entry["responses"]["429"] = error
            item[method] = entry
        paths[prefix + path] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "pipenb API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer"},
                "agentKey": {"type": "http", "scheme": "bearer"},
            },
        },
    }
