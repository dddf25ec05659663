"""``print``: events to standard output as NDJSON or indented JSON."""

from __future__ import annotations

import sys
from typing import Literal

import orjson

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.outputs.common import OutputOptions
from pipenb.lang.registry import registry


class PrintOptions(OutputOptions):
    """``format: ndjson`` (default, one event a line) or ``pretty`` (indented JSON)."""

    format: Literal["ndjson", "pretty"] = "ndjson"


class PrintOutput(Output):
    def lines_refusal(self) -> str:
        return "" if self.options.format == "ndjson" else f"format: {self.options.format}"

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Lines encoded elsewhere (the engine's fast path): what ``write`` prints."""
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return []

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        if self.options.format == "ndjson":
            data, rejects = ndjson(events)
        else:
            opt = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
            data = b"".join(orjson.dumps(e, option=opt, default=str) for e in events)
            rejects = []
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return rejects


@registry.register("output", "print", PrintOptions)
def print_output(opts: PrintOptions, ctx: RunContext) -> PrintOutput:
    """Events to standard output as NDJSON or pretty JSON."""
    return PrintOutput(opts, ctx)
