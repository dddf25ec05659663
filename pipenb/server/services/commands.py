"""Commands queued per agent until acknowledged: restart, reset-checkpoint, capture."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server import roles
from pipenb.server.security import new_id
from pipenb.server.services.pipes import not_found
from pipenb.server.tables import AssignmentRow, CommandRow, DeploymentRow, utcnow

if TYPE_CHECKING:
    from pipenb.server.core import ControlPlane


def _model(r: CommandRow) -> M.Command:
    return M.Command(
        id=r.id,
        agent_id=r.agent_id,
        deployment_id=r.deployment_id,
        type=r.type,  # type: ignore[arg-type]
        args=dict(r.args or {}),
        created_at=r.created_at,
        acked_at=r.acked_at,
        result=r.result,
        issuer=r.issuer,
    )


class CommandService:
    def __init__(self, cp: ControlPlane):
        self.cp = cp

    def create(self, dep_id: str, body: M.CommandCreate) -> M.CommandList:
        with self.cp.session() as s:
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
                self.cp.deployments.reset_checkpoint(dep_id, agent_id)
        self.cp.live.pending_commands.update(agents)
        # a command rides on the next check-in answer; what the agents run is unchanged (a
        # checkpoint reset already dropped their cached desired set above)
        self.cp.live.wake(*agents)
        return M.CommandList(commands=[_model(r) for r in rows])

    def get(self, command_id: str) -> M.Command:
        with self.cp.session() as s:
            row = s.get(CommandRow, command_id)
            if row is None:
                raise not_found("command", command_id)
            return _model(row)

    def list(self, dep_id: str) -> M.CommandList:
        with self.cp.session() as s:
            rows = s.scalars(
                select(CommandRow)
                .where(CommandRow.deployment_id == dep_id)
                .order_by(CommandRow.created_at)
            ).all()
            return M.CommandList(commands=[_model(r) for r in rows])

    def pending(self, agent_id: str) -> list[M.AgentCommand]:
        if agent_id not in self.cp.live.pending_commands:
            return []
        with self.cp.session() as s:
            rows = s.scalars(
                select(CommandRow)
                .where(CommandRow.agent_id == agent_id, CommandRow.acked_at.is_(None))
                .order_by(CommandRow.created_at)
                # no more than a check-in may ack (or carry captures of) at once
                .limit(M.MAX_CHECKIN_CAPTURES)
            ).all()
            if not rows:
                self.cp.live.pending_commands.discard(agent_id)
            return [
                M.AgentCommand(
                    id=r.id, type=r.type, deployment_id=r.deployment_id, args=dict(r.args or {})
                )  # type: ignore[arg-type]
                for r in rows
            ]

    def ack(self, s, agent_id: str, acks: list[str], captures: list[M.Capture]) -> None:  # type: ignore[no-untyped-def]
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
