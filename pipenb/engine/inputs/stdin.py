"""``stdin``: lines from standard input, for ``pipenb run`` in a shell pipeline."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Literal

from pipenb.engine.base import Batch, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Size


class StdinOptions(Options):
    """Options of ``stdin``: ``format: lines|json``. Finishes at end of input; no checkpoint."""

    format: Literal["lines", "json"] = "lines"
    read_bytes: Size = 1 << 20


class StdinInput(Input):
    finite = True

    async def batches(self) -> AsyncIterator[Batch]:
        # A daemon thread does the blocking reads: a pipe stopped while stdin is an idle
        # terminal must not wait for a line that never comes (an executor thread would).
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        fd = sys.stdin.fileno()
        size = self.options.read_bytes

        def put(chunk: bytes) -> None:
            asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()

        def reader() -> None:
            try:
                while True:
                    chunk = os.read(fd, size)
                    put(chunk)
                    if not chunk:
                        return
            except (OSError, RuntimeError):  # stdin closed, or the loop is gone
                try:
                    put(b"")
                except RuntimeError:
                    pass

        threading.Thread(target=reader, name="pipenb-stdin", daemon=True).start()
        rest = b""
        while True:
            chunk = await chunks.get()
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
