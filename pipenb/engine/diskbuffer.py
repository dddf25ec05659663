"""A segment log on disk between a receiver and the engine: acknowledged means durable.

With ``buffer: disk`` an input appends each request's events (NDJSON lines) to this log and
answers only after they are fsynced. Appends that arrive while one fsync runs wait for the next
one together (group commit), so the cost is one ``write`` + ``fsync`` per group, not per
request. The engine reads from the log and checkpoints on its logical offset (bytes since the
log began, across segments); ``committed`` (called once the output wrote a batch and the
checkpoint was saved) deletes segments wholly before it. A crash therefore replays, from disk,
everything acknowledged but not yet written by the output: no loss, possibly duplicates.

Segments are files named by the logical offset they start at (``000000000000000000.seg``), rolled
at ``segment_bytes``. The log is bounded: ``full()`` is true when what is not yet committed
reaches ``max_bytes``, and the input then refuses (503) instead of growing without end. A torn
last line (a crash in the middle of a write that was never acknowledged) is cut off at start.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path

log = logging.getLogger("pipenb.engine.diskbuffer")

SEGMENT_BYTES = 16 << 20
READ_BYTES = 1 << 20  # at most this much is read for one batch


class DiskBufferFull(Exception):
    """The log holds ``max_bytes`` not yet written by the output."""


class SegmentLog:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int,
                 segment_bytes: int = SEGMENT_BYTES):  # fmt: skip
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.commits = 0  # fsyncs done (each covers a group of appends)
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._pending_bytes = 0
        self._committer: asyncio.Task[None] | None = None
        self._more = asyncio.Event()  # readers wait on it for new durable data
        self.committed_at = 0  # the checkpointed offset (set by restore/committed)
        self.read_at = 0  # where the reader is
        self._recover()

    # ---------------------------------------------------------------- files
    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _path(self, start: int) -> Path:
        return self.dir / f"{start:018d}.seg"

    def _recover(self) -> None:
        segs = self._segments()
        if not segs:
            self._start = 0
            self.end = 0
        else:
            last = self._path(segs[-1])
            data = last.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):
                log.warning("disk buffer %s: cut a torn last write of %d bytes (never "
                            "acknowledged)", self.dir, len(data) - cut)  # fmt: skip
                with open(last, "r+b") as f:
                    f.truncate(cut)
            self._start = segs[-1]
            self.end = segs[-1] + cut
        self.read_at = self.committed_at = segs[0] if segs else 0
        self._file = open(self._path(self._start), "ab", buffering=0)  # noqa: SIM115

    def restore(self, position: int) -> None:
        """Start reading at a checkpointed offset (and drop the segments before it)."""
        segs = self._segments()
        position = max(segs[0] if segs else 0, min(int(position), self.end))
        self.read_at = position
        self.committed(position)

    def committed(self, position: int) -> None:
        """The output wrote everything before ``position``: its whole segments can go."""
        self.committed_at = max(self.committed_at, position)
        segs = self._segments()
        for start, nxt in itertools.pairwise(segs):
            if nxt <= self.committed_at:
                self._path(start).unlink(missing_ok=True)

    # ---------------------------------------------------------------- writing
    def backlog(self) -> int:
        """Bytes acknowledged (or being acknowledged) but not yet written by the output."""
        return self.end + self._pending_bytes - self.committed_at

    def full(self) -> bool:
        return self.backlog() >= self.max_bytes

    async def append(self, data: bytes) -> int:
        """Durably append whole NDJSON lines; returns once they are fsynced (the log's end)."""
        if not data:
            return self.end
        if self.full():
            raise DiskBufferFull(f"the disk buffer holds {self.backlog()} bytes (max-size)")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((data, fut))
        self._pending_bytes += len(data)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit())
        return await fut

    async def _commit(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            blob = b"".join(d for d, _ in group)
            try:
                await asyncio.to_thread(self._write, blob)
            except OSError as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                self._pending_bytes -= len(blob)
                continue
            self._pending_bytes -= len(blob)
            self.end += len(blob)
            self.commits += 1
            for _, fut in group:
                if not fut.done():
                    fut.set_result(self.end)
            self._more.set()

    def _write(self, blob: bytes) -> None:
        f = self._file
        f.write(blob)
        os.fsync(f.fileno())
        if self.end + len(blob) - self._start >= self.segment_bytes:  # roll
            f.close()
            self._start = self.end + len(blob)
            self._file = open(self._path(self._start), "ab", buffering=0)  # noqa: SIM115
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the new segment's name is durable too
            finally:
                os.close(dfd)

    # ---------------------------------------------------------------- reading
    async def read(self) -> tuple[bytes, int]:
        """The next whole lines after ``read_at`` (waiting for some), and the offset after them."""
        while self.read_at >= self.end:
            self._more.clear()
            await self._more.wait()
        start = max(s for s in self._segments() if s <= self.read_at)
        segs = self._segments()
        nxt = next((s for s in segs if s > start), self.end)
        limit = min(nxt, self.end) - self.read_at
        with open(self._path(start), "rb") as f:
            f.seek(self.read_at - start)
            data = f.read(min(limit, READ_BYTES))
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one line longer than READ_BYTES
            with open(self._path(start), "rb") as f:
                f.seek(self.read_at - start)
                data = f.read(limit)
            cut = data.rfind(b"\n") + 1
        self.read_at += cut
        return data[:cut], self.read_at

    def close(self) -> None:
        self._file.close()
