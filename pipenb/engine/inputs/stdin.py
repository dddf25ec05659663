"""``stdin``: lines from standard input, for ``pipenb run`` in a shell pipeline."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import stat
import sys
import threading
from collections.abc import AsyncIterator
from typing import Literal

from pipenb.engine.base import Batch, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Size


class StdinOptions(Options):
    """Options of ``stdin``: ``format: lines|json``. Finishes at end of input; no checkpoint.
    ``read-bytes``: the most taken at once (what is there is taken without waiting for more)."""

    format: Literal["lines", "json"] = "lines"
    read_bytes: Size = 1 << 20


class StdinInput(Input):
    finite = True

    def chunk_refusal(self) -> str:
        return ""

    def chunk_format(self) -> tuple[str, int]:
        return self.options.format, 0  # (stdin cuts no long line)

    async def batches(self) -> AsyncIterator[Batch]:
        # A daemon thread does the blocking reads: a pipe stopped while stdin is an idle
        # terminal must not wait for a line that never comes (an executor thread would).
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        fd = sys.stdin.fileno()
        size = self.options.read_bytes
        widen(fd, size)

        def put(chunk: bytes) -> None:
            asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()

        def reader() -> None:
            try:
                while True:
                    chunk, ended = gather(fd, size)
                    if chunk:
                        put(chunk)
                    if ended:
                        put(b"")
                        return
            except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop is gone
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
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield self._batch(data[: cut + 1] if rest else data)
        if rest:
            yield self._batch(rest)

    def _batch(self, data: bytes) -> Batch:
        """Whole lines: as they are for the engine's fast path, else decoded here."""
        if self.raw_chunks:
            return Batch([], None, len(data), raw=data)
        events, rejects = decode_chunk(data, self.options.format)
        return Batch(events, None, len(data), rejects)


def widen(fd: int, size: int) -> None:
    """Let a pipe on ``fd`` hold ``size`` bytes (at most what the system allows an unprivileged
    process, 1 MiB by default), not its default 64 KiB: a fast sender then fills it while the
    chunk before is worked on, and one read takes a whole chunk (W1 through ``cat``: 64 KiB
    chunks cost ~30% more than 1 MiB ones). Anything else on ``fd`` is left as it is."""
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(size, _pipe_max()))
    except OSError:
        pass  # (a smaller pipe only means smaller chunks)


def _pipe_max() -> int:
    try:
        with open("/proc/sys/fs/pipe-max-size") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1 << 20


def gather(fd: int, size: int) -> tuple[bytes, bool]:
    """Up to ``size`` bytes from ``fd``: one read, waiting for it, then more only while more is
    there at once; and whether the input ended. A pipe gives at most its buffer (64 KiB) a
    read: gathered, a fast sender's lines come in chunks of ``read-bytes`` (fewer, larger
    batches, less work per byte), while a slow sender's lines still pass on as they come."""
    parts: list[bytes] = []
    n = 0
    while n < size:
        if parts and not select.select([fd], [], [], 0)[0]:
            break
        got = os.read(fd, size - n)
        if not got:
            return b"".join(parts), True
        parts.append(got)
        n += len(got)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), False


@registry.register("input", "stdin", StdinOptions)
def stdin_input(opts: StdinOptions, ctx: RunContext) -> StdinInput:
    """Lines from standard input."""
    return StdinInput(opts, ctx)
