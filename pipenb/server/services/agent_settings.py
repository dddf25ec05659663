"""Settings the server gives agents, per label or per agent, delivered in the check-in answer.

An agent's settings are its labels' (in label order) with its own on top; their ``version`` is a
hash of the merged values, so the agent reports which version it applied (and which keys its
own bounds refused) and the server sends settings only when the agent's version differs. The
merged settings are cached per agent: a check-in costs no database read for them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from pipenb.agent.remote_settings import SettingError, parse, version
from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server import roles
from pipenb.server.db import in_chunks
from pipenb.server.db_tables import AgentRow, AgentSettingsRow, utcnow
from pipenb.server.services.pipes import not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.live import Live


#: scope of the row that keeps what an agent last said it applied (several server processes)
APPLIED = "applied:"


@dataclass
class Applied:
    """What an agent last said it applied (in memory: it says so again after a restart)."""

    version: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    bounds: dict[str, Any] = field(default_factory=dict)


class AgentSettingsService:
    def __init__(self, session: SessionScope, live: Live, shared: bool = False):
        self.session = session
        self.live = live
        #: several server processes on one database (coordination.py): what an agent applied
        #: is kept in the database, since any process may be asked to show it
        self.shared = shared
        self._cache: dict[str, tuple[dict[str, Any], str]] = {}
        self._dropped = 0  # bumped when cached settings go stale: see effective()
        self.applied: dict[str, Applied] = {}

    # ------------------------------------------------------------------ writing
    def set(self, body: M.AgentSettingsSet) -> M.AgentSettingsScopeList:
        """Change the settings of agents (``agent``) or labels (``labels``): a value of None
        removes that key (the agent's command line decides again)."""
        scopes = [f"label:{x}" for x in body.labels] + (
            [f"agent:{body.agent}"] if body.agent else []
        )
        if not scopes:
            raise ApiError(400, "bad_request", "say whose settings: labels or agent")
        checked: dict[str, Any] = {}
        for key, value in body.values.items():
            try:
                if value is not None:
                    parse(key, value)
            except SettingError as exc:
                raise ApiError(400, "invalid_setting", str(exc)) from None
            checked[key] = value
        with self.session() as s:
            if body.agent and s.get(AgentRow, body.agent) is None:
                raise not_found("agent", body.agent)
            for scope in scopes:
                row = s.get(AgentSettingsRow, scope)
                if row is None:
                    row = AgentSettingsRow(scope=scope, values={})
                    s.add(row)
                values = dict(row.values or {})
                for key, value in checked.items():
                    if value is None:
                        values.pop(key, None)
                    else:
                        values[key] = value
                row.values = values
                row.updated_at = utcnow()
                row.updated_by = roles.current_name()
        self.changed()
        return self.list()

    def changed(self, publish: bool = True) -> None:
        """Settings changed: merge again, and answer held check-ins with them now (here and,
        unless this is another process's news, in the other processes)."""
        self._dropped += 1  # a merge read on a worker thread before this is not cached
        self._cache.clear()
        self.live.wake(*list(self.live.waiters))
        if publish:
            self.live.publish("settings")

    def list(self) -> M.AgentSettingsScopeList:
        with self.session() as s:
            rows = s.scalars(
                select(AgentSettingsRow)
                .where(~AgentSettingsRow.scope.startswith(APPLIED))
                .order_by(AgentSettingsRow.scope)
            ).all()
            return M.AgentSettingsScopeList(
                scopes=[
                    M.AgentSettingsScope(
                        scope=r.scope,
                        values=dict(r.values or {}),
                        updated_at=r.updated_at,
                        updated_by=r.updated_by,
                    )
                    for r in rows
                ]
            )

    # ------------------------------------------------------------------ reading
    def effective(self, agent_id: str) -> tuple[dict[str, Any], str]:
        """The agent's merged settings and their version."""
        hit = self._cache.get(agent_id)
        if hit is not None:
            return hit
        with self.session() as s:
            return self.effective_many(s, [agent_id])[agent_id]

    def effective_many(
        self, s: Session, agent_ids: Collection[str]
    ) -> dict[str, tuple[dict[str, Any], str]]:
        """``effective`` for several agents in two queries (agents met for the first time
        arrive together when a fleet starts)."""
        dropped = self._dropped  # on a worker thread: a change meanwhile must not be cached over
        out = {a: self._cache[a] for a in agent_ids if a in self._cache}
        need = sorted({a for a in agent_ids if a not in out})
        labels: dict[str, Sequence[str]] = dict.fromkeys(need, ())
        for chunk in in_chunks(need):
            for agent_id, agent_labels in s.execute(
                select(AgentRow.id, AgentRow.labels).where(AgentRow.id.in_(chunk))
            ):
                labels[agent_id] = sorted(agent_labels or [])
        scopes = {f"label:{x}" for ls in labels.values() for x in ls} | {f"agent:{a}" for a in need}
        rows: dict[str, AgentSettingsRow] = {}
        for chunk in in_chunks(sorted(scopes)):
            for r in s.scalars(select(AgentSettingsRow).where(AgentSettingsRow.scope.in_(chunk))):
                rows[r.scope] = r
        for agent_id in need:
            values: dict[str, Any] = {}
            for scope in [f"label:{x}" for x in labels[agent_id]] + [f"agent:{agent_id}"]:
                if scope in rows:
                    values.update(rows[scope].values or {})
            out[agent_id] = (values, version(values))
            if self._dropped == dropped:
                self._cache[agent_id] = out[agent_id]
        return out

    def cached(self, agent_id: str) -> bool:
        """Are the agent's settings known without reading the database?"""
        return agent_id in self._cache

    def forget(self, agent_id: str, publish: bool = True) -> None:
        """The agent's labels changed (or it was removed): merge again next time."""
        self._dropped += 1
        self._cache.pop(agent_id, None)
        if publish:
            self.live.publish("forget", [agent_id])

    def report(self, agent_id: str, body: M.CheckinRequest) -> None:
        if body.settings is None:
            return
        applied = Applied(
            body.settings.version, dict(body.settings.refused), dict(body.settings.bounds)
        )
        if self.applied.get(agent_id) == applied:
            return
        self.applied[agent_id] = applied
        if self.shared:  # whichever process is asked shows it: keep it in the database
            with self.session() as s:
                row = s.get(AgentSettingsRow, APPLIED + agent_id)
                if row is None:
                    row = AgentSettingsRow(scope=APPLIED + agent_id, values={})
                    s.add(row)
                row.values = asdict(applied)
                row.updated_at = utcnow()

    def _applied(self, agent_id: str) -> Applied:
        if self.shared:
            with self.session() as s:
                row = s.get(AgentSettingsRow, APPLIED + agent_id)
                if row is not None:
                    return Applied(**(row.values or {}))
        return self.applied.get(agent_id, Applied())

    def show(self, agent_id: str) -> M.AgentSettingsView:
        with self.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
        values, ver = self.effective(agent_id)
        applied = self._applied(agent_id)
        return M.AgentSettingsView(
            agent_id=agent_id,
            values=values,
            version=ver,
            applied_version=applied.version,
            refused=applied.refused,
            bounds=applied.bounds,
        )
