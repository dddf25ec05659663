"""Wake-ups between server processes: what one process changed that another must act on now.

Every process keeps a little state in memory for speed (cached desired sets and API keys, the
agents it holds in a long poll, which agents have commands waiting). When a change is made
through one process, every other process must drop what it cached and answer the check-ins it
holds: that is what a message on the bus says. The database stays the truth; a message only
tells a process to look again.

- ``LocalBus``: one process (SQLite). The process applies its own changes directly, so there is
  nobody to tell and publishing does nothing.
- ``PgBus``: PostgreSQL ``LISTEN/NOTIFY`` on one channel. Messages are sent after the change is
  committed, so a receiver that reads the database then sees it; each names the process that
  sent it, which ignores its own. A lost listening connection is made again, and the process
  then forgets everything it cached (``on_resync``): messages sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

log = logging.getLogger("pipenb.server.bus")

#: the PostgreSQL channel every process of a fleet listens on
CHANNEL = "pipenb_fleet"
#: NOTIFY payloads must stay under 8000 bytes: ids are sent in chunks of this many bytes at most
CHUNK = 7000

#: handler(kind, ids, extra): called on the event loop for each message from another process
Handler = Callable[[str, list[str], Any], None]


class LocalBus:
    """One process: nothing to tell anyone."""

    shared = False

    def __init__(self) -> None:
        self.origin = f"{os.getpid()}-{secrets.token_hex(4)}"

    def publish(self, kind: str, ids: Iterable[str] = (), extra: Any = None) -> None:
        return None

    async def start(self, handler: Handler, on_resync: Callable[[], None]) -> None:
        return None

    async def stop(self) -> None:
        return None


class PgBus(LocalBus):
    """``LISTEN/NOTIFY`` on PostgreSQL: one listening connection per process on its event loop,
    and sends batched per loop iteration on the server's own connection pool."""

    shared = True

    def __init__(self, conninfo: str, engine: Any):
        super().__init__()
        self.conninfo = conninfo
        self.engine = engine  # sends go through the SQLAlchemy pool
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        #: sends while serving (one thread, so messages leave in the order they were queued)
        self._sender: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.received = 0  # messages from other processes (for tests and metrics)
        self.sent = 0  # messages sent to them, after dropping repeats (ditto)

    # ------------------------------------------------------------------ sending
    def publish(self, kind: str, ids: Iterable[str] = (), extra: Any = None) -> None:
        """Queue a message; it leaves from the bus's own sending thread in one statement with
        whatever else is queued by then (a deploy to 1,000 agents is a few NOTIFYs, not 1,000;
        10,000 agents meeting a process, each asking for a placement, are a few). Sending never
        runs on the event loop: it is a database round trip, and a slow or locked database
        would stall every check-in behind it. Safe to call from any thread."""
        payloads = list(_encode(self.origin, kind, list(ids), extra))
        with self._lock:
            first = not self._pending
            self._pending.extend(payloads)
            sender = self._sender
        if not first:
            return  # a send is already due and will take this one too
        if sender is None:
            self.flush()  # not serving (a script, a test): send now
        else:
            sender.submit(self.flush)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        from sqlalchemy import text

        # the same message twice in one batch says nothing more (PostgreSQL would deliver one
        # of them anyway); the order of the others is kept
        unique = [p.decode() for p in dict.fromkeys(batch)]
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) p"),
                    {"channel": CHANNEL, "payloads": unique},
                )
            self.sent += len(unique)
        except Exception:  # the database is away: the receivers resync when they reconnect
            log.exception("could not send %d message(s) to the other server processes", len(batch))

    # ------------------------------------------------------------------ receiving
    async def start(self, handler: Handler, on_resync: Callable[[], None]) -> None:
        with self._lock:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="pipenb-bus-send")
        self._task = asyncio.get_running_loop().create_task(self._listen(handler, on_resync))

    async def stop(self) -> None:
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            await asyncio.get_running_loop().run_in_executor(None, sender.shutdown)
        self.flush()  # anything queued after the sender stopped taking work
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self, handler: Handler, on_resync: Callable[[], None]) -> None:
        import psycopg

        delay = 0.5
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, application_name="pipenb-bus", **KEEPALIVE
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        log.warning("listening to the other server processes again")
                        on_resync()  # what was sent while we were away is lost
                    first = False
                    delay = 0.5
                    self.connected.set()
                    async for note in conn.notifies():
                        self._deliver(note.payload, handler)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning(
                    "lost the connection that hears other server processes (%s); retrying in "
                    "%.1f s",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _deliver(self, payload: str, handler: Handler) -> None:
        try:
            msg = orjson.loads(payload)
            if msg.get("o") == self.origin:
                return  # our own: applied when it was made
            self.received += 1
            handler(str(msg["k"]), list(msg.get("a") or ()), msg.get("x"))
        except Exception:
            log.exception("bad message from another server process: %.200s", payload)


#: TCP keep-alives on the coordination connections: a database host that vanishes is noticed in
#: seconds, not after the kernel's two hours
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
}


def _encode(origin: str, kind: str, ids: list[str], extra: Any) -> Iterable[bytes]:
    """One message, or several when the ids do not fit in one NOTIFY."""
    if not ids:
        yield orjson.dumps({"o": origin, "k": kind, "x": extra})
        return
    chunk: list[str] = []
    size = 0
    for i in ids:
        if chunk and size + len(i) + 3 > CHUNK:
            yield orjson.dumps({"o": origin, "k": kind, "a": chunk, "x": extra})
            chunk, size = [], 0
        chunk.append(i)
        size += len(i) + 3
    yield orjson.dumps({"o": origin, "k": kind, "a": chunk, "x": extra})


def make_bus(db_url: str, engine: Any) -> LocalBus:
    if db_url.startswith("postgresql"):
        return PgBus(conninfo(db_url), engine)
    return LocalBus()


def conninfo(db_url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL (``postgresql+psycopg://``...)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
