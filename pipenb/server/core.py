"""The control plane object: database, live state and services, shared by every handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from pipenb.server.coordination import Coordination
from pipenb.server.db import make_engine, migrate, session_factory
from pipenb.server.db_tables import AgentRow, CommandRow
from pipenb.server.live import Live
from pipenb.server.settings import ServerSettings

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
        self.live = Live()
        # SQLite: refuses a second process on the same file (DatabaseInUse), before migrating
        self.coord = Coordination(settings, self.engine, self.live)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
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
        self.coord.agent_settings = self.agent_settings  # other processes' changes drop its cache
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
                # with several processes, the others' times are read every second instead
                if last_seen is not None and not self.coord.shared:
                    p = self.live.presence[agent_id]
                    p.last_seen = p.stored = _aware(last_seen).timestamp()
            pending = s.scalars(select(CommandRow.agent_id).where(CommandRow.acked_at.is_(None)))
            self.live.pending_commands.update(pending)
        if self.coord.shared:
            self.coord.refresh()  # who is online through the other processes, before serving

    # ------------------------------------------------------------------ background work
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._background())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush_presence(force=True)
        await self.coord.stop()
        self.engine.dispose()

    async def _background(self) -> None:
        """Every second: flush presence, notice agents that went silent (failover). With several
        processes (coordination.py) every one flushes its presence and reads the others', and
        the one that leads runs the jobs."""
        ticks = 0
        # old telemetry goes every minute, or sooner when the retention itself is short
        expire_every = int(max(1.0, min(60.0, self.settings.retention / 4)))
        was_online: dict[str, bool] = {}
        leading = False
        try:
            await self.coord.start()
        except Exception:
            log.exception("coordination with the other server processes")
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                if self.coord.shared:
                    self.flush_presence()  # the other processes read it every second
                if not await self.coord.tick():
                    leading = False  # another process runs the jobs
                    self.live.reconcile_due = False
                    continue
                changed, self.live.reconcile_due = self.live.reconcile_due, False
                if not leading:  # just took over from another process: place everything once
                    leading, changed = True, changed or self.coord.shared
                for agent_id in list(self.live.known_agents()):
                    online = self.live.is_online(agent_id, self.settings.offline_seconds)
                    if was_online.get(agent_id, False) != online:
                        changed = True
                        log.info("agent %s is %s", agent_id, "online" if online else "offline")
                    was_online[agent_id] = online
                if changed:
                    self.deployments.reconcile_all()
                if ticks % 5 == 0 and not self.coord.shared:
                    self.flush_presence()
                if ticks % expire_every == 0:
                    self.telemetry.expire()
            except Exception:  # the loop must survive a bad moment (database locked, ...)
                log.exception("background task")

    def flush_presence(self, force: bool = False) -> None:
        """Write last-seen times in one statement. They only serve a restarted server, so a time
        is rewritten once it is a poll interval stale, not on every check-in: this keeps the
        flush of 1,000 agents to one short executemany instead of a stall of the event loop."""
        stale = 0.0 if force else self.settings.poll_interval
        if self.coord.shared:  # other processes go by it: an agent held here is seen now
            stale = 0.0 if force else self.coord.flush_every
            now = time.time()
            for p in self.live.presence.values():
                if p.open_polls > 0:
                    p.last_seen, p.dirty = now, True
        rows = []
        for agent_id, p in self.live.presence.items():
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
