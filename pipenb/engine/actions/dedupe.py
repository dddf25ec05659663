"""``dedupe``: drop repeats of the listed fields' values within a time window."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson
from pydantic import Field

from pipenb.engine.base import Event, RunContext
from pipenb.engine.steps import BatchStep
from pipenb.lang.expressions import compile_expression
from pipenb.lang.paths import get_path
from pipenb.lang.registry import ActionOptions, list_shorthand, registry
from pipenb.lang.types import Duration, FieldList


class DedupeOptions(ActionOptions):
    """``- dedupe: [host, message]`` or ``- dedupe: {fields: [...], window: 1m}``.

    An event is dropped when another event with the same values of ``fields`` was kept less than
    ``window`` ago, by arrival time (a monotonic clock, so setting the wall clock changes
    nothing). The window starts at the kept event and repeats do not extend it: a message logged
    every second with ``window: 1m`` comes through once a minute. A missing field counts as
    null. At most ``max-keys`` keys are remembered; beyond that the oldest are forgotten first
    (so their next repeat passes). The keys are kept in memory only: a restart forgets them.
    """

    fields: FieldList = Field(min_length=1)
    window: Duration = 60.0
    max_keys: int = Field(100_000, ge=1)


def _key(values: tuple) -> Any:
    try:
        hash(values)
        return values
    except TypeError:  # an object or array among the values
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS, default=str)


@registry.register("action", "dedupe", DedupeOptions, shorthand=list_shorthand())
def dedupe_action(opts: DedupeOptions, ctx: RunContext) -> BatchStep:
    """Drop events whose listed fields repeat values seen within a time window."""
    paths = [tuple(f.split(".")) for f in opts.fields]
    when = compile_expression(opts.when).fn if opts.when else None
    window, max_keys = opts.window, opts.max_keys
    seen: OrderedDict[Any, float] = OrderedDict()  # key -> when kept, oldest first

    def run(events: list[Event], errors: list) -> list[Event]:
        now = time.monotonic()
        expired = now - window
        while seen:  # forget what is out of the window: the oldest come first
            k, t = next(iter(seen.items()))
            if t > expired:
                break
            del seen[k]
        out: list[Event] = []
        for e in events:
            try:
                if when is not None and not when(e):
                    out.append(e)
                    continue
                key = _key(tuple([get_path(e, p) for p in paths]))
            except Exception as exc:
                errors.append((e, exc))
                continue
            if key in seen:
                continue
            seen[key] = now
            if len(seen) > max_keys:
                seen.popitem(last=False)
            out.append(e)
        return out

    return BatchStep(run)
