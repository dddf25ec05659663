"""``stdin``: lines from standard input, for ``pipenb run`` in a shell pipeline."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Literal

from pipenb.engine.base import Batch, Input, RunContext
from pipenb.engine.inputs.decode import decode_chunk
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Size


class StdinOptions(Options):
    """Options of ``stdin``: ``format: lines|json``. Finishes at end of input; no checkpoint."""

    format: Literal["lines", "json"] = "lines"
    read_bytes: Size = 1 << 20


class StdinInput(Input):
    finite = True

    async def batches(self) -> AsyncIterator[Batch]:
        fd = sys.stdin.fileno()
        loop = asyncio.get_running_loop()
        rest = b""
        size = self.options.read_bytes
        while True:
            chunk = await loop.run_in_executor(None, os.read, fd, size)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            events, rejects = decode_chunk(data[: cut + 1], self.options.format)
            yield Batch(events, None, cut + 1, rejects)
        if rest:
            events, rejects = decode_chunk(rest, self.options.format)
            yield Batch(events, None, len(rest), rejects)


@registry.register("input", "stdin", StdinOptions)
def stdin_input(opts: StdinOptions, ctx: RunContext) -> StdinInput:
    """Lines from standard input."""
    return StdinInput(opts, ctx)
