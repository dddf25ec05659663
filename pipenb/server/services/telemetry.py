"""Metrics and logs reported by agents, kept for a retention window."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from pipenb.server import models as M
from pipenb.server.tables import LogRow, MetricRow, utcnow

if TYPE_CHECKING:
    from pipenb.server.core import ControlPlane

MAX_LOGS_PER_CHECKIN = 500


class TelemetryService:
    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self._last_point: dict[tuple[str, str], float] = {}

    def record(self, s, agent_id: str, reports: list[M.PipeReport], logs: list[M.AgentLog]) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        every = self.cp.settings.metrics_interval
        for r in reports:
            if r.metrics is None:
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
        for line in logs[:MAX_LOGS_PER_CHECKIN]:
            s.add(
                LogRow(
                    agent_id=agent_id,
                    deployment_id=line.deployment_id,
                    time=line.time or utcnow(),
                    level=line.level[:10],
                    message=line.message[:10000],
                )
            )

    def _recent(
        self,
        table: type,
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
        with self.cp.session() as s:
            return list(reversed(s.scalars(q).all()))

    def metrics(
        self,
        dep_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> M.MetricList:
        rows = self._recent(MetricRow, dep_id, agent_id, since, limit)
        return M.MetricList(
            metrics=[
                M.MetricPoint(
                    agent_id=r.agent_id, deployment_id=r.deployment_id, time=r.time, data=r.data
                )
                for r in rows
            ]
        )

    def logs(
        self,
        dep_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> M.LogList:
        rows = self._recent(LogRow, dep_id, agent_id, since, limit)
        return M.LogList(
            logs=[
                M.LogLine(
                    agent_id=r.agent_id,
                    deployment_id=r.deployment_id,
                    time=r.time,
                    level=r.level,
                    message=r.message,
                )
                for r in rows
            ]
        )

    def expire(self) -> None:
        # a time older than the interval no longer holds a point back: forget it, or every
        # (agent, deployment) pair ever seen would stay in memory
        now, every = time.time(), self.cp.settings.metrics_interval
        self._last_point = {k: t for k, t in self._last_point.items() if now - t < every}
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.cp.settings.retention)
        with self.cp.session() as s:
            s.execute(delete(MetricRow).where(MetricRow.time < cutoff))
            s.execute(delete(LogRow).where(LogRow.time < cutoff))
