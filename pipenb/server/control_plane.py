"""The control plane object: database, live state, services and periodic jobs, shared by every
handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipenb.server.coordination import Coordination
from pipenb.server.db import connections, make_engine, migrate, session_factory
from pipenb.server.db_tables import AgentRow, CommandRow
from pipenb.server.dbpool import DbPool
from pipenb.server.groupcommit import READ_GROUPS, GroupCommit
from pipenb.server.jobs import Failover, Job, PresenceFlush, TelemetryExpiry, run_jobs
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
        self.db = DbPool(connections(self.engine))  # database work off the event loop
        # several processes on one database; on SQLite it refuses a second process on the same
        # file (DatabaseInUse), so it comes before migrating
        self.coord = Coordination(settings, self.engine, self.live, self.db)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        # each service gets what it works with, nothing more (no service sees this object)
        live, session = self.live, self.session
        self.deployments = DeploymentService(
            settings, session, live, lock_placement=self.coord.lock_placement
        )
        self.pipes = PipeService(session, self.deployments)
        self.agent_settings = AgentSettingsService(session, live, shared=self.coord.shared)
        self.coord.agent_settings = self.agent_settings  # other processes' changes drop its cache
        self.agents = AgentService(settings, session, live, self.deployments, self.agent_settings)
        #: the keys of agents met for the first time, read in groups (a fleet meeting a process)
        self.key_checks = GroupCommit(
            self.db, session, self.agents.check_key, self.agents.read_keys, parallel=READ_GROUPS
        )
        self.enrollment = EnrollmentService(settings, session, self.agents, self.deployments)
        self.commands = CommandService(settings, session, live, self.deployments)
        self.telemetry = TelemetryService(settings, session)
        self.checkin = CheckinService(
            settings,
            session,
            live,
            self.db,
            self.deployments,
            self.commands,
            self.agent_settings,
            self.telemetry,
        )
        self.users = UserService(settings, session)
        self.audit = AuditService(session)
        self.presence_flush = PresenceFlush(
            self.engine,
            self.live,
            self.db,
            settings.poll_interval,
            shared_every=self.coord.flush_every if self.coord.shared else None,
        )
        self.jobs: list[Job] = [
            Failover(
                self.live, self.db, settings.offline_seconds, self.deployments.reconcile_failover
            ),
            self.presence_flush,
            TelemetryExpiry(self.db, settings.retention, self.telemetry.expire),
        ]
        self._task: asyncio.Task | None = None
        self._leading = False  # this process ran the once-per-fleet jobs at the last tick
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
            self.live.loop = asyncio.get_running_loop()
            self._task = self.live.loop.create_task(self._background())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush_presence(force=True)
        await self.coord.stop()
        self.audit.close()
        self.db.shutdown()
        self.engine.dispose()

    async def _background(self) -> None:
        """The periodic jobs (jobs.py): presence flush, failover, telemetry expiry. With several
        processes (coordination.py) every one flushes its presence and reads the others', and
        only the one that leads runs the once-per-fleet jobs."""
        try:
            await self.coord.start()
        except Exception:
            log.exception("coordination with the other server processes")
        await run_jobs(self.jobs, lead=self._lead)

    async def _lead(self) -> bool:
        """Whether this process runs the once-per-fleet jobs this tick. One that just took over
        from another process places every deployment once: what the other knew is not known
        here."""
        if not await self.coord.tick():
            self._leading = False
            self.live.reconcile_due = False  # the leader places what comes and goes
            return False
        if not self._leading:
            self._leading = True
            if self.coord.shared:
                await self.db.run(self.deployments.reconcile_all)
        return True

    def flush_presence(self, force: bool = False) -> None:
        self.presence_flush.flush(force)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
