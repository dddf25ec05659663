"""The agent check-in: the hot path of the server.

An agent with nothing new costs a cached key check, a presence update in memory, and the cached
desired set; nothing is written to the database. When the agent already runs what it should
(``desired_hash`` matches) and no command waits, the request is held (long poll) until something
changes for that agent or the hold expires, so a deploy reaches the agent in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from pipenb.errors import AuthError
from pipenb.server import models as M
from pipenb.server.db_tables import AgentRow, AssignmentRow, DeploymentRow, PipeStatusRow, utcnow

if TYPE_CHECKING:
    from pipenb.server.db import SessionScope
    from pipenb.server.dbpool import DbPool
    from pipenb.server.live import Live
    from pipenb.server.services.agent_settings import AgentSettingsService
    from pipenb.server.services.commands import CommandService
    from pipenb.server.services.deployments import DeploymentService
    from pipenb.server.services.telemetry import TelemetryService
    from pipenb.server.settings import ServerSettings


#: states of a pipe that should run and does not: its agent is ``degraded``
NOT_RUNNING = ("failed", "refused")


class CheckinService:
    def __init__(
        self,
        settings: ServerSettings,
        session: SessionScope,
        live: Live,
        db: DbPool,
        deployments: DeploymentService,
        commands: CommandService,
        agent_settings: AgentSettingsService,
        telemetry: TelemetryService,
    ):
        self.settings = settings
        self.session = session
        self.live = live
        self.db = db
        self.deployments = deployments
        self.commands = commands
        self.agent_settings = agent_settings
        self.telemetry = telemetry

    async def checkin(
        self,
        key_agent: str,
        body: M.CheckinRequest,
        closed: asyncio.Future[None] | None = None,
        recheck: Callable[[], object] | None = None,
    ) -> M.CheckinResponse:
        """``recheck`` authenticates the request's key again: called when a held check-in is
        woken, so that revoking the key or removing the agent answers it 401 at once."""
        if body.agent_id != key_agent:
            raise AuthError(
                403,
                "forbidden",
                f"this API key belongs to agent {key_agent!r}, not {body.agent_id!r}",
            )
        agent_id = body.agent_id
        live = self.live
        live.wake(agent_id)  # a newer check-in supersedes a held one
        p = live.seen(agent_id, self.settings.offline_seconds)
        full_report = not body.full and (p.seq < 0 or body.seq != p.seq + 1)
        p.seq = body.seq
        if body.full:
            p.failed = {r.deployment_id for r in body.pipes if r.state in NOT_RUNNING}
        else:
            for r in body.pipes:
                if r.state in NOT_RUNNING:
                    p.failed.add(r.deployment_id)
                else:
                    p.failed.discard(r.deployment_id)
        if (
            body.pipes
            or body.acks
            or body.captures
            or body.logs
            or body.attributes is not None
            or body.full
        ):
            gone, labels = await self.db.run(self._write, agent_id, body)
        else:
            gone, labels = [], None
        if body.leaving:
            live.leave(agent_id)  # hand its failover instances over now (here or elsewhere)
        settings = self.agent_settings
        if settings.shared:  # kept in the database for the other processes: off the event loop
            await self.db.run(settings.report, agent_id, body)
        else:
            settings.report(agent_id, body)
        desired, dhash, commands, (values, sver) = await self._answer(agent_id)
        # an agent that says nothing of settings is not sent any (nor kept from a long poll)
        applied = body.settings.version if body.settings is not None else sver
        hold = min(body.wait, self.settings.long_poll)
        idle = not body.leaving and not commands and not full_report and agent_id not in live.gone
        if (
            hold > 0
            and idle
            and body.desired_hash == dhash
            and applied == sver
            and await live.wait(agent_id, hold, closed)
        ):
            if recheck is not None:
                # AuthError: the key was revoked or the agent removed meanwhile
                await self.db.run(recheck)
            desired, dhash, commands, (values, sver) = await self._answer(agent_id)
        return M.CheckinResponse(
            settings=values if applied != sver else None,
            settings_version=sver,
            seq=body.seq,
            desired=desired,
            desired_hash=dhash,
            commands=commands,
            poll_interval=self.settings.poll_interval,
            full_report=full_report,
            labels=labels,
            gone=sorted({*gone, *live.gone.pop(agent_id, ())}),
        )

    async def _answer(self, agent_id: str) -> tuple[Any, str, Any, tuple[dict[str, Any], str]]:
        """The agent's desired set, pending commands and settings: from memory when all three
        are cached (the common check-in), else read on a worker thread (dbpool.py)."""
        if (
            agent_id in self.live.desired_cache
            and agent_id not in self.live.pending_commands
            and self.agent_settings.cached(agent_id)
        ):
            return self._read_answer(agent_id)
        return await self.db.run(self._read_answer, agent_id)

    def _read_answer(self, agent_id: str) -> tuple[Any, str, Any, tuple[dict[str, Any], str]]:
        desired, dhash = self.deployments.desired(agent_id)
        commands = self.commands.pending(agent_id)
        return desired, dhash, commands, self.agent_settings.effective(agent_id)

    def _write(self, agent_id: str, body: M.CheckinRequest) -> tuple[list[str], list[str] | None]:
        """Store the report; answer the reported deployments that no longer exist (the agent
        cleans up their files) and, for a full report, the agent's labels."""
        gone: list[str] = []
        labels: list[str] | None = None
        with self.session() as s:
            if body.attributes is not None or body.full:
                agent = s.get(AgentRow, agent_id)
                if agent is not None:
                    labels = list(agent.labels or [])
                if (
                    agent is not None
                    and body.attributes is not None
                    and agent.attributes != body.attributes
                ):
                    policy_changed = (agent.attributes or {}).get("policy") != (
                        body.attributes.get("policy")
                    )
                    agent.attributes = body.attributes
                    if policy_changed:  # placed instances meet the policy it has now
                        s.flush()
                        self.deployments.check_policies(s, agent_ids=[agent_id])
            now = utcnow()
            # Only deployments placed on this agent are its to report on: status, metrics and
            # logs for any other id are dropped (a rogue key cannot write into deployments it
            # does not run). One indexed query, then set lookups, however long the report.
            assigned = set(
                s.scalars(
                    select(AssignmentRow.deployment_id).where(AssignmentRow.agent_id == agent_id)
                )
            )
            reported = set()
            for r in body.pipes:
                if r.deployment_id not in assigned:
                    # e.g. the final report of a pipe whose deployment was deleted or moved:
                    # a row kept for it would never be removed. A deleted one is answered as
                    # gone, so the agent cleans up its files.
                    if s.get(DeploymentRow, r.deployment_id) is None:
                        gone.append(r.deployment_id)
                    continue
                reported.add(r.deployment_id)
                row = s.get(PipeStatusRow, (agent_id, r.deployment_id))
                if row is None:
                    row = PipeStatusRow(
                        agent_id=agent_id, deployment_id=r.deployment_id, state=r.state
                    )
                    s.add(row)
                row.hash = r.hash
                row.state = r.state
                row.error = r.error
                if r.metrics is not None:
                    row.metrics = r.metrics
                if r.checkpoint is not None:
                    row.checkpoint = r.checkpoint
                row.updated_at = now
            if body.full:  # what the agent no longer runs is no longer its status
                for row in s.scalars(
                    select(PipeStatusRow).where(PipeStatusRow.agent_id == agent_id)
                ):
                    if row.deployment_id not in reported:
                        s.delete(row)
            self.telemetry.record(s, agent_id, body.pipes, body.logs, assigned)
            if body.acks or body.captures:
                self.commands.ack(s, agent_id, body.acks, body.captures)
        return gone, labels
