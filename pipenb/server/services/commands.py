"""Commands queued per agent until acknowledged: restart, reset-checkpoint, capture, preview.

Nothing is kept for ever: each type has an expiry (``EXPIRY``) for a command no agent took
(its agent is away) and for one done, with its result. A preview carries a pipe's text (not a
deployment), and only the user who asked may read its answer.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy import delete, select

from pipenb.errors import ApiError
from pipenb.server import convert, roles
from pipenb.server import models as M
from pipenb.server.db_tables import AssignmentRow, CommandRow, DeploymentRow, utcnow
from pipenb.server.expiry import aware
from pipenb.server.security import new_id
from pipenb.server.services.pipes import not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.live import Live
    from pipenb.server.services.deployments import DeploymentService
    from pipenb.server.settings import ServerSettings


#: type -> (seconds an unacknowledged command waits for its agent, seconds a done one is kept)
EXPIRY: dict[str, tuple[float, float]] = {
    "restart": (3600.0, 86400.0),
    "reset-checkpoint": (3600.0, 86400.0),
    "capture": (600.0, 3600.0),
    # a preview waits for its agent no longer than its own timeout and a margin (the user is
    # waiting for it); its events are the user's data and are kept ten minutes
    "preview": (330.0, 600.0),
}
PREVIEW_MARGIN = 30.0  # seconds a preview may take beyond its input timeout (start, send back)


def expiry_list() -> M.CommandExpiryList:
    return M.CommandExpiryList(
        expiry=[
            M.CommandExpiry(type=t, pending_seconds=p, kept_seconds=k)  # type: ignore[arg-type]
            for t, (p, k) in EXPIRY.items()
        ]
    )


def expires_at(r: CommandRow) -> datetime:
    pending, kept = EXPIRY.get(r.type, (3600.0, 3600.0))
    if r.acked_at is not None:
        return aware(r.acked_at) + timedelta(seconds=kept)
    if r.type == "preview":
        pending = float((r.args or {}).get("timeout") or 10.0) + PREVIEW_MARGIN
    return aware(r.created_at) + timedelta(seconds=pending)


def _model(r: CommandRow) -> M.Command:
    return convert.command(r, expires_at=expires_at(r))


class CommandService:
    def __init__(
        self,
        settings: ServerSettings,
        session: SessionScope,
        live: Live,
        deployments: DeploymentService,
    ):
        self.settings = settings
        self.session = session
        self.live = live
        self.deployments = deployments

    def create(self, dep_id: str, body: M.CommandCreate) -> M.CommandList:
        if body.type == "preview":
            raise ApiError(
                400,
                "bad_request",
                "type: a preview is not a deployment's command; POST /agents/{id}/previews",
            )
        self.prune()
        with self.session() as s:
            if s.get(DeploymentRow, dep_id) is None:
                raise not_found("deployment", dep_id)
            agents = s.scalars(
                select(AssignmentRow.agent_id).where(AssignmentRow.deployment_id == dep_id)
            ).all()
            if body.agent is not None:
                if body.agent not in agents:
                    raise ApiError(
                        400,
                        "bad_request",
                        f"deployment {dep_id} does not run on agent {body.agent!r}",
                    )
                agents = [body.agent]
            if not agents:
                raise ApiError(409, "not_placed", f"deployment {dep_id} runs on no agent yet")
            args: dict = {}
            if body.type == "capture":
                args = {"stage": body.stage or "output", "limit": body.limit}
            rows = []
            for agent_id in agents:
                row = CommandRow(
                    id=new_id("cmd-"),
                    agent_id=agent_id,
                    deployment_id=dep_id,
                    type=body.type,
                    args=args,
                    created_at=utcnow(),
                    issuer=roles.current_name(),
                )
                s.add(row)
                rows.append(row)
        if body.type == "reset-checkpoint":
            for agent_id in agents:
                self.deployments.reset_checkpoint(dep_id, agent_id)
        # a command rides on the next check-in answer; what the agents run is unchanged (a
        # checkpoint reset already dropped their cached desired set above)
        self.live.commands_for(*agents)
        return M.CommandList(commands=[_model(r) for r in rows])

    def get(self, command_id: str) -> M.Command:
        with self.session() as s:
            row = s.get(CommandRow, command_id)
            if row is None or expires_at(row) <= utcnow():
                raise not_found("command", command_id)
            if row.type == "preview":
                _owner_only(row)
            return _model(row)

    # ------------------------------------------------------------------ previews
    def create_preview(self, agent_id: str, body: M.PreviewCreate) -> M.Preview:
        """Queue a preview of ``body.yaml`` on one agent; refused at once when it is offline
        (nobody would run it) or unknown."""
        from pipenb.server.db_tables import AgentRow

        self.prune()
        with self.session() as s:
            if s.get(AgentRow, agent_id) is None:
                raise not_found("agent", agent_id)
        if not self.live.is_online(agent_id, self.settings.offline_seconds):
            raise ApiError(
                409,
                "agent_offline",
                f"agent {agent_id} is offline (no check-in for {self.settings.offline_seconds:g}"
                " s): a preview needs the agent running; start it, or preview on another agent",
            )
        with self.session() as s:
            row = CommandRow(
                id=new_id("cmd-"),
                agent_id=agent_id,
                deployment_id="",
                type="preview",
                args={
                    "yaml": body.yaml,
                    "params": body.params,
                    "limit": body.limit,
                    "timeout": body.timeout,
                },
                created_at=utcnow(),
                issuer=roles.current_name(),
            )
            s.add(row)
            preview = self._preview(row)
        self.live.commands_for(agent_id)
        return preview

    def get_preview(self, command_id: str) -> M.Preview:
        with self.session() as s:
            row = s.get(CommandRow, command_id)
            if row is None or row.type != "preview":
                raise not_found("preview", command_id)
            _owner_only(row)
            return self._preview(row)

    def _preview(self, row: CommandRow) -> M.Preview:
        until = expires_at(row)
        result = row.result or {}
        error = result.get("error")
        if row.acked_at is not None:
            state = "failed" if error else "done"
        elif until <= utcnow():
            state = "expired"
            error = (
                f"agent {row.agent_id} did not answer the preview in time (offline, or its "
                "input too slow); the preview is dropped"
            )
        elif not self.live.is_online(row.agent_id, self.settings.offline_seconds):
            state = "failed"
            error = f"agent {row.agent_id} went offline before it answered the preview"
        else:
            state = "pending"
        return M.Preview(
            id=row.id,
            agent_id=row.agent_id,
            state=state,  # type: ignore[arg-type]
            error=error,
            result=result.get("preview") if row.acked_at is not None else None,
            created_at=row.created_at,
            expires_at=until,
        )

    def prune(self) -> None:
        """Forget commands past their expiry (done or not): a bounded table, and a user's
        preview events gone after their time."""
        now = utcnow()
        with self.session() as s:
            for kind, (pending, kept) in EXPIRY.items():
                s.execute(
                    delete(CommandRow).where(
                        CommandRow.type == kind,
                        CommandRow.acked_at.is_not(None),
                        CommandRow.acked_at < now - timedelta(seconds=kept),
                    )
                )
                s.execute(
                    delete(CommandRow).where(
                        CommandRow.type == kind,
                        CommandRow.acked_at.is_(None),
                        CommandRow.created_at < now - timedelta(seconds=pending + kept),
                    )
                )

    def list(self, dep_id: str) -> M.CommandList:
        with self.session() as s:
            rows = s.scalars(
                select(CommandRow)
                .where(CommandRow.deployment_id == dep_id)
                .order_by(CommandRow.created_at)
            ).all()
            return M.CommandList(commands=[_model(r) for r in rows])

    # ``builtins.list``: inside this class ``list`` is the method above
    def pending(self, agent_id: str) -> builtins.list[M.AgentCommand]:
        if agent_id not in self.live.pending_commands:
            return []
        with self.session() as s:
            rows = s.scalars(
                select(CommandRow)
                .where(CommandRow.agent_id == agent_id, CommandRow.acked_at.is_(None))
                .order_by(CommandRow.created_at)
                # no more than a check-in may ack (or carry captures of) at once
                .limit(M.MAX_CHECKIN_CAPTURES)
            ).all()
            now = utcnow()
            rows = [r for r in rows if expires_at(r) > now]  # not run after its time
            if not rows:
                self.live.pending_commands.discard(agent_id)
            return [
                M.AgentCommand(
                    id=r.id,
                    type=cast("M.CommandType", r.type),  # written only from a CommandType
                    deployment_id=r.deployment_id,
                    args=dict(r.args or {}),
                )
                for r in rows
            ]

    def ack(
        self,
        s: Session,
        agent_id: str,
        acks: builtins.list[str],
        captures: builtins.list[M.Capture],
    ) -> None:
        """Within the check-in's transaction: mark commands done, keep captured events."""
        results = {c.command_id: c for c in captures}
        for cid in {*acks, *results}:
            row = s.get(CommandRow, cid)
            if row is None or row.agent_id != agent_id:  # another agent's command: ignore
                continue
            if row.acked_at is None:
                row.acked_at = utcnow()
            cap = results.get(cid)
            if cap is not None:
                row.result = {"events": cap.events, "error": cap.error}
                if row.type == "preview":
                    row.result = {"preview": cap.result, "error": cap.error}


def _owner_only(row: CommandRow) -> None:
    """A preview's events are the asking user's: anyone else is told it does not exist."""
    if row.issuer != roles.current_name():
        raise not_found("preview", row.id)
