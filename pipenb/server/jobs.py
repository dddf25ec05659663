"""The control plane's periodic jobs, one small class each, and the loop that runs them.

- ``PresenceFlush``: writes agents' last-seen times (for a restarted server, and for the other
  processes on a shared database);
- ``Failover``: notices agents coming online or going silent and places the deployments that
  depend on who is online again (counted deployments with failover: ``placement.py``);
- ``TelemetryExpiry``: deletes metrics and log lines past the retention.

Each job says how often it runs and does its database work on the pool (``dbpool.py``), so a
slow statement delays that job only, never the event loop. A failing run is logged and the job
runs again at its next turn: a locked database is a moment's trouble, not the end of the jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, bindparam, update

from pipenb.server.db_tables import AgentRow
from pipenb.server.dbpool import DbPool
from pipenb.server.live import Live, snapshot

log = logging.getLogger("pipenb.server")

TICK = 1.0  # seconds between two turns of the job loop


class Job:
    """A periodic job: ``run`` every ``every`` ticks of the job loop."""

    name = "job"
    every = 1
    #: runs in one process of a fleet only: the one that leads (coordination.py)
    once_per_fleet = False

    async def run(self) -> None:
        raise NotImplementedError


class PresenceFlush(Job):
    """Write last-seen times in one statement. With one process they only serve a restarted
    server, so a time is rewritten once it is a poll interval stale, not on every check-in: this
    keeps the flush of 1,000 agents to one short executemany. With several processes on one
    database (``shared_every``) the others read them every second to know who is online: every
    tick, a time ``shared_every`` stale, and agents held in a long poll here count as seen now."""

    name = "presence flush"
    every = 5

    def __init__(
        self,
        engine: Engine,
        live: Live,
        db: DbPool,
        poll_interval: float,
        shared_every: float | None = None,
    ):
        self.engine, self.live, self.db, self.poll_interval = engine, live, db, poll_interval
        self.shared_every = shared_every
        if shared_every is not None:
            self.every = 1

    async def run(self) -> None:
        await self.db.run(self.flush)

    def flush(self, force: bool = False) -> None:
        stale = 0.0 if force else self.poll_interval
        if self.shared_every is not None:
            stale = 0.0 if force else self.shared_every
            now = time.time()
            for p in list(self.live.presence.values()):
                if p.open_polls > 0:
                    p.last_seen, p.dirty = now, True
        rows = []
        for agent_id, p in snapshot(self.live.presence).items():  # on a worker thread
            if p.dirty and (p.last_seen - p.stored >= stale or force):
                rows.append(
                    {"aid": agent_id, "seen": datetime.fromtimestamp(p.last_seen, timezone.utc)}
                )
                p.stored = p.last_seen
                p.dirty = False
        if not rows:
            return
        # rows locked in id order, as a group of check-in writes locks them (groupcommit.py):
        # two transactions taking the same rows in different orders can deadlock on PostgreSQL
        rows.sort(key=lambda r: str(r["aid"]))
        stmt = (
            update(AgentRow.__table__)
            .where(AgentRow.__table__.c.id == bindparam("aid"))
            .values(last_seen=bindparam("seen"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)


class Failover(Job):
    """Agents that came online, went silent or said they leave: place again what depends on
    who is online (``place`` is the deployment service's ``reconcile_failover``)."""

    name = "failover"
    every = 1
    once_per_fleet = True

    def __init__(self, live: Live, db: DbPool, offline_after: float, place: Callable[[], None]):
        self.live, self.db, self.offline_after, self.place = live, db, offline_after, place
        self.was_online: dict[str, bool] = {}

    async def run(self) -> None:
        changed, self.live.reconcile_due = self.live.reconcile_due, False
        for agent_id in list(self.live.known_agents()):  # seen here, or by another process
            online = self.live.is_online(agent_id, self.offline_after)
            if self.was_online.get(agent_id, False) != online:
                changed = True
                log.info("agent %s is %s", agent_id, "online" if online else "offline")
            self.was_online[agent_id] = online
        if changed:
            await self.db.run(self.place)


class TelemetryExpiry(Job):
    """Old metrics and logs go every minute, or sooner when the retention itself is short."""

    name = "telemetry expiry"
    once_per_fleet = True

    def __init__(self, db: DbPool, retention: float, expire: Callable[[], Any]):
        self.db, self.expire = db, expire
        self.every = int(max(1.0, min(60.0, retention / 4)))

    async def run(self) -> None:
        await self.db.run(self.expire)


async def run_jobs(jobs: Sequence[Job], lead: Callable[[], Awaitable[bool]] | None = None) -> None:
    """Every tick, the jobs whose turn it is, in order; until cancelled. ``lead`` says, each
    tick, whether this process runs the once-per-fleet jobs (default: it does)."""
    ticks = 0
    while True:
        await asyncio.sleep(TICK)
        ticks += 1
        leading = True
        if lead is not None:
            try:
                leading = await lead()
            except Exception:  # the database is away: lead again when it is back
                log.exception("background jobs: who leads")
                leading = False
        for job in jobs:
            if ticks % job.every or (job.once_per_fleet and not leading):
                continue
            try:
                await job.run()
            except Exception:  # the loop must survive a bad moment (database locked, ...)
                log.exception("background job: %s", job.name)
