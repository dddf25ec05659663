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
from pipenb.lang.expressions import Namespace, parse, to_source
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
        if isinstance(v, str) and has_field_refs(v):
            src = field_template_source(v, ns)
        elif isinstance(v, (dict, list)):
            ns.values.setdefault("_deepcopy", copy.deepcopy)
            src = f"_deepcopy({ns.const(v, 'v')})"
        else:
            src = repr(v) if isinstance(v, (int, float, bool, type(None))) else ns.const(v, "v")
        stmt = set_code(k, src, ns)
        if not opts.overwrite:
            stmt = f"if not {has_code(k, ns)}:\n    {stmt}"
        code.append(stmt)
    return step(opts, code, ns)


class SetOptions(ActionOptions):
    """``- set: {field: EXPR}``: fields computed per event, in order."""

    fields: dict[str, Expr]


@registry.register("action", "set", SetOptions, shorthand=mapping_shorthand({"when"}))
def set_action(opts: SetOptions, ctx: RunContext) -> EventStep:
    """Set fields to computed expressions, in order (later ones see earlier ones)."""
    ns = Namespace()
    code = [set_code(k, f"({to_source(expr, ns)})", ns) for k, expr in opts.fields.items()]
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
    """Keep only the listed top-level fields, in the listed order."""
    ns = Namespace()
    keys = ns.const(tuple(opts.fields), "keep")
    return step(opts, [f"e = {{k: e[k] for k in {keys} if k in e}}"], ns)


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
