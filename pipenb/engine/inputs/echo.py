"""``echo``: inline events or lines, once or every ``interval``. For samples, tests and demos."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field, model_validator

from pipenb.engine.base import Batch, Input, RunContext
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Duration


class EchoOptions(Options):
    """Options of ``echo``.

    ``events`` (objects) or ``lines`` (strings, each becomes ``{"_raw": line}``); ``interval``
    repeats them (for ever, or ``count`` times); without ``interval`` they are sent ``count``
    times (default once) and the input finishes. No checkpoint: a restart sends them again.
    """

    events: list[dict[str, Any]] | None = None
    lines: list[str] | None = None
    interval: Duration | None = None
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> EchoOptions:
        if (self.events is None) == (self.lines is None):
            raise ValueError("give either events: [...] (objects) or lines: [...] (strings)")
        return self


class EchoInput(Input):
    def __init__(self, options: EchoOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.finite = options.interval is None or options.count is not None

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        n = o.count if o.count is not None else (1 if o.interval is None else None)
        sent = 0
        while n is None or sent < n:
            if o.events is not None:
                events = [dict(e) for e in o.events]
            else:
                events = [{"_raw": s} for s in o.lines or []]
            yield Batch(events)
            sent += 1
            if o.interval is not None and (n is None or sent < n):
                await asyncio.sleep(o.interval)


@registry.register("input", "echo", EchoOptions)
def echo_input(opts: EchoOptions, ctx: RunContext) -> EchoInput:
    """Inline events or lines, once or every interval."""
    return EchoInput(opts, ctx)
