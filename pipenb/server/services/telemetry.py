"""Metrics and logs reported by agents, kept for a retention window.

An agent reports for the deployments assigned to it only: points and lines naming another
deployment are dropped. A line's time is the agent's clock, clamped to the server's: a time
ahead of the server by more than ``clock_skew`` becomes the time it arrived, and one older than
the retention window becomes the window's start, so no line outlives the retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select

from pipenb.server import convert
from pipenb.server import models as M
from pipenb.server.db_tables import LogRow, MetricRow, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.settings import ServerSettings

MAX_LOGS_PER_CHECKIN = 500
log = logging.getLogger("pipenb.server.telemetry")


class TelemetryService:
    def __init__(self, settings: ServerSettings, session: SessionScope):
        self.settings = settings
        self.session = session
        self._last_point: dict[tuple[str, str], float] = {}

    def record(
        self,
        s: Session,
        agent_id: str,
        reports: list[M.PipeReport],
        logs: list[M.AgentLog],
        assigned: Collection[str],
    ) -> None:
        """Within the check-in's transaction: keep the metrics points and log lines of the
        deployments in ``assigned`` (and the agent's own lines, with no deployment)."""
        now = time.time()
        every = self.settings.metrics_interval
        dropped = 0
        for r in reports:
            if r.metrics is None:
                continue
            if r.deployment_id not in assigned:
                dropped += 1
                continue
            key = (agent_id, r.deployment_id)
            if now - self._last_point.get(key, 0.0) < every:
                continue
            self._last_point[key] = now
            s.add(
                MetricRow(
                    agent_id=agent_id, deployment_id=r.deployment_id, time=utcnow(), data=r.metrics
                )
            )
        arrived = utcnow()
        rows = []
        for line in logs[:MAX_LOGS_PER_CHECKIN]:
            if line.deployment_id is not None and line.deployment_id not in assigned:
                dropped += 1
                continue
            rows.append(
                {
                    "agent_id": agent_id,
                    "deployment_id": line.deployment_id,
                    "time": self.clamp(line.time, arrived),
                    "level": line.level[:10],
                    "message": line.message[:10000],
                }
            )
        if rows:  # one executemany: ORM objects cost ten times more for a full check-in
            s.execute(insert(LogRow.__table__), rows)
        if dropped:
            log.warning(
                "agent %s reported %d metrics points or log lines for deployments not "
                "assigned to it; dropped",
                agent_id,
                dropped,
            )

    def clamp(self, when: datetime | None, arrived: datetime) -> datetime:
        """An agent's time on the server's clock: no later than ``arrived`` plus the allowed
        skew (else ``arrived``), no earlier than the retention window."""
        if when is None:
            return arrived
        if when > arrived + timedelta(seconds=self.settings.clock_skew):
            return arrived
        return max(when, arrived - timedelta(seconds=self.settings.retention))

    def _recent(
        self,
        table: type[LogRow] | type[MetricRow],
        dep_id: str | None,
        agent_id: str | None,
        since: datetime | None,
        limit: int,
    ) -> list:
        """The newest ``limit`` rows of a telemetry table, oldest first."""
        q = select(table).order_by(table.time.desc(), table.id.desc()).limit(limit)
        if dep_id:
            q = q.where(table.deployment_id == dep_id)
        if agent_id:
            q = q.where(table.agent_id == agent_id)
        if since:
            q = q.where(table.time >= since)
        with self.session() as s:
            return list(reversed(s.scalars(q).all()))

    def metrics(
        self,
        dep_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> M.MetricList:
        rows = self._recent(MetricRow, dep_id, agent_id, since, limit)
        return M.MetricList(metrics=[convert.metric_point(r) for r in rows])

    def logs(
        self,
        dep_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> M.LogList:
        rows = self._recent(LogRow, dep_id, agent_id, since, limit)
        return M.LogList(logs=[convert.log_line(r) for r in rows])

    def expire(self) -> None:
        # a time older than the interval no longer holds a point back: forget it, or every
        # (agent, deployment) pair ever seen would stay in memory
        now, every = time.time(), self.settings.metrics_interval
        self._last_point = {k: t for k, t in self._last_point.items() if now - t < every}
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.settings.retention)
        with self.session() as s:
            s.execute(delete(MetricRow).where(MetricRow.time < cutoff))
            s.execute(delete(LogRow).where(LogRow.time < cutoff))
