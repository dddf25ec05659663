"""Database work off the event loop (pipenb/server/dbpool.py): a request waiting for the database
delays only itself. Another process holds a write lock (SQLite: ``BEGIN IMMEDIATE`` on the file;
PostgreSQL: ``LOCK TABLE`` when PIPENB_TEST_POSTGRES_URL is set); a write waits for it, and
meanwhile ``/health`` and other agents' check-ins are answered.

Before, every statement ran on the event loop: the waiting write held up every request for as
long as it waited (SQLite's busy timeout, or for ever on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.serverproc import ServerProcess
from support.waiting import wait_until

ROUNDS = 5  # health + check-in pairs that must be answered while the write waits


class Lock:
    """A write lock held by this (test) process on the server's database, until released."""

    def __init__(self, take: Callable[[], None], release: Callable[[], None]):
        self.take, self.release = take, release


def sqlite_lock(path: Path) -> Lock:
    con = sqlite3.connect(path, isolation_level=None, timeout=30)

    def release() -> None:
        con.execute("COMMIT")
        con.close()

    return Lock(lambda: con.execute("BEGIN IMMEDIATE"), release)


def pg_lock(url: str) -> Lock:
    import psycopg

    con = psycopg.connect(url)

    def release() -> None:
        con.commit()
        con.close()

    # reads go on (EXCLUSIVE lets ACCESS SHARE through); any write to the table waits
    return Lock(lambda: con.execute("LOCK TABLE pipe_versions IN EXCLUSIVE MODE"), release)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: Any, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield "sqlite", None
    else:
        yield "postgresql", request.getfixturevalue("pg_url")


def test_a_waiting_write_delays_only_its_own_request(
    tmp_path: Path, db: tuple[str, str | None]
) -> None:
    kind, url = db
    with ServerProcess(tmp_path, db_url=url, poll_interval=1.0) as srv:
        srv.request("POST", "/agents", json={"id": "other"}).raise_for_status()
        key = srv.request("POST", "/agents/other/keys").json()["api_key"]
        seq = 0

        def checkin(**body: Any) -> Any:
            nonlocal seq
            body = {"agent_id": "other", "seq": seq, "wait": 0, **body}
            seq += 1
            return srv.request(
                "POST",
                "/agent/checkin",
                json=body,
                token=key,
                timeout=30,
            )

        assert checkin(full=True, attributes={"host": "h"}).status_code == 200

        lock = sqlite_lock(tmp_path / "server.db") if url is None else pg_lock(url)
        lock.take()
        released = False
        write: dict[str, Any] = {}

        def push() -> None:
            doc = "name: waits\ninput: {echo: {lines: [x]}}\noutput: {discard: {}}\n"
            r = srv.request("POST", "/pipes", json={"yaml": doc}, timeout=60)
            write.update(status=r.status_code, body=r.json(), done=time.monotonic())

        try:
            pusher = threading.Thread(target=push, daemon=True)
            sent = time.monotonic()
            pusher.start()
            answered: list[tuple[str, int, float, float]] = []  # what, status, sent, done
            while "done" not in write and len(answered) < 2 * ROUNDS:
                for what, call in (
                    ("health", lambda: srv.request("GET", "/health", timeout=30)),
                    ("checkin", lambda: checkin(full=False)),
                ):
                    t = time.monotonic()
                    status = call().status_code
                    answered.append((what, status, t, time.monotonic()))
            early = dict(write)  # what the write got while the lock was held, if anything
            lock.release()
            released = True
            pusher.join(60)
        finally:
            if not released:
                lock.release()
        assert "done" in write, "the write never came back"
        if early:
            # only SQLite gives up: it waited its busy timeout, then was told to retry
            assert kind == "sqlite", early
            assert early["status"] == 503, early
            assert early["body"]["error"]["code"] == "unavailable", early
        else:  # it waited for the lock, and went through once it was gone
            assert write["status"] == 201, write
        during = [a for a in answered if a[2] > sent and a[3] < write["done"]]
        assert all(status == 200 for _, status, _, _ in answered), answered
        for what in ("health", "checkin"):
            n = sum(1 for a in during if a[0] == what)
            assert n >= ROUNDS, f"only {n} {what} requests answered while the write waited"

        # and the store works again: a write goes through
        doc = "name: after\ninput: {echo: {lines: [x]}}\noutput: {discard: {}}\n"
        wait_until(
            lambda: srv.request("POST", "/pipes", json={"yaml": doc}).status_code in (200, 201),
            20,
            "a write after the lock",
        )


def test_a_user_token_waiting_for_its_row_delays_only_its_own_request(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL only: another process locks ``user_tokens`` against reads (``ACCESS
    EXCLUSIVE``; SQLite's readers are never blocked by a writer), so checking a user token
    waits. Meanwhile ``/health`` and an agent's check-ins are answered; once the lock is gone
    the user's request is too. Before, the token's row was read on the event loop, and every
    request waited with it."""
    import psycopg

    with ServerProcess(tmp_path, db_url=pg_url, poll_interval=1.0) as srv:
        srv.request("POST", "/agents", json={"id": "other"}).raise_for_status()
        key = srv.request("POST", "/agents/other/keys").json()["api_key"]
        srv.request("POST", "/users", json={"name": "ana", "role": "viewer"}).raise_for_status()
        r = srv.request("POST", "/users/ana/tokens", json={})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert srv.request("GET", "/pipes", token=token).status_code == 200
        con = psycopg.connect(pg_url)
        con.execute("LOCK TABLE user_tokens IN ACCESS EXCLUSIVE MODE")
        released = False
        user: dict[str, Any] = {}

        def as_ana() -> None:
            r = srv.request("GET", "/pipes", token=token, timeout=60)
            user.update(status=r.status_code, done=time.monotonic())

        try:
            asker = threading.Thread(target=as_ana, daemon=True)
            sent = time.monotonic()
            asker.start()
            answered: list[tuple[str, int]] = []
            seq = 0
            while "done" not in user and len(answered) < 2 * ROUNDS:
                seq += 1
                body = {"agent_id": "other", "seq": seq, "wait": 0, "full": seq == 1}
                for what, call in (
                    ("health", lambda: srv.request("GET", "/health", timeout=30)),
                    ("checkin", lambda b=body: srv.request(
                        "POST", "/agent/checkin", json=b, token=key, timeout=30)),
                ):  # fmt: skip
                    answered.append((what, call().status_code))
            waiting = "done" not in user  # the user's request still waits for the lock
            con.commit()  # the lock is gone
            released = True
            asker.join(60)
        finally:
            if not released:
                con.commit()
            con.close()
        assert waiting, (
            f"the user's request did not wait for the lock ({time.monotonic() - sent:.1f} s)"
        )
        assert answered == [("health", 200), ("checkin", 200)] * ROUNDS, answered
        assert user.get("status") == 200, user
