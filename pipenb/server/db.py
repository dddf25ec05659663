"""Database connection: SQLite by default (one file, WAL), PostgreSQL by URL; migrations at start."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
#: How long a SQLite statement waits for a lock another process holds. Statements run on worker
#: threads (dbpool.py), so a wait holds up only its own request; past it the request is
#: answered 503 with Retry-After (see handlers/base.py) and the agent or client tries again.
SQLITE_BUSY_SECONDS = 1.0
#: PostgreSQL advisory lock that serialises migrations across server processes
MIGRATE_KEY = 0x706970656E64

#: connections each process keeps open, and how many more it may open at a peak; the thread
#: pool that runs database work (dbpool.py) has one thread per connection
POOL_SIZE, POOL_OVERFLOW = 5, 10


#: what services get to open a session: one transaction, committed when the block ends
#: (ControlPlane.session); a public operation opens one and passes it to its helpers
SessionScope = Callable[[], AbstractContextManager[Session]]


T = TypeVar("T")


def in_chunks(items: list[T], size: int = 500) -> list[list[T]]:
    """``items`` in slices small enough for one ``IN (...)`` (SQLite caps bound parameters)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def default_db_url(data_dir: str) -> str:
    return f"sqlite:///{os.path.join(data_dir, 'pipenb.db')}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            _private_file(path)
        sizes = (
            {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
            if path and path != ":memory:"
            else {}
        )
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
            **sizes,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, fast commits
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
            cur.close()

        _one_writer(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(
        url, pool_pre_ping=True, pool_size=2 * POOL_SIZE, max_overflow=2 * POOL_OVERFLOW
    )


def connections(engine: Engine) -> int:
    """The most connections the engine's pool hands out at once (its size and overflow)."""
    pool = engine.pool
    size = pool.size() if hasattr(pool, "size") else 1
    return max(1, size + max(0, getattr(pool, "_max_overflow", 0)))


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER", "DROP")


def _one_writer(engine: Engine) -> None:
    """SQLite lets one transaction write at a time, and a writer that finds the file locked
    sleeps and polls (up to ``SQLITE_BUSY_SECONDS``, then fails). With database work on several
    threads, this process's own writers would poll against each other; instead they queue on
    a lock here, from their first write to their commit or rollback. Readers never wait (WAL),
    and another process's lock is still met by SQLite's busy timeout."""
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not conn.info.get("pipenb_writing") and statement.lstrip()[:7].upper().startswith(
            _WRITES
        ):
            lock.acquire()
            conn.info["pipenb_writing"] = True

    def _release(conn: Any, *args: Any) -> None:
        if conn.info.pop("pipenb_writing", False):
            lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)


def _private_file(path: str) -> None:
    """The database holds sealed secrets, hashed keys and every pipe: its owner's alone. SQLite
    gives its -wal and -shm files the database file's mode, so this covers them too."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    elif os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # several server processes starting at once on a new database: one migrates, the
            # others wait here and then find the schema at the head
            from sqlalchemy import text

            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
