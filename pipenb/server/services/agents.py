"""Agents: added by hand or enrolled, their labels, their API keys, and key authentication."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from pipenb.errors import ApiError, AuthError
from pipenb.server import models as M
from pipenb.server.security import (
    hash_secret,
    new_api_key,
    new_id,
    same_secret,
    same_token,
    split_api_key,
)
from pipenb.server.services.pipes import not_found
from pipenb.server.tables import AgentRow, ApiKeyRow, AssignmentRow, PipeStatusRow, utcnow

if TYPE_CHECKING:
    from pipenb.server.core import ControlPlane


class AgentService:
    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self._enroll_tokens = cp.settings.enroll_rate
        self._enroll_at = time.monotonic()

    # ------------------------------------------------------------------ reading
    def state(self, agent_id: str) -> str:
        live = self.cp.live
        if not live.is_online(agent_id, self.cp.settings.offline_seconds):
            return "offline"
        p = live.presence.get(agent_id)
        return "degraded" if p is not None and p.failing else "online"

    def _model(self, row: AgentRow, pipes: int = 0) -> M.Agent:
        p = self.cp.live.presence.get(row.id)
        last_seen = row.last_seen
        if p is not None and p.last_seen:
            from datetime import datetime, timezone

            last_seen = datetime.fromtimestamp(p.last_seen, timezone.utc)
        return M.Agent(
            id=row.id,
            name=row.name,
            labels=list(row.labels or []),
            attributes=dict(row.attributes or {}),
            state=self.state(row.id),  # type: ignore[arg-type]
            enrolled=row.enrolled,
            created_at=row.created_at,
            last_seen=last_seen,
            pipes=pipes,
        )

    def list(self) -> M.AgentList:
        with self.cp.session() as s:
            counts = dict(
                s.execute(
                    select(AssignmentRow.agent_id, func.count()).group_by(AssignmentRow.agent_id)
                ).all()
            )
            rows = s.scalars(select(AgentRow).order_by(AgentRow.id)).all()
            return M.AgentList(agents=[self._model(r, counts.get(r.id, 0)) for r in rows])

    def get(self, agent_id: str) -> M.Agent:
        with self.cp.session() as s:
            row = s.get(AgentRow, agent_id)
            if row is None:
                raise not_found("agent", agent_id)
            n = s.scalar(
                select(func.count())
                .select_from(AssignmentRow)
                .where(AssignmentRow.agent_id == agent_id)
            )
            return self._model(row, n or 0)

    # ------------------------------------------------------------------ writing
    def add(
        self, body: M.AgentCreate, *, enrolled: bool = False, attributes: dict | None = None
    ) -> M.Agent:
        with self.cp.session() as s:
            if s.get(AgentRow, body.id) is not None:
                raise ApiError(409, "exists", f"agent {body.id!r} exists already")
            row = AgentRow(
                id=body.id,
                name=body.name or body.id,
                labels=_labels(body.labels),
                attributes=attributes or {},
                enrolled=enrolled,
                created_at=utcnow(),
            )
            s.add(row)
        self.cp.deployments.reconcile_all()
        return self._model(row)

    def update(self, agent_id: str, body: M.AgentUpdate) -> M.Agent:
        with self.cp.session() as s:
            row = s.get(AgentRow, agent_id)
            if row is None:
                raise not_found("agent", agent_id)
            if body.name is not None:
                row.name = body.name
            if body.labels is not None:
                row.labels = _labels(body.labels)
        self.cp.deployments.reconcile_all()
        self.cp.live.notify(agent_id)
        return self.get(agent_id)

    def remove(self, agent_id: str) -> None:
        with self.cp.session() as s:
            row = s.get(AgentRow, agent_id)
            if row is None:
                raise not_found("agent", agent_id)
            s.query(PipeStatusRow).filter(PipeStatusRow.agent_id == agent_id).delete()
            s.delete(row)
        self.cp.live.key_cache = {
            k: v for k, v in self.cp.live.key_cache.items() if v[1] != agent_id
        }
        self.cp.live.presence.pop(agent_id, None)
        self.cp.live.notify(agent_id)
        self.cp.deployments.reconcile_all()

    # ------------------------------------------------------------------ keys
    def create_key(self, agent_id: str) -> M.ApiKeyCreated:
        with self.cp.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
            key_id, api_key = new_api_key()
            secret = split_api_key(api_key)[1]  # type: ignore[index]
            s.add(
                ApiKeyRow(
                    id=key_id, agent_id=agent_id, hash=hash_secret(secret), created_at=utcnow()
                )
            )
        return M.ApiKeyCreated(key_id=key_id, agent_id=agent_id, api_key=api_key)

    def keys(self, agent_id: str) -> M.ApiKeyList:
        with self.cp.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
            rows = s.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.agent_id == agent_id)
                .order_by(ApiKeyRow.created_at)
            ).all()
            return M.ApiKeyList(
                keys=[
                    M.ApiKey(
                        key_id=r.id,
                        agent_id=r.agent_id,
                        created_at=r.created_at,
                        revoked_at=r.revoked_at,
                    )
                    for r in rows
                ]
            )

    def revoke_key(self, agent_id: str, key_id: str) -> None:
        with self.cp.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.agent_id != agent_id:
                raise not_found("key", key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        self.cp.live.key_cache.pop(key_id, None)

    def authenticate(self, api_key: str | None) -> str:
        """The agent id an API key belongs to; AuthError for a missing, wrong or revoked key."""
        parts = split_api_key(api_key or "")
        if parts is None:
            raise AuthError(
                401, "unauthorized", "an agent API key is required (Authorization: Bearer pnb_...)"
            )
        key_id, secret = parts
        cached = self.cp.live.key_cache.get(key_id)
        if cached is None:
            with self.cp.session() as s:
                row = s.get(ApiKeyRow, key_id)
                if row is None or row.revoked_at is not None:
                    raise AuthError(401, "unauthorized", "unknown or revoked API key")
                cached = (row.hash, row.agent_id)
            self.cp.live.key_cache[key_id] = cached
        if not same_secret(secret, cached[0]):
            raise AuthError(401, "unauthorized", "unknown or revoked API key")
        return cached[1]

    # ------------------------------------------------------------------ enrollment
    def enroll(self, body: M.EnrollRequest) -> M.EnrollResult:
        expected = self.cp.settings.enroll_key
        if not expected:
            raise AuthError(
                403,
                "enrollment_disabled",
                "auto-enrollment is off on this server (start it with --enroll-key)",
            )
        self._rate_limit()
        if not same_token(body.enroll_key, expected):
            raise AuthError(401, "unauthorized", "wrong enrollment key")
        agent_id = body.id or new_id("agent-")
        with self.cp.session() as s:
            exists = s.get(AgentRow, agent_id) is not None
        if exists:
            # re-enrolling an existing id would hand its key to whoever knows the enroll key
            raise ApiError(409, "exists", f"agent {agent_id!r} exists already; use its API key")
        self.add(
            M.AgentCreate(id=agent_id, name=body.name, labels=body.labels),
            enrolled=True,
            attributes=body.attributes,
        )
        key = self.create_key(agent_id)
        return M.EnrollResult(agent_id=agent_id, key_id=key.key_id, api_key=key.api_key)

    def _rate_limit(self) -> None:
        rate = self.cp.settings.enroll_rate
        now = time.monotonic()
        self._enroll_tokens = min(rate, self._enroll_tokens + (now - self._enroll_at) * rate)
        self._enroll_at = now
        if self._enroll_tokens < 1:
            raise ApiError(
                429, "rate_limited", "too many enrollments; retry in a second", [{"retry_after": 1}]
            )
        self._enroll_tokens -= 1


def _labels(labels: list[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        label = label.strip()
        if not label:
            continue
        if label not in out:
            out.append(label)
    return out
