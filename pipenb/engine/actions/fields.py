"""Field surgery: ``add``, ``set``, ``remove``, ``keep``, ``rename``.

In the mapping shorthand (``- add: {env: prod}``) the keys ``when`` and ``overwrite`` are options;
to set a field literally called ``when``, use the long form ``- add: {fields: {when: x}}``.
Dotted names (``http.status``) address nested objects, as in expressions.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import field_validator

from pipenb.engine.actions.common import has_code, pop_code, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace, field_paths, parse, to_source
from pipenb.lang.registry import (
    ActionOptions,
    list_shorthand,
    mapping_shorthand,
    registry,
)
from pipenb.lang.templates import field_template_source, has_field_refs
from pipenb.lang.types import Expr, FieldList


class AddOptions(ActionOptions):
    """``- add: {field: value}``; values may use ``${field}``; ``overwrite: false`` keeps."""

    fields: dict[str, Any]
    overwrite: bool = True


def _contains_refs(v: Any) -> bool:
    if isinstance(v, dict):
        return any(_contains_refs(x) for x in v.values())
    if isinstance(v, list):
        return any(_contains_refs(x) for x in v)
    return has_field_refs(v)


@registry.register("action", "add", AddOptions, shorthand=mapping_shorthand({"when", "overwrite"}))
def add_action(opts: AddOptions, ctx: RunContext) -> EventStep:
    """Set fields to constants or ``${field}`` templates."""
    ns = Namespace()
    code: list[str] = []
    simple = {
        k: v
        for k, v in opts.fields.items()
        if "." not in k
        and isinstance(v, (str, int, float, bool, type(None)))
        and not _contains_refs(v)
    }
    if simple and opts.overwrite and len(simple) > 1:
        code.append(f"e.update({ns.const(simple, 'add')})")
    for k, v in opts.fields.items():
        if k in simple and opts.overwrite and len(simple) > 1:
            continue
        stmt = set_code(k, value_source(v, ns), ns)
        if not opts.overwrite:
            stmt = f"if not {has_code(k, ns)}:\n    {stmt}"
        code.append(stmt)
    return step(opts, code, ns)


def value_source(v: Any, ns: Namespace) -> str:
    """Source building ``v`` afresh for each event, ``${field}`` rendered at any depth.

    A literal is cheaper than a deep copy and gives every event its own objects.
    """
    if isinstance(v, str):
        return field_template_source(v, ns) if has_field_refs(v) else ns.const(v, "v")
    if isinstance(v, dict):
        items = ", ".join(f"{k!r}: {value_source(x, ns)}" for k, x in v.items())
        return "{" + items + "}"
    if isinstance(v, list):
        return "[" + ", ".join(value_source(x, ns) for x in v) + "]"
    if v is None or isinstance(v, bool):
        return repr(v)
    return ns.const(v, "v")  # repr() of inf, a date or a 5000-digit number is not source


class SetOptions(ActionOptions):
    """``- set: {field: EXPR}``: fields computed per event, in order."""

    fields: dict[str, Expr]


@registry.register("action", "set", SetOptions, shorthand=mapping_shorthand({"when"}))
def set_action(opts: SetOptions, ctx: RunContext) -> EventStep:
    """Set fields to computed expressions, in order (later ones see earlier ones)."""
    ns = Namespace()
    code = []
    for k, expr in opts.fields.items():
        src = f"({to_source(expr, ns)})"
        if () in field_paths(expr):  # `x: event` stores a copy, not the event inside itself
            ns.values["_deepcopy"] = copy.deepcopy
            src = f"_deepcopy({src})"
        code.append(set_code(k, src, ns))
    return step(opts, code, ns)


class FieldsOptions(ActionOptions):
    """``- remove: [a, b]`` / ``- keep: [a, b]``."""

    fields: FieldList


@registry.register("action", "remove", FieldsOptions, shorthand=list_shorthand())
def remove_action(opts: FieldsOptions, ctx: RunContext) -> EventStep:
    """Delete the listed fields (missing ones are fine)."""
    ns = Namespace()
    return step(opts, [pop_code(f, ns) for f in opts.fields], ns)


@registry.register("action", "keep", FieldsOptions, shorthand=list_shorthand())
def keep_action(opts: FieldsOptions, ctx: RunContext) -> EventStep:
    """Keep only the listed fields (dotted names keep nested ones), in the listed order."""
    ns = Namespace()
    if all("." not in f for f in opts.fields):
        keys = ns.const(tuple(opts.fields), "keep")
        return step(opts, [f"e = {{k: e[k] for k in {keys} if k in e}}"], ns)
    paths = ns.const(tuple(tuple(f.split(".")) for f in opts.fields), "keep")
    ns.values["_keep_paths"] = keep_paths
    return step(opts, [f"e = _keep_paths(e, {paths})"], ns)


def keep_paths(e: dict, paths: tuple[tuple[str, ...], ...]) -> dict:
    out: dict = {}
    for keys in paths:
        src: Any = e
        for k in keys:
            if not isinstance(src, dict) or k not in src:
                break
            src = src[k]
        else:
            dst = out
            for k in keys[:-1]:
                nxt = dst.get(k)
                if not isinstance(nxt, dict):
                    nxt = dst[k] = {}
                dst = nxt
            dst[keys[-1]] = src
    return out


class RenameOptions(ActionOptions):
    """``- rename: {old: new}``."""

    fields: dict[str, str]

    @field_validator("fields")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for new in v.values():
            if not isinstance(new, str) or not new:
                raise ValueError("rename maps each old name to a new, non-empty name")
        return v


@registry.register("action", "rename", RenameOptions, shorthand=mapping_shorthand({"when"}))
def rename_action(opts: RenameOptions, ctx: RunContext) -> EventStep:
    """Rename fields; a missing source field is left alone."""
    ns = Namespace()
    code = []
    for old, new in opts.fields.items():
        if "." not in old and "." not in new:
            code.append(f"if {old!r} in e:\n    e[{new!r}] = e.pop({old!r})")
        else:
            code.append(f"if {has_code(old, ns)}:\n    {set_code(new, pop_code(old, ns), ns)}")
    return step(opts, code, ns)


__all__ = ["parse"]
