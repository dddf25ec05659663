"""The control plane object: database, live state and services, shared by every handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from pipenb.server.db import connections, make_engine, migrate, session_factory
from pipenb.server.dbpool import DbPool
from pipenb.server.live import Live
from pipenb.server.settings import ServerSettings
from pipenb.server.tables import AgentRow, CommandRow

log = logging.getLogger("pipenb.server")


class ControlPlane:
    def __init__(self, settings: ServerSettings):
        from pipenb.server.services.agent_settings import AgentSettingsService
        from pipenb.server.services.agents import AgentService
        from pipenb.server.services.audit import AuditService
        from pipenb.server.services.checkin import CheckinService
        from pipenb.server.services.commands import CommandService
        from pipenb.server.services.deployments import DeploymentService
        from pipenb.server.services.enrollment import EnrollmentService
        from pipenb.server.services.pipes import PipeService
        from pipenb.server.services.telemetry import TelemetryService
        from pipenb.server.services.users import UserService

        self.settings = settings
        self.engine = make_engine(settings.db_url)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        self.db = DbPool(connections(self.engine))  # database work off the event loop
        self.live = Live()
        self.pipes = PipeService(self)
        self.agents = AgentService(self)
        self.enrollment = EnrollmentService(self)
        self.deployments = DeploymentService(self)
        self.commands = CommandService(self)
        self.agent_settings = AgentSettingsService(self)
        self.telemetry = TelemetryService(self)
        self.checkin = CheckinService(self)
        self.users = UserService(self)
        self.audit = AuditService(self)
        self._task: asyncio.Task | None = None
        self._load()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    def _load(self) -> None:
        """Live state from the database after a restart: presence and pending commands."""
        with self.session() as s:
            for agent_id, last_seen in s.execute(select(AgentRow.id, AgentRow.last_seen)):
                if last_seen is not None:
                    p = self.live.presence[agent_id]
                    p.last_seen = p.stored = _aware(last_seen).timestamp()
            pending = s.scalars(select(CommandRow.agent_id).where(CommandRow.acked_at.is_(None)))
            self.live.pending_commands.update(pending)

    # ------------------------------------------------------------------ background work
    def start(self) -> None:
        if self._task is None:
            self.live.loop = asyncio.get_running_loop()
            self._task = self.live.loop.create_task(self._background())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush_presence(force=True)
        self.db.shutdown()
        self.engine.dispose()

    async def _background(self) -> None:
        """Every second: flush presence, notice agents that went silent (failover)."""
        ticks = 0
        # old telemetry goes every minute, or sooner when the retention itself is short
        expire_every = int(max(1.0, min(60.0, self.settings.retention / 4)))
        was_online: dict[str, bool] = {}
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                changed, self.live.reconcile_due = self.live.reconcile_due, False
                for agent_id in list(self.live.presence):
                    online = self.live.is_online(agent_id, self.settings.offline_seconds)
                    if was_online.get(agent_id, False) != online:
                        changed = True
                        log.info("agent %s is %s", agent_id, "online" if online else "offline")
                    was_online[agent_id] = online
                if changed:
                    await self.db.run(self.deployments.reconcile_failover)
                if ticks % 5 == 0:
                    await self.db.run(self.flush_presence)
                if ticks % expire_every == 0:
                    await self.db.run(self.telemetry.expire)
            except Exception:  # the loop must survive a bad moment (database locked, ...)
                log.exception("background task")

    def flush_presence(self, force: bool = False) -> None:
        """Write last-seen times in one statement. They only serve a restarted server, so a time
        is rewritten once it is a poll interval stale, not on every check-in: this keeps the
        flush of 1,000 agents to one short executemany instead of a stall of the event loop."""
        stale = 0.0 if force else self.settings.poll_interval
        rows = []
        for agent_id, p in list(self.live.presence.items()):  # a worker thread: copy first
            if p.dirty and (p.last_seen - p.stored >= stale or force):
                rows.append(
                    {"aid": agent_id, "seen": datetime.fromtimestamp(p.last_seen, timezone.utc)}
                )
                p.stored = p.last_seen
                p.dirty = False
        if not rows:
            return
        stmt = (
            update(AgentRow.__table__)
            .where(AgentRow.__table__.c.id == bindparam("aid"))
            .values(last_seen=bindparam("seen"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
