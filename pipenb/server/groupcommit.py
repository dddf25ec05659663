"""Check-in report writes committed in groups: one transaction for many agents' reports.

Each check-in that brings something to store (a full report, pipe states, acks, logs) used to
be its own transaction on a worker thread (dbpool.py). When a fleet starts at once, every agent
sends its first full report within seconds: with 10,000 agents on one process the reports
queued for over two minutes, and on two processes on PostgreSQL a profile showed the database
threads checking out a connection (a ping each), reading and committing per report
(bench/README.md).

Here check-ins put their writes in a per-process queue, and one writer at a time takes what is
waiting (up to ``max_batch``) and writes it in one transaction. Nothing waits for a timer: an
idle server writes a lone report at once, and while a group is being written the next one
gathers, so groups grow with the load (group commit). A check-in is answered only once its
write is committed, so an accepted report is never lost; when the group's transaction fails,
every check-in in it fails with that error (a locked SQLite file answers 503 with Retry-After,
and the agent sends its report again), except that a group failing on one report's data (an
error other than the database's own trouble) is written again one report per transaction, so
one bad report fails only its own check-in.

The same machinery reads in groups, several groups at once (``parallel``): the API keys of
agents met for the first time (``ControlPlane.key_checks``), and the answers (desired sets,
settings) that a change took out of the caches when the agents it woke ask again
(``services/checkin.py``; the answers of agents met for the first time are read in their reports'
own transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.dbpool import DbPool

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("pipenb.server.groupcommit")

#: the most reports written in one transaction: big enough to absorb a fleet starting at once,
#: small enough that one transaction holds SQLite's write lock for a fraction of a second
MAX_BATCH = 200

#: groups of reads in flight at once (answers, keys): a group that waits on the database does
#: not hold up the next, and most of the pool's threads stay free for everything else
READ_GROUPS = 4


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


class GroupCommit(Generic[T, R]):
    """``await writer.write(item)``: ``write_one(session, item)`` for it and for whatever else
    is waiting, in one transaction; returns the item's result once committed.

    ``prepare(session, items)`` runs first in the same transaction (read what the whole group
    needs in a few statements); ``write_one(session, item)`` writes one item. Both run on a
    worker thread of ``db``.
    """

    def __init__(
        self,
        db: DbPool,
        session: SessionScope,
        write_one: Callable[[Session, T], R],
        prepare: Callable[[Session, list[T]], None] | None = None,
        max_batch: int = MAX_BATCH,
        order: Callable[[T], Any] | None = None,
        parallel: int = 1,
    ):
        self.db = db
        self.session = session
        self.write_one = write_one
        self.prepare = prepare
        self.max_batch = max(1, max_batch)
        #: the order items are written in (their results are handed back to each caller): rows
        #: locked in one order by every writer cannot deadlock on PostgreSQL
        self.order = order
        #: groups in flight at once: 1 for writes (one writer, as SQLite has anyway); reads can
        #: run side by side, so that a slow group does not hold up the ones behind it
        self.parallel = max(1, parallel)
        self._queue: list[_Waiting[T, R]] = []
        self._drains: set[asyncio.Task[None]] = set()
        #: groups written and items in them, since the start (for /metrics and the tests)
        self.groups = 0
        self.items = 0

    async def write(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        waiting = _Waiting[T, R](item, loop.create_future())
        self._queue.append(waiting)
        # a drain that found the queue empty is done at once (no await between the two), so
        # one still running will take this item, or there is room for one more
        self._drains = {t for t in self._drains if not t.done()}
        if len(self._drains) < self.parallel:
            self._drains.add(loop.create_task(self._drain()))
        return await waiting.done

    async def _drain(self) -> None:
        """Write what waits, group after group, until nothing does."""
        while self._queue:
            group = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = await self.db.run(self._write_group, [w.item for w in group])
            except DBAPIError as exc:  # the database's trouble (locked, gone): every one fails
                _fail(group, exc)
            except Exception as exc:  # one item's data, maybe: each on its own
                if len(group) == 1:
                    _fail(group, exc)
                    continue
                log.warning(
                    "a group of %d check-in writes failed (%s); one by one", len(group), exc
                )
                await self._one_by_one(group)
            else:
                for w, result in zip(group, results, strict=True):
                    if not w.done.done():  # not when the check-in's caller is gone
                        w.done.set_result(result)

    def _write_group(self, items: list[T]) -> list[R]:
        with self.session() as s:
            if self.prepare is not None:
                self.prepare(s, items)
            idx = list(range(len(items)))
            if self.order is not None:
                order = self.order
                idx.sort(key=lambda i: order(items[i]))
            results = {i: self.write_one(s, items[i]) for i in idx}
            out = [results[i] for i in range(len(items))]
        self.groups += 1
        self.items += len(items)
        return out

    async def _one_by_one(self, group: list[_Waiting[T, R]]) -> None:
        for w in group:
            try:
                result = await self.db.run(self._write_group, [w.item])
            except Exception as exc:
                _fail([w], exc)
            else:
                if not w.done.done():
                    w.done.set_result(result[0])


def _fail(group: list[_Waiting[Any, Any]], exc: BaseException) -> None:
    for w in group:
        if not w.done.done():
            w.done.set_exception(exc)
