"""The bus between server processes (server/bus.py) on a real PostgreSQL: a message is sent from
the bus's own thread, never from the event loop that published it, and a burst of the same
message (10,000 agents meeting a process, each asking for a placement) leaves once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event

from pipenb.server.bus import PgBus, conninfo
from pipenb.server.db import make_engine

from support.waiting import async_wait_until


def _notify_threads(engine: Any) -> list[int]:
    """The thread of every NOTIFY statement sent through ``engine``."""
    threads: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_notify" in statement:
            threads.append(threading.get_ident())

    return threads


@contextlib.asynccontextmanager
async def _pair(pg_url: str) -> AsyncIterator[tuple[PgBus, list[tuple[str, list[str], Any]]]]:
    """A sending bus and a listening one (two processes' worth), connected; the sender and what
    the listener heard. Both are stopped (stopping twice is harmless) and their pools closed."""
    heard: list[tuple[str, list[str], Any]] = []
    sender = PgBus(conninfo(pg_url), make_engine(pg_url))
    listener = PgBus(conninfo(pg_url), make_engine(pg_url))
    try:
        await sender.start(lambda *msg: None, lambda: None)
        await listener.start(lambda k, ids, x: heard.append((k, ids, x)), lambda: None)
        for bus in (sender, listener):
            await asyncio.wait_for(bus.connected.wait(), 10)
        yield sender, heard
    finally:
        for bus in (sender, listener):
            await bus.stop()
            bus.engine.dispose()


def test_a_message_published_on_the_event_loop_is_sent_from_another_thread(pg_url: str) -> None:
    async def main() -> None:
        async with _pair(pg_url) as (sender, heard):
            threads = _notify_threads(sender.engine)
            sender.publish("notify", ["a1", "a2"])
            await async_wait_until(lambda: heard, 10, "the other process heard the message")
            assert heard == [("notify", ["a1", "a2"], None)]
            assert threads and threading.get_ident() not in threads, (
                "the NOTIFY ran on the event loop's thread"
            )

    asyncio.run(main())


def test_a_burst_of_the_same_message_leaves_once_and_in_order(pg_url: str) -> None:
    async def main() -> None:
        async with _pair(pg_url) as (sender, heard):
            # while the sending thread is busy, the burst queues up behind it
            busy = threading.Event()
            assert sender._sender is not None
            sender._sender.submit(busy.wait, 10)
            for _ in range(1000):
                sender.publish("place")
            sender.publish("notify", ["a1"])
            sender.publish("place")
            busy.set()
            await async_wait_until(lambda: len(heard) >= 2, 10, "both messages heard")
            assert heard == [("place", [], None), ("notify", ["a1"], None)]
            assert sender.sent == 2

    asyncio.run(main())


def test_a_message_published_after_stop_is_still_sent(pg_url: str) -> None:
    """A script or a shutting-down process publishes with no sending thread: sent at once."""

    async def main() -> None:
        async with _pair(pg_url) as (sender, heard):
            await sender.stop()
            sender.publish("settings")
            await async_wait_until(lambda: heard, 10, "the message after stop heard")
            assert heard == [("settings", [], None)]

    asyncio.run(main())
