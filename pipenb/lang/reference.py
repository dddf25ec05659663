"""The component reference (docs/reference.md), rendered from the registry itself.

Because docs come from the same option models that validate pipes, they cannot drift: a test
compares the committed file with what this module renders.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic_core import PydanticUndefined

from pipenb.lang import types as T
from pipenb.lang.registry import Component, registry

_NAMED = {
    id(T.Duration): "duration",
    id(T.Size): "size",
    id(T.Regex): "regex",
    id(T.Expr): "expression",
    id(T.FieldList): "list of fields",
}
_VALIDATOR_NAMES = {
    "parse_duration": "duration",
    "parse_size": "size",
    "_check_regex": "regex",
    "_check_expr": "expression",
    "_str_list": "list of fields",
}


def type_name(tp: Any, metadata: list[Any] | None = None) -> str:
    for m in metadata or []:
        fn = getattr(m, "func", None)
        if fn is not None and fn.__name__ in _VALIDATOR_NAMES:
            return _VALIDATOR_NAMES[fn.__name__]
    if id(tp) in _NAMED:
        return _NAMED[id(tp)]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0], list(args[1:]))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[1])}" if len(args) == 2 else "mapping"
    if isinstance(tp, type):
        if hasattr(tp, "model_fields"):
            return "mapping (see below)"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            tp.__name__, tp.__name__
        )
    if tp is Any:
        return "any"
    return str(tp)


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    d = field.default
    if d is PydanticUndefined or d is None:
        return ""
    if hasattr(d, "model_dump"):
        return ", ".join(f"{k}: {v}" for k, v in d.model_dump(by_alias=True).items())
    if isinstance(d, bool):
        return "true" if d else "false"
    return f"`{d}`"


def render_component(c: Component) -> str:
    lines = [f"### `{c.name}`", "", c.summary, ""]
    doc = inspect.cleandoc(c.options.__doc__ or "")
    if doc and not doc.startswith("Options of"):
        lines += [doc, ""]
    elif doc:
        lines += [doc.split("\n", 1)[1].strip() if "\n" in doc else "", ""]
    if c.capability:
        lines += [f"Capability `{c.capability}`: an agent may refuse it.", ""]
    rows = []
    for name, f in c.options.model_fields.items():
        if name == "when":
            continue
        rows.append(
            f"| `{f.alias or name}` | {type_name(f.annotation, list(f.metadata))} | {_default(f)} |"
        )
    if rows:
        lines += ["| option | type | default |", "|---|---|---|", *rows, ""]
    for name, f in c.options.model_fields.items():
        nested = _nested(f.annotation)
        if nested is not None:
            lines += _nested_table(f"{c.name}.{f.alias or name}", nested)
    return "\n".join(lines)


def _nested(tp: Any) -> Any:
    """The options model of a mapping option (``rotate``, ``batch``), if it is one."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if hasattr(a, "model_fields")), None)
    return tp if isinstance(tp, type) and hasattr(tp, "model_fields") else None


def _nested_table(title: str, model: Any) -> list[str]:
    """What "mapping (see below)" refers to: the mapping's own options."""
    lines = [f"`{title}` options:", ""]
    doc = inspect.cleandoc(model.__doc__ or "")
    if doc:
        lines += [doc, ""]
    rows = [
        f"| `{f.alias or n}` | {type_name(f.annotation, list(f.metadata))} | {_default(f)} |"
        for n, f in model.model_fields.items()
    ]
    return [*lines, "| option | type | default |", "|---|---|---|", *rows, ""]


def render_reference() -> str:
    out = [
        "# Pipe language reference",
        "",
        "Generated from the component registry by `pipenb reference`; do not edit by hand.",
        "Every action also takes `when: EXPRESSION`. Durations are written `250ms`, `5s`, `1m`;",
        "sizes `512`, `10KB`, `1MiB`. See the [language guide](pipe-language.md) for the rest.",
        "",
    ]
    out += [
        "## Pipe settings",
        "",
        "| key | values | default |",
        "|---|---|---|",
        "| `workers` | `auto` (one process per core) or 1-256: processes running the actions of a "
        "`files` -> `file` pipe of per-event actions, output in input order (see the "
        "[language guide](pipe-language.md#workers-all-cores)) | `1` |",
        "",
    ]
    for kind, title in (("input", "Inputs"), ("action", "Actions"), ("output", "Outputs")):
        out += [f"## {title}", ""]
        out += [render_component(c) for c in registry.all() if c.kind == kind]
    out += _grok_patterns()
    return "\n".join(out).rstrip() + "\n"


def _grok_patterns() -> list[str]:
    """The grok library's pattern names and what they refer to (``grok``, ``parse: grok``)."""
    from pipenb.lang.grok import library

    out = [
        "## Grok patterns",
        "",
        "The names `%{NAME}` may use in `grok` and `parse: {format: grok}`, written for pipenb "
        "from the definitions Logstash documents (Apache-2.0; see `pipenb/lang/grok_patterns.txt`"
        "). The fields a pattern keeps by itself are listed; others keep nothing unless named.",
        "",
        "| pattern | keeps |",
        "|---|---|",
    ]
    import re

    for name, regex in sorted(library().items()):
        kept = sorted(set(re.findall(r"%\{\w+:(\w+)(?::\w+)?\}", regex)))
        out.append(f"| `{name}` | {', '.join(f'`{k}`' for k in kept) or '-'} |")
    return [*out, ""]
