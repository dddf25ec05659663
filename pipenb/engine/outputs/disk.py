"""``buffer: disk`` on an output: a sink that is down holds events on disk, not the input.

``write`` appends the batch to a segment log in the data dir (fsynced, group commit; see
``pipenb.engine.diskbuffer``) and returns, so the engine checkpoints the input and reads on; a
drain task sends what the log holds to the real output, in order, retrying with backoff for as
long as the sink is away, and records how far it got (``drained``) after each delivered batch. A
restart resumes from there, so nothing acknowledged to the input is lost; a crash between a
delivery and its record sends that batch again. When the log holds ``buffer-size`` bytes,
``write`` waits: the input is held back, as without a buffer. At stop, the drain gets a few
seconds to catch up; what it did not send stays on disk for the next start. Events the sink
refuses for good (what would go to ``errors:``) are logged and counted (``refused``), since the
input's checkpoint has already moved past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import Any

import orjson

from pipenb.engine.base import Event, Output
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.diskbuffer import SegmentLog
from pipenb.errors import RetryableOutputError

log = logging.getLogger("pipenb.engine.disk_output")

RETRYABLE = (OSError, RetryableOutputError, ConnectionError, asyncio.TimeoutError)
CLOSE_WAIT = 5.0  # seconds the drain may take to catch up at stop


class DiskBufferedOutput(Output):
    def __init__(self, inner: Output):
        super().__init__(inner.options, inner.ctx)
        self.inner = inner
        self.delivered = 0
        self.refused = 0
        self.log: SegmentLog | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._mark = ""

    def _dir(self) -> str:
        if not self.ctx.data_dir:
            raise ValueError("buffer: disk needs a data dir (run with --data-dir)")
        ident = hashlib.sha1(
            orjson.dumps(self.options.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()[:12]
        return os.path.join(self.ctx.data_dir, "buffers", self.ctx.pipe, f"output-{ident}")

    async def open(self) -> None:
        if self.log is not None:
            return
        where = self._dir()
        self.log = SegmentLog(where, self.options.buffer_size)
        self._mark = os.path.join(where, "drained")
        with contextlib.suppress(OSError, ValueError), open(self._mark) as f:
            self.log.restore(int(f.read().strip() or 0))
        self._drainer = asyncio.create_task(self._drain())

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        data, rejects = ndjson(events)
        await self.write_ndjson(data)
        return rejects

    def lines_refusal(self) -> str:
        return ""  # the log holds NDJSON lines, whatever the output behind it sends

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Append the lines to the log (``write`` encodes its events to them first)."""
        if self.log is None:
            await self.open()
        assert self.log is not None
        while self.log.full():  # the sink is far behind: hold the input back
            self._room.clear()
            await self._room.wait()
        await self.log.append(data)
        return []

    async def _drain(self) -> None:
        assert self.log is not None
        opened = False
        while True:
            data, pos = await self.log.read()
            events, _ = decode_chunk(data, "json")
            delay = 0.05
            while events:
                try:
                    if not opened:
                        await self.inner.open()
                        opened = True
                    rejects = await self.inner.write(events)
                    break
                except RETRYABLE as exc:
                    log.warning("disk buffer: output failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            else:
                rejects = []
            if rejects:
                self.refused += len(rejects)
                log.warning("disk buffer: %d event(s) refused by the output: %s",
                            len(rejects), rejects[0][1])  # fmt: skip
            self.delivered += len(events) - len(rejects)
            self.log.committed(pos)
            self._save(pos)
            self._room.set()

    def _save(self, pos: int) -> None:
        tmp = self._mark + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(pos))
        os.replace(tmp, self._mark)

    def backlog(self) -> int:
        """Bytes in the log the output has not taken yet, those being sent included: a close
        waits for the send in flight (counted from what was read, a close cancelled that send
        and its events waited on disk for the next start, unsaid)."""
        return 0 if self.log is None else self.log.end - self.log.committed_at

    async def close(self) -> None:
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            deadline = asyncio.get_running_loop().time() + CLOSE_WAIT
            while self.backlog() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)  # the drain catching up, for a bounded time
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
            if self.backlog():
                log.warning("disk buffer: %d bytes not yet sent stay on disk for the next start",
                            self.backlog())  # fmt: skip
        if self.log is not None:
            self.log.close()
        await self.inner.close()


def maybe_disk(output: Any) -> Any:
    """``output`` itself, or wrapped in a disk buffer when its options say ``buffer: disk``."""
    if getattr(output.options, "buffer", "memory") == "disk":
        return DiskBufferedOutput(output)
    return output
