"""``sample``: keep 1 in ``rate`` events, by a counter or deterministically by a key.

Sampling only ever drops events, so it compiles to per-event code and fuses with its neighbours
like a filter; its only state is a counter.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import orjson
from pydantic import Field

from pipenb.engine.actions.common import get_src, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand


class SampleOptions(ActionOptions):
    """``- sample: 10`` or ``- sample: {rate: 10, key: user}``.

    Without ``key``, the first event of every ``rate`` is kept (the 1st, the 11th, the 21st...;
    the counter starts again when the pipe restarts). With ``key``, an event is kept when the
    CRC-32 of its key value modulo ``rate`` is 0: all events of one user are kept or dropped
    together, the same way on every run and every agent. Strings hash by their UTF-8 bytes and
    other values by their JSON (``5`` and ``"5"`` are the same key); a missing key counts as
    ``null``, so events without it are all kept or all dropped.
    """

    rate: int = Field(ge=1)
    key: str | None = None


def key_hash(value: Any) -> int:
    """A hash of a key value that is the same in every process (unlike ``hash()``)."""
    if type(value) is str:
        return zlib.crc32(value.encode("utf-8", "surrogatepass"))
    return zlib.crc32(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str))


@registry.register("action", "sample", SampleOptions, shorthand=scalar_shorthand("rate"))
def sample_action(opts: SampleOptions, ctx: RunContext) -> EventStep:
    """Keep 1 in N events: every Nth, or deterministically by the hash of a key field."""
    ns = Namespace()
    if opts.rate == 1:
        return step(opts, [], ns)
    if opts.key is None:
        tick = ns.const(itertools.count().__next__, "tick")
        counted = step(opts, [f"if {tick}() % {opts.rate}:\n    DROP"], ns)
        counted.stateful = "sample without key counts events in order (sample by key does not)"
        return counted
    ns.values["_key_hash"] = key_hash
    return step(opts, [f"if _key_hash({get_src(opts.key)}) % {opts.rate}:\n    DROP"], ns)
