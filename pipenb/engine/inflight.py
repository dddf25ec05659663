"""Writes in flight: up to N batches being written at once, committed in input order.

One write at a time caps a pipe at ``batch.size / latency`` events a second (with 100 ms per
request and 1,000 events a batch, 10,000/s whatever the receiver could take). With N in flight
the engine starts the next batch's write while earlier ones wait for their answers. A batch is
*committed* (the dead letters so far written, then the input's position saved) only once it and
every batch before it were written: answers may come back in any order, but the checkpoint never
moves past a batch that was not acknowledged, so a crash replays from the oldest batch still in
flight (at-least-once, as with one write at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Commit = Callable[[Any, bool], Awaitable[None]]


class InFlight:
    """The batches being written, oldest first, each with the input position after it."""

    def __init__(self, limit: int, commit: Commit):
        self.limit = max(1, limit)
        self._commit = commit
        self._queue: deque[tuple[asyncio.Task[None] | None, Any, bool]] = deque()
        self.most = 0  # the most writes seen running at once (reported, and asserted in tests)

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def running(self) -> int:
        return sum(1 for t, _, _ in self._queue if t is not None and not t.done())

    async def add(
        self, write: Coroutine[Any, Any, None] | None, position: Any, have_pos: bool
    ) -> None:
        """Start ``write`` (None: a batch with a position but no events) and commit what can be;
        returns once fewer than ``limit`` writes are running."""
        task = asyncio.create_task(write) if write is not None else None
        self._queue.append((task, position, have_pos))
        self.most = max(self.most, self.running())
        await self.settle()

    async def settle(self, everything: bool = False) -> None:
        """Commit finished batches from the oldest on; wait for the oldest while ``limit`` writes
        run (or, with ``everything``, until none is left)."""
        q = self._queue
        while q:
            task, position, have_pos = q[0]
            if task is not None and not task.done():
                if not everything and self.running() < self.limit:
                    return
                await asyncio.wait([task])
            if task is not None:
                task.result()  # a write that failed for good fails the pipe, as without N
            q.popleft()
            await self._commit(position, have_pos)

    def cancel(self) -> None:
        """The pipe stops on a failure: what is still in flight is replayed by the next run."""
        for task, _, _ in self._queue:
            if task is None:
                continue
            if task.done():
                with contextlib.suppress(BaseException):
                    task.result()  # retrieved, so asyncio does not log it again
            else:
                task.cancel()
        self._queue.clear()
