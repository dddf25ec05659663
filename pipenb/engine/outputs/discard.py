"""``discard``: counts events and drops them. For benchmarks and pipes run for side effects."""

from __future__ import annotations

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.outputs.common import OutputOptions
from pipenb.lang.registry import registry


class DiscardOptions(OutputOptions):
    """``discard: {}``: no options beyond ``batch``."""


class DiscardOutput(Output):
    count = 0

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        self.count += len(events)
        return []


@registry.register("output", "discard", DiscardOptions)
def discard_output(opts: DiscardOptions, ctx: RunContext) -> DiscardOutput:
    """Count events and drop them."""
    return DiscardOutput(opts, ctx)
