"""Which process of a fleet runs the background jobs (failover, expiry, placement after agents
come and go): exactly one at a time.

- PostgreSQL: the process that holds a session-level advisory lock on a connection of its own.
  The lock lives as long as that connection, so when the process dies (even by SIGKILL) the
  database drops it, and another process takes it at its next try (every second).
- SQLite: one process only. ``SqliteLock`` holds an exclusive ``flock`` on a file beside the
  database for the process's life, and a second process on the same file is refused with a
  message that says what to do instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any

from pipenb.errors import PipenbError

log = logging.getLogger("pipenb.server.leader")

#: The advisory lock's key: any number, the same in every process of a fleet ("pipenb" in ASCII)
LOCK_KEY = 0x706970656E62


class DatabaseInUse(PipenbError):
    """Another server process serves this SQLite database already."""


class SoloLeader:
    """SQLite: this process is the only one, so it always leads."""

    shared = False

    def __init__(self, db_url: str):
        self.lock = SqliteLock.for_url(db_url)

    @property
    def leading(self) -> bool:
        return True

    async def tick(self) -> bool:
        """Try to lead (or check that we still do); True when this process leads."""
        return True

    async def stop(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class PgLeader:
    """PostgreSQL: leads while it holds ``pg_try_advisory_lock(LOCK_KEY)`` on its connection."""

    shared = True

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._conn: Any = None
        self._leading = False

    @property
    def leading(self) -> bool:
        return self._leading

    async def tick(self) -> bool:
        import psycopg

        from pipenb.server.bus import KEEPALIVE

        try:
            if self._conn is None or self._conn.closed:
                self._leading = False
                self._conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, application_name="pipenb-jobs", **KEEPALIVE
                )
            if self._leading:
                await self._conn.execute("SELECT 1")  # still connected: still holding the lock
            else:
                cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                row = await cur.fetchone()
                if row and row[0]:
                    self._leading = True
                    log.info(
                        "this process now runs the fleet's background jobs (pid %d)", os.getpid()
                    )
        except Exception as exc:
            if self._leading:
                log.warning("lost the background-jobs lock with its connection: %s", exc)
            self._leading = False
            await self._close()
        return self._leading

    async def stop(self) -> None:
        self._leading = False
        await self._close()  # the lock goes with the connection

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken
                pass


class SqliteLock:
    """An exclusive lock on ``<database>.lock`` held for the life of the process (or until
    ``release``). The kernel drops a ``flock`` when its process dies, so a crashed server
    never leaves a stale lock behind."""

    def __init__(self, db_path: str):
        self.path = db_path + ".lock"
        self.fd: int | None = None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise DatabaseInUse(
                f"the SQLite database {db_path} is in use by another pipenb server process"
                f"{f' (pid {holder})' if holder else ''} ({self.path} is locked). SQLite serves "
                "one server process: stop the other one, give this one a database of its own "
                "(--db-url or --data-dir; in Jupyter, PipenbExtension.db_url), or run several "
                "processes on one PostgreSQL database (a postgresql:// URL; see docs/server.md, "
                "'Running several server processes')"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    @classmethod
    def for_url(cls, db_url: str) -> SqliteLock | None:
        if not db_url.startswith("sqlite"):
            return None
        path = db_url.split("///", 1)[-1]
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return cls(os.path.abspath(path))

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def __del__(self) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def make_leader(db_url: str) -> SoloLeader | PgLeader:
    if db_url.startswith("postgresql"):
        from pipenb.server.bus import conninfo

        return PgLeader(conninfo(db_url))
    return SoloLeader(db_url)
