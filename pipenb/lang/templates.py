"""Two kinds of templates: ``{{param}}`` rendered once per deployment, ``${field}`` per event.

``{{...}}`` is text substitution over the whole document before validation, so a parameter can be
used anywhere (a path, a regex, an expression). When a value is exactly one ``{{name}}`` it takes the
parameter's own type, so ``interval: "{{every}}"`` can be a number.

``${field}`` is compiled to Python source the engine inlines into its batch loop.
"""

from __future__ import annotations

import re
from typing import Any

from pipenb.lang.expressions import Namespace
from pipenb.lang.source import Path
from pipenb.lang.suggest import did_you_mean

TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
FIELD_REF = re.compile(r"\$\{\s*([^}]+?)\s*\}")
#: The names every pipe may use in ``{{...}}`` without declaring them.
BUILTINS = ("agent.id", "agent.name", "pipe.name", "deployment.id")


def builtin_values(agent_id: str, agent_name: str, pipe: str, deployment: str) -> dict[str, str]:
    """The built-ins' values, by name: on an agent, in a local run, or placeholders where the
    server validates a pipe before any agent runs it. The one place that spells the names, so a
    new built-in is added here and in ``BUILTINS`` only."""
    return dict(zip(BUILTINS, (agent_id, agent_name, pipe, deployment)))


class TemplateError(ValueError):
    def __init__(self, path: Path, message: str):
        self.path = path
        super().__init__(message)


def render(value: Any, values: dict[str, Any], path: Path = ()) -> tuple[Any, list[TemplateError]]:
    """Replace ``{{name}}`` throughout ``value``; return the new value and every unknown name."""
    errors: list[TemplateError] = []

    def walk(v: Any, p: Path) -> Any:
        if isinstance(v, str):
            if "{{" not in v:
                return v
            whole = TEMPLATE.fullmatch(v.strip())
            if whole:
                name = whole.group(1)
                if name in values:
                    return values[name]
                errors.append(_unknown(p, name, values))
                return v

            def sub(m: re.Match) -> str:
                name = m.group(1)
                if name not in values:
                    errors.append(_unknown(p, name, values))
                    return m.group(0)
                val = values[name]
                if isinstance(val, bool):
                    return "true" if val else "false"
                return "" if val is None else str(val)

            return TEMPLATE.sub(sub, v)
        if isinstance(v, dict):
            return {k: walk(x, (*p, k)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, (*p, i)) for i, x in enumerate(v)]
        return v

    return walk(value, path), errors


def _unknown(path: Path, name: str, values: dict[str, Any]) -> TemplateError:
    known = sorted(values)
    hint = did_you_mean(name, known, show=lambda close: f"{{{{{close}}}}}")
    declared = [k for k in known if k not in BUILTINS]
    return TemplateError(
        path,
        f"unknown parameter {{{{{name}}}}}{hint}; declare it under params: "
        f"(declared: {', '.join(declared) or 'none'}; built-ins: {', '.join(BUILTINS)})",
    )


def has_field_refs(text: Any) -> bool:
    return isinstance(text, str) and "${" in text


def field_template_source(text: str, ns: Namespace, var: str = "e") -> str:
    """Python source for a string with ``${field}`` references, evaluated per event.

    A string that is exactly one ``${field}`` yields the field's value with its own type.
    """
    whole = FIELD_REF.fullmatch(text)
    if whole:
        return _ref(whole.group(1), var)
    parts: list[str] = []
    pos = 0
    for m in FIELD_REF.finditer(text):
        if m.start() > pos:
            parts.append(repr(text[pos : m.start()]))
        parts.append(f"_tstr({_ref(m.group(1), var)})")
        pos = m.end()
    if pos < len(text):
        parts.append(repr(text[pos:]))
    ns.values.setdefault("_tstr", _tstr)
    return "''.join((" + ", ".join(parts) + ",))"


def _ref(name: str, var: str) -> str:
    keys = tuple(name.split("."))
    if len(keys) == 1:
        return f"{var}.get({keys[0]!r})"
    return f"_path({var}, {keys!r})"


def _tstr(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        import orjson

        try:
            return orjson.dumps(v, default=str).decode()
        except TypeError:  # an integer past 64 bits, nesting past 255 levels
            import json

            return json.dumps(v, default=str, ensure_ascii=False)
    return str(v)
