"""Agents: added by hand or enrolled, their labels, their API keys, and key authentication."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from pipenb.errors import ApiError, AuthError
from pipenb.server import convert
from pipenb.server import models as M
from pipenb.server.db_tables import (
    AgentRow,
    ApiKeyRow,
    AssignmentRow,
    DeploymentRow,
    PipeStatusRow,
    RemovedAgentRow,
    utcnow,
)
from pipenb.server.expiry import aware, expiry
from pipenb.server.security import hash_secret, new_api_key, same_secret, split_api_key
from pipenb.server.services.pipes import not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.live import Live
    from pipenb.server.services.agent_settings import AgentSettingsService
    from pipenb.server.services.deployments import DeploymentService
    from pipenb.server.settings import ServerSettings

#: ``Session.info`` key: ``Live.keys_epoch`` when a group's keys were read (``read_keys``)
_KEYS_EPOCH = "pipenb_keys_epoch"


class AgentService:
    def __init__(
        self,
        settings: ServerSettings,
        session: SessionScope,
        live: Live,
        deployments: DeploymentService,
        agent_settings: AgentSettingsService,
    ):
        self.settings = settings
        self.session = session
        self.live = live
        self.deployments = deployments
        self.agent_settings = agent_settings

    # ------------------------------------------------------------------ reading
    def state(self, agent_id: str) -> str:
        return agent_state(self.live, self.settings.offline_seconds, agent_id)

    def _model(self, row: AgentRow, pipes: int = 0, refused: int = 0) -> M.Agent:
        seen = self.live.last_seen_of(row.id)  # this process's, or another's if later
        last_seen = row.last_seen
        if seen:
            from datetime import datetime, timezone

            last_seen = datetime.fromtimestamp(seen, timezone.utc)
        return convert.agent(
            row, state=self.state(row.id), last_seen=last_seen, pipes=pipes, refused=refused
        )

    def list(self) -> M.AgentList:
        with self.session() as s:
            counts = dict(
                s.execute(
                    select(AssignmentRow.agent_id, func.count()).group_by(AssignmentRow.agent_id)
                ).all()
            )
            refused = dict(
                s.execute(
                    select(PipeStatusRow.agent_id, func.count())
                    .where(PipeStatusRow.state == "refused")
                    .group_by(PipeStatusRow.agent_id)
                ).all()
            )
            rows = s.scalars(select(AgentRow).order_by(AgentRow.id)).all()
            return M.AgentList(
                agents=[self._model(r, counts.get(r.id, 0), refused.get(r.id, 0)) for r in rows]
            )

    def get(self, agent_id: str) -> M.Agent:
        with self.session() as s:
            return self._get(s, agent_id)

    def _get(self, s: Session, agent_id: str) -> M.Agent:
        """The agent with its counts, read in the caller's session."""
        row = s.get(AgentRow, agent_id)
        if row is None:
            raise not_found("agent", agent_id)
        n = s.scalar(
            select(func.count())
            .select_from(AssignmentRow)
            .where(AssignmentRow.agent_id == agent_id)
        )
        refused = s.scalar(
            select(func.count())
            .select_from(PipeStatusRow)
            .where(PipeStatusRow.agent_id == agent_id, PipeStatusRow.state == "refused")
        )
        return self._model(row, n or 0, refused or 0)

    # ------------------------------------------------------------------ writing
    def add(
        self, body: M.AgentCreate, *, enrolled: bool = False, attributes: dict | None = None
    ) -> M.Agent:
        # one transaction: the agent and its instances
        with self.deployments.placing() as (s, wake):
            if s.get(AgentRow, body.id) is not None:
                raise ApiError(409, "exists", f"agent {body.id!r} exists already")
            row = AgentRow(
                id=body.id,
                name=body.name or body.id,
                labels=clean_labels(body.labels),
                attributes=attributes or {},
                enrolled=enrolled,
                created_at=utcnow(),
            )
            s.add(row)
            s.flush()
            wake.update(self.deployments.place_agents_in(s, [body.id]))
            return self._get(s, body.id)

    def update(self, agent_id: str, body: M.AgentUpdate) -> M.Agent:
        with self.deployments.placing() as (s, wake):
            row = s.get(AgentRow, agent_id)
            if row is None:
                raise not_found("agent", agent_id)
            if body.name is not None:
                row.name = body.name
            if body.labels is not None:
                row.labels = clean_labels(body.labels)
                s.flush()
                wake.update(self.deployments.place_agents_in(s, [agent_id]))
            wake.add(agent_id)
            answer = self._get(s, agent_id)
        self.agent_settings.forget(agent_id)  # its labels' settings may differ now
        return answer

    def remove(self, agent_id: str) -> None:
        """Remove an agent and its keys. Its held check-in is answered 401 at once (the agent
        stops its pipes and exits), and enrollment never hands its id out again."""
        with self.deployments.placing() as (s, wake):
            row = s.get(AgentRow, agent_id)
            if row is None:
                raise not_found("agent", agent_id)
            key_ids = s.scalars(select(ApiKeyRow.id).where(ApiKeyRow.agent_id == agent_id)).all()
            # counted deployments lose an instance with it: they are placed again
            held = s.scalars(
                select(AssignmentRow.deployment_id)
                .join(DeploymentRow, DeploymentRow.id == AssignmentRow.deployment_id)
                .where(AssignmentRow.agent_id == agent_id, DeploymentRow.instances != -1)
            ).all()
            s.query(PipeStatusRow).filter(PipeStatusRow.agent_id == agent_id).delete()
            s.delete(row)
            if s.get(RemovedAgentRow, agent_id) is None:
                s.add(RemovedAgentRow(id=agent_id, removed_at=utcnow()))
            if held:
                s.flush()
                wake.update(self.deployments.place_in(s, list(held)))
        self.live.agent_removed(agent_id, list(key_ids))  # here and in the other processes

    # ------------------------------------------------------------------ keys
    def key_row(self, agent_id: str, expires_at: datetime | None) -> tuple[ApiKeyRow, str]:
        """A new key's row (its hash) and the key itself, which is shown once."""
        key_id, api_key = new_api_key()
        secret = split_api_key(api_key)[1]  # type: ignore[index]
        row = ApiKeyRow(
            id=key_id,
            agent_id=agent_id,
            hash=hash_secret(secret),
            created_at=utcnow(),
            expires_at=expires_at,
        )
        return row, api_key

    def create_key(self, agent_id: str, body: M.ApiKeyCreate | None = None) -> M.ApiKeyCreated:
        body = body or M.ApiKeyCreate()
        expires_at = expiry(body.expires_in, body.expires_at)
        with self.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
            row, api_key = self.key_row(agent_id, expires_at)
            s.add(row)
        return M.ApiKeyCreated(
            key_id=row.id, agent_id=agent_id, api_key=api_key, expires_at=expires_at
        )

    def keys(self, agent_id: str) -> M.ApiKeyList:
        with self.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
            rows = s.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.agent_id == agent_id)
                .order_by(ApiKeyRow.created_at)
            ).all()
            return M.ApiKeyList(keys=[convert.api_key(r) for r in rows])

    def revoke_key(self, agent_id: str, key_id: str) -> None:
        """Revoke a key: the agent's held check-in is answered 401 now, not when it ends."""
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.agent_id != agent_id:
                raise not_found("key", key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        # the held check-in (in whichever process) re-checks its key when woken
        self.live.key_revoked(key_id, agent_id)

    def cached_agent(self, api_key: str | None) -> str | None:
        """``authenticate`` from memory alone: the agent id, an AuthError, or None when the key
        is not in the cache (then ``authenticate`` reads it, on a worker thread)."""
        parts = split_api_key(api_key or "")
        if parts is None or parts[0] not in self.live.key_cache:
            return None
        return self.authenticate(api_key)

    def read_keys(self, s: Session, api_keys: Sequence[str | None]) -> None:
        """Read the rows of a group of keys not cached yet in one statement (a fleet meeting a
        process: every agent's first check-in misses the cache). ``check_key`` then finds each
        in the session, without a statement of its own."""
        ids = sorted(
            {
                p[0]
                for k in api_keys
                if (p := split_api_key(k or "")) and p[0] not in self.live.key_cache
            }
        )
        if ids:
            # a key revoked after this read must not be cached from it (see authenticate)
            s.info[_KEYS_EPOCH] = self.live.keys_epoch
            # kept in the session: its identity map holds rows only while someone else does
            s.info["pipenb_key_rows"] = list(
                s.scalars(select(ApiKeyRow).where(ApiKeyRow.id.in_(ids)))
            )

    def check_key(self, s: Session, api_key: str | None) -> str | AuthError:
        """``authenticate`` in a group's session (``read_keys``): a refused key is this key's
        answer, not the group's failure."""
        try:
            return self.authenticate(api_key, s)
        except AuthError as exc:
            return exc

    def authenticate(self, api_key: str | None, session: Session | None = None) -> str:
        """The agent id an API key belongs to; AuthError saying whether the key is missing,
        invalid, revoked, expired, or its agent was removed (an agent acts on the difference).
        ``session``: read the key there (a group's, see ``read_keys``) rather than in one of
        its own."""
        parts = split_api_key(api_key or "")
        if parts is None:
            raise AuthError(
                401, "unauthorized", "an agent API key is required (Authorization: Bearer pnb_...)"
            )
        key_id, secret = parts
        live = self.live
        cached = live.key_cache.get(key_id)
        if cached is None:
            epoch = (
                live.keys_epoch
                if session is None
                else session.info.get(_KEYS_EPOCH, live.keys_epoch)
            )
            with nullcontext(session) if session is not None else self.session() as s:
                row = s.get(ApiKeyRow, key_id)
                if row is None:
                    removed = live.removed_keys.get(key_id)
                    if removed is not None:
                        raise AuthError(
                            401,
                            "agent_removed",
                            f"agent {removed!r} was removed from this server",
                        )
                    raise AuthError(401, "invalid_key", "invalid API key")
                if not same_secret(secret, row.hash):
                    raise AuthError(401, "invalid_key", "invalid API key")
                if row.revoked_at is not None:
                    raise AuthError(401, "key_revoked", f"API key {key_id} was revoked")
                expires = aware(row.expires_at)
                cached = (row.hash, row.agent_id, expires.timestamp() if expires else None)
            if live.keys_epoch == epoch:
                live.key_cache[key_id] = cached
        if not same_secret(secret, cached[0]):
            raise AuthError(401, "invalid_key", "invalid API key")
        if cached[2] is not None and time.time() >= cached[2]:
            raise AuthError(401, "key_expired", f"API key {key_id} has expired")
        return cached[1]


def agent_state(live: Live, offline_after: float, agent_id: str) -> str:
    """``offline``, ``degraded`` (a pipe failed there) or ``online``: from presence alone (this
    process's, or what the database says of the others')."""
    if not live.is_online(agent_id, offline_after):
        return "offline"
    return "degraded" if live.is_failing(agent_id) else "online"


def clean_labels(labels: list[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        label = label.strip()
        if not label:
            continue
        if label not in out:
            out.append(label)
    return out
