"""Shared pieces of action compilers: ``when:`` guards and field paths as generated code."""

from __future__ import annotations

from typing import Any

from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace, to_source


def step(opts: Any, code: list[str], ns: Namespace) -> EventStep:
    """An EventStep whose code runs only where the action's ``when:`` holds."""
    when = getattr(opts, "when", None)
    ns.values.setdefault("_EventError", EventError)
    return EventStep(code=code, ns=ns, when=to_source(when, ns) if when else None)


def get_src(field: str) -> str:
    """Source reading ``field`` (dotted means nested) from ``e``; null when missing."""
    keys = tuple(field.split("."))
    if len(keys) == 1:
        return f"e.get({field!r})"
    return f"_path(e, {keys!r})"


def set_code(field: str, value_src: str, ns: Namespace) -> str:
    """Statement setting ``field`` (dotted creates nested objects) to ``value_src``."""
    if "." not in field:
        return f"e[{field!r}] = {value_src}"
    ns.values.setdefault("_set_path", set_path)
    return f"_set_path(e, {tuple(field.split('.'))!r}, {value_src})"


def set_path(e: dict, keys: tuple, value: Any) -> None:
    for k in keys[:-1]:
        nxt = e.get(k)
        if not isinstance(nxt, dict):
            nxt = e[k] = {}
        e = nxt
    e[keys[-1]] = value


def pop_path(e: dict, keys: tuple) -> Any:
    for k in keys[:-1]:
        nxt = e.get(k)
        if not isinstance(nxt, dict):
            return None
        e = nxt
    return e.pop(keys[-1], None)


def has_path(e: dict, keys: tuple) -> bool:
    for k in keys[:-1]:
        nxt = e.get(k)
        if not isinstance(nxt, dict):
            return False
        e = nxt
    return keys[-1] in e


def pop_code(field: str, ns: Namespace) -> str:
    if "." not in field:
        return f"e.pop({field!r}, None)"
    ns.values.setdefault("_pop_path", pop_path)
    return f"_pop_path(e, {tuple(field.split('.'))!r})"


def has_code(field: str, ns: Namespace) -> str:
    if "." not in field:
        return f"({field!r} in e)"
    ns.values.setdefault("_has_path", has_path)
    return f"_has_path(e, {tuple(field.split('.'))!r})"


__all__ = ["RunContext", "get_src", "has_code", "pop_code", "set_code", "set_path", "step"]
