"""``unnest``: one event per element of an array field."""

from __future__ import annotations

import copy
from collections.abc import Callable

import orjson

from pipenb.engine.actions.common import pop_path, set_path
from pipenb.engine.base import Event, RunContext
from pipenb.engine.steps import BatchStep
from pipenb.lang.expressions import compile_expression
from pipenb.lang.paths import get_path
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand
from pipenb.lang.types import FieldName


class UnnestOptions(ActionOptions):
    """``- unnest: items`` or ``- unnest: {field: items, to: item}``.

    An event whose ``field`` holds an array becomes one event per element, in order: each a copy
    of the event with the element in place of the array, or, with ``to``, the element in ``to``
    and ``field`` removed. An event whose ``field`` is an empty array is dropped (it has no
    element to emit; counted as dropped). An event whose ``field`` is missing or not an array
    (an object, a string, null) passes unchanged. Dotted names address nested fields.
    """

    field: FieldName
    to: FieldName | None = None


def _copier(base: Event) -> Callable[[], Event]:
    """Independent deep copies of ``base``: serialised once, parsed once per copy."""
    try:
        data = orjson.dumps(base)
    except TypeError:
        return lambda: copy.deepcopy(base)
    return lambda: orjson.loads(data)


@registry.register("action", "unnest", UnnestOptions, shorthand=scalar_shorthand("field"))
def unnest_action(opts: UnnestOptions, ctx: RunContext) -> BatchStep:
    """One event per element of an array field (an empty array drops the event)."""
    src = tuple(opts.field.split("."))
    dst = tuple((opts.to or opts.field).split("."))
    when = compile_expression(opts.when).fn if opts.when else None

    def run(events: list[Event], errors: list) -> list[Event]:
        out: list[Event] = []
        for e in events:
            try:
                if when is not None and not when(e):
                    out.append(e)
                    continue
                items = get_path(e, src)
                if type(items) is not list:
                    out.append(e)
                    continue
                if not items:
                    continue
                # the copies must not carry the whole array each: take it out first (keeping
                # the field's place among the keys when the element goes back there)
                if opts.to is None:
                    set_path(e, src, None)
                else:
                    pop_path(e, src)
                make = _copier(e) if len(items) > 1 else None
                copies = [make() for _ in items[1:]] if make is not None else []
                for ev, item in zip([e, *copies], items):
                    set_path(ev, dst, item)
                out.extend([e, *copies])
            except Exception as exc:
                errors.append((e, exc))
        return out

    return BatchStep(run)
