"""The JSON Schema of a pipe document, generated from the component registry.

Editors (the JupyterLab Pipe Editor's completion, any YAML language server) read it; it is built
from the same option models that validate pipes, so a new component or option appears here with
no second list to keep. Each component also carries ``x-pipenb-kind``, its one-line summary and
its capability, for completion menus.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipenb.lang.registry import Component, Kind, registry
from pipenb.lang.validate import PARAM_KEYS, PARAM_TYPES, TEST_KEYS, TOP_KEYS

SCHEMA_ID = "https://pipenb.dev/schema/pipe.json"


def component_schema(c: Component) -> dict[str, Any]:
    """``{name: options}`` for one component: its options' schema, keys spelled as in YAML."""
    options = c.options.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    options.pop("title", None)
    value: dict[str, Any] = options
    if c.shorthand is not None or not options.get("required"):
        # ``- filter: EXPR``, ``- remove: [a, b]``, ``- print:``: short forms the registry expands
        defs = options.pop("$defs", None)
        value = {"anyOf": [options, {"type": ["string", "array", "boolean", "number", "null"]}]}
        if defs:
            value["$defs"] = defs
    return {
        "type": "object",
        "title": c.name,
        "description": c.summary,
        "x-pipenb-kind": c.kind,
        "x-pipenb-capability": c.capability,
        "x-pipenb-shorthand": c.shorthand is not None,
        "properties": {c.name: value},
        "required": [c.name],
        "additionalProperties": False,
    }


def _one_of(kind: Kind) -> dict[str, Any]:
    return {"oneOf": [{"$ref": f"#/$defs/{kind}.{c.name}"} for c in _components(kind)]}


def _components(kind: Kind) -> list[Component]:
    return [c for c in registry.all() if c.kind == kind]


@lru_cache(maxsize=1)
def pipe_schema() -> dict[str, Any]:
    """The whole document's schema (cached: the registry does not change while running)."""
    defs: dict[str, Any] = {}
    for c in registry.all():
        schema = component_schema(c)
        inner = schema["properties"][c.name]
        defs.update(inner.pop("$defs", {}))
        defs[f"{c.kind}.{c.name}"] = schema
    param: dict[str, Any] = {
        "type": "object",
        "properties": {
            "default": {},
            "enum": {"type": "array"},
            "type": {"enum": sorted(PARAM_TYPES)},
            "description": {"type": "string"},
            "secret": {
                "type": "boolean",
                "description": "encrypted on the server, never shown; no default in the text",
            },
        },
        "additionalProperties": False,
    }
    assert set(param["properties"]) == set(PARAM_KEYS)
    test: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "input": {"type": "array"},
            "expect": {"type": "array", "items": {"type": "object"}},
            "expect-count": {"type": "integer", "minimum": 0},
            "expect-errors": {"type": "integer", "minimum": 0},
            "params": {"type": "object"},
        },
        "required": ["name", "input"],
        "additionalProperties": False,
    }
    assert set(test["properties"]) == set(TEST_KEYS)
    properties: dict[str, Any] = {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "maxLength": 200},
        "description": {"type": "string"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "params": {"type": "object", "additionalProperties": param},
        "input": _one_of("input"),
        "actions": {"type": "array", "items": _one_of("action")},
        "output": _one_of("output"),
        "outputs": {
            "type": "object",
            "description": "several outputs by name; each: when: EXPR, actions: [...], one output",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "when": {"type": "string"},
                    "actions": {"type": "array", "items": _one_of("action")},
                },
                "minProperties": 1,
            },
        },
        "route": {"enum": ["all", "first"]},
        "errors": _one_of("output"),
        "tests": {"type": "array", "items": test},
    }
    assert set(properties) == set(TOP_KEYS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "pipenb pipe",
        "type": "object",
        "properties": properties,
        "required": ["name", "input"],
        "oneOf": [{"required": ["output"]}, {"required": ["outputs"]}],
        "additionalProperties": False,
        "$defs": defs,
    }
