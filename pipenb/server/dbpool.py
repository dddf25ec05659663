"""Database work off the event loop: a bounded thread pool, sized to the connection pool.

The services are synchronous SQLAlchemy code. Run on the server's event loop, every statement
held up every other request while it ran, and a locked SQLite file (another process writing)
or a slow PostgreSQL query stalled the whole server for as long as the statement waited. Here
each operation runs on one of a fixed number of worker threads instead, so a slow statement
delays only the request that made it; the event loop goes on answering check-ins, long polls
and ``/health``.

Why a thread pool and not SQLAlchemy's asyncio extension (measured and argued in
``docs/reliability.md``): the services, their one-session-per-operation transactions and the
migrations stay as they are (an async port would rewrite every service and every test that
reads the store), SQLite has no truly asynchronous driver (aiosqlite is itself a thread per
connection), and the pool is bounded: at most as many threads as connections, so a thread never
waits for a connection and a burst of slow requests queues here, not in the database.

The context of the calling request (``roles.current``: who is acting, for the audit trail and
``created_by``) goes with the work into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pipenb.errors import ApiError

T = TypeVar("T")

#: Python's GIL switch interval for a server process. The worker threads run Python too (the ORM,
#: building answers), and the event loop thread waits for the GIL at every hand-over: 5 ms by
#: default, which a check-in answered on the loop pays several times while a worker builds a
#: large answer. At 0.5 ms a 1 ms ticker on the loop was late by p99 6-16 ms instead of
#: 34-42 ms while a worker answered GET /deployments/{id} for 1,000 instances (bench/README.md).
SWITCH_INTERVAL = 0.0005


class DbPool:
    """``await pool.run(fn, *args)``: ``fn`` on a worker thread, with the caller's context."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="pipenb-db")
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:  # a request still arriving while the server stops
            raise ApiError(
                503,
                "unavailable",
                "the server is stopping; try again shortly",
                [{"retry_after": 1}],
            )
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=False)
