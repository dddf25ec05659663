"""How the server processes of one fleet work together: any number on one PostgreSQL, one on
SQLite.

The database is the truth. What a process keeps in memory is either a cache of it, dropped when
another process says it changed (bus.py), or about the requests it serves itself:

- cached desired sets, API keys and merged agent settings: dropped on ``notify``, ``key``,
  ``removed``, ``settings`` and ``forget`` messages;
- agents with commands waiting (``commands``), deployments deleted under an agent (``gone``),
  agents that said they are leaving (``leave``): applied from the messages;
- presence: each process writes the last check-in of the agents it serves to ``agents.last_seen``
  every second (the held ones too) and reads everybody's back every second (``refresh``), so an
  agent held by another process is online here too;
- what an agent last said of its settings: in the database (agent_settings.py);
- background jobs (placement after agents come and go, failover, expiry): only in the process
  that leads (leader.py); a ``place`` message asks it to place now rather than at its next look.

Per-process on purpose (each process limits what it serves): enrollment rate buckets, the
metrics-point rate per pipe, the connection cap.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, select, text

from pipenb.server.bus import make_bus
from pipenb.server.db_tables import AgentRow, CommandRow, PipeStatusRow
from pipenb.server.leader import make_leader
from pipenb.server.live import Live
from pipenb.server_settings import ServerSettings

if TYPE_CHECKING:
    from pipenb.server.dbpool import DbPool

log = logging.getLogger("pipenb.server.coordination")

#: seconds a last-seen time read from the database may lag (see ``Live.remote_slack``)
REMOTE_SLACK = 2.0
#: a transaction-level advisory lock that serialises placement across processes
PLACEMENT_KEY = 0x706970656E63


class SettingsCache(Protocol):
    """The agent-settings service's cache, which messages from other processes drop."""

    def changed(self, publish: bool = True) -> None: ...

    def forget(self, agent_id: str, publish: bool = True) -> None: ...


class _NoSettings:
    def changed(self, publish: bool = True) -> None:
        return None

    def forget(self, agent_id: str, publish: bool = True) -> None:
        return None


class Coordination:
    """Made before migrating (it refuses a second process on a SQLite file); ``agent_settings``
    is set once that service exists."""

    def __init__(self, settings: ServerSettings, engine: Engine, live: Live, db: DbPool):
        self.settings, self.engine, self.live = settings, engine, live
        #: the database threads (dbpool.py): the presence refresh reads a row per agent seen
        #: lately (10,000 every second at 10,000 agents), off the event loop
        self.db = db
        url = settings.db_url
        self.leader = make_leader(url)  # SQLite: refuses a second process on the file
        self.bus = make_bus(url, engine)
        self.shared = self.bus.shared  # several processes may serve this database
        live.publish = self.bus.publish
        if self.shared:
            live.remote_slack = REMOTE_SLACK
        self.agent_settings: SettingsCache = _NoSettings()
        self._refreshed: float | None = None  # wall time of the last presence refresh

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        await self.bus.start(self.on_message, self.resync)
        await self.tick()

    async def stop(self) -> None:
        await self.bus.stop()
        await self.leader.stop()

    async def tick(self) -> bool:
        """Every second: read the others' presence, and lead if we can. True: this process
        runs the background jobs now."""
        if self.shared:
            await self.db.run(self.refresh)
        return await self.leader.tick()

    @property
    def leading(self) -> bool:
        return self.leader.leading

    @property
    def flush_every(self) -> float:
        """How stale a last-seen time may get before this process writes it again."""
        st = self.settings
        return min(st.poll_interval, st.offline_seconds / 3)

    # ------------------------------------------------------------------ presence
    def refresh(self) -> None:
        """Last-seen times other processes wrote since the last look (all of them the first
        time), and which agents have a failed pipe."""
        live = self.live
        now = time.time()
        q = select(AgentRow.id, AgentRow.last_seen).where(AgentRow.last_seen.is_not(None))
        if self._refreshed is not None:
            # the writers' clocks and flush periods: look back well past the last look
            since = self._refreshed - self.flush_every - 10.0
            q = q.where(AgentRow.last_seen >= datetime.fromtimestamp(since, timezone.utc))
        with self.engine.connect() as s:
            for agent_id, seen in s.execute(q):
                if seen is None:
                    continue
                t = _aware(seen).timestamp()
                if t > live.remote_seen.get(agent_id, 0.0):
                    live.remote_seen[agent_id] = t
            live.remote_failing = set(
                s.scalars(
                    select(PipeStatusRow.agent_id)
                    .where(PipeStatusRow.state.in_(("failed", "refused")))
                    .distinct()
                )
            )
        self._refreshed = now

    def lock_placement(self, s: Any) -> None:
        """Within a placement's transaction: one placement at a time across the fleet, so two
        processes placing at once do not both add an instance."""
        if self.shared:
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PLACEMENT_KEY})

    # ------------------------------------------------------------------ messages
    def on_message(self, kind: str, ids: list[str], extra: Any) -> None:
        """A change another process made: apply what it means here (on the event loop)."""
        live = self.live
        if kind == "notify":
            live.notify(*ids, publish=False)
        elif kind == "commands":
            live.pending_commands.update(ids)
            live.wake(*ids)
        elif kind == "key":
            live.key_cache.pop(str(extra), None)
            live.wake(*ids)
        elif kind == "removed":
            for agent_id in ids:
                live.agent_removed(agent_id, list(extra or ()), publish=False)
                self.agent_settings.forget(agent_id, publish=False)
        elif kind == "gone":
            live.tell_gone(ids, str(extra), publish=False)
        elif kind == "leave":
            for agent_id in ids:
                live.left[agent_id] = float(extra or time.time())
            live.reconcile_due = True
        elif kind == "place":
            live.reconcile_due = True
        elif kind == "settings":
            self.agent_settings.changed(publish=False)
        elif kind == "forget":
            for agent_id in ids:
                self.agent_settings.forget(agent_id, publish=False)
        else:
            log.warning("unknown message %r from another server process: ignored", kind)

    def resync(self) -> None:
        """Messages may have been lost (the listening connection dropped): forget every cache,
        re-read the commands waiting, and answer every held check-in (the agents ask again)."""
        live = self.live
        live.desired_cache.clear()
        live.key_cache.clear()
        self.agent_settings.changed(publish=False)
        with self.engine.connect() as s:
            live.pending_commands.update(
                s.scalars(select(CommandRow.agent_id).where(CommandRow.acked_at.is_(None)))
            )
        live.reconcile_due = True
        live.wake(*list(live.waiters))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
