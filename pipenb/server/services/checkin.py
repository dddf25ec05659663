"""The agent check-in: the hot path of the server.

An agent with nothing new costs a cached key check, a presence update in memory, and the cached
desired set; nothing is written to the database. When the agent already runs what it should
(``desired_hash`` matches) and no command waits, the request is held (long poll) until something
changes for that agent or the hold expires, so a deploy reaches the agent in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipenb.errors import AuthError
from pipenb.server import models as M
from pipenb.server.db_tables import AgentRow, AssignmentRow, DeploymentRow, PipeStatusRow, utcnow
from pipenb.server.groupcommit import READ_GROUPS, GroupCommit

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
        # in agent id order, as the presence flush writes agents (jobs.py): no deadlock
        self.writes = GroupCommit(
            db, session, self._write, self._prepare, order=lambda item: item[0]
        )
        self.answers = GroupCommit(
            db,
            session,
            lambda _s, agent_id: self._read_answer(agent_id),
            self._prepare_answers,
            parallel=READ_GROUPS,
        )

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
            # committed with the other check-ins' reports waiting now (groupcommit.py)
            gone, labels = await self.writes.write((agent_id, body))
        else:
            gone, labels = [], None
        if body.leaving:
            live.leave(agent_id)  # hand its failover instances over now (here or elsewhere)
        settings = self.agent_settings
        if settings.shared and body.settings is not None:
            # kept in the database for the other processes: off the event loop
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
        are cached (the common check-in, and a first check-in whose report group read them:
        ``_prepare``), else read on a worker thread (dbpool.py), together with the other
        agents' answers waiting to be read (a deploy wakes its agents at once)."""
        if self._answer_cached(agent_id) and agent_id not in self.live.pending_commands:
            return self._read_answer(agent_id)
        return await self.answers.write(agent_id)

    def _answer_cached(self, agent_id: str) -> bool:
        return agent_id in self.live.desired_cache and self.agent_settings.cached(agent_id)

    def _prepare_answers(self, s: Session, agent_ids: list[str]) -> None:
        """Read the desired sets and settings of a group of agents in a few statements; each
        answer then comes from the caches (``_read_answer``)."""
        self.deployments.desired_many(s, [a for a in agent_ids if a not in self.live.desired_cache])
        self.agent_settings.effective_many(
            s, [a for a in agent_ids if not self.agent_settings.cached(a)]
        )

    def _read_answer(self, agent_id: str) -> tuple[Any, str, Any, tuple[dict[str, Any], str]]:
        desired, dhash = self.deployments.desired(agent_id)
        commands = self.commands.pending(agent_id)
        return desired, dhash, commands, self.agent_settings.effective(agent_id)

    def _prepare(self, s: Session, items: list[tuple[str, M.CheckinRequest]]) -> None:
        """Read what a group of reports needs in a few statements (the agents, their
        assignments and pipe states) rather than a few per report: ``_write`` finds it in
        ``s.info``. The rows are kept there too, so the session's identity map (weak
        references) keeps them for the writes."""
        ids = sorted({agent_id for agent_id, _ in items})
        with_rows = sorted({a for a, body in items if body.attributes is not None or body.full})
        with_status = sorted({a for a, body in items if body.pipes or body.full})
        agents = (
            {r.id: r for r in s.scalars(select(AgentRow).where(AgentRow.id.in_(with_rows)))}
            if with_rows
            else {}
        )
        assigned: dict[str, set[str]] = {a: set() for a in ids}
        for agent_id, dep_id in s.execute(
            select(AssignmentRow.agent_id, AssignmentRow.deployment_id).where(
                AssignmentRow.agent_id.in_(ids)
            )
        ):
            assigned[agent_id].add(dep_id)
        status: dict[str, dict[str, PipeStatusRow]] = {a: {} for a in with_status}
        if with_status:
            for row in s.scalars(
                select(PipeStatusRow).where(PipeStatusRow.agent_id.in_(with_status))
            ):
                status[row.agent_id][row.deployment_id] = row
        s.info[_PREFETCH] = _Prefetch(agents, assigned, status)
        # The answers these check-ins will need and that are not cached (an agent's first
        # check-in with this process): read in this transaction rather than in one more group
        # after it. No report changes an answer: the desired set comes from the assignments,
        # deployments and pipe versions, the settings from labels and settings rows (a policy
        # that refuses an instance marks its state, not its assignment).
        unanswered = [a for a in ids if not self._answer_cached(a)]
        if unanswered:
            self._prepare_answers(s, unanswered)

    def _write(
        self, s: Session, item: tuple[str, M.CheckinRequest]
    ) -> tuple[list[str], list[str] | None]:
        """Store the report; answer the reported deployments that no longer exist (the agent
        cleans up their files) and, for a full report, the agent's labels."""
        agent_id, body = item
        pre: _Prefetch = s.info[_PREFETCH]
        gone: list[str] = []
        labels: list[str] | None = None
        if body.attributes is not None or body.full:
            agent = pre.agents.get(agent_id)
            if agent is not None:
                labels = list(agent.labels or [])
            if (
                agent is not None
                and body.attributes is not None
                and agent.attributes != body.attributes
            ):
                policy_changed = _policy(agent) != body.attributes.get("policy")
                agent.attributes = body.attributes
                if policy_changed:  # placed instances meet the policy it has now
                    s.flush()
                    self.deployments.check_policies(s, agent_ids=[agent_id])
        now = utcnow()
        # Only deployments placed on this agent are its to report on: status, metrics and
        # logs for any other id are dropped (a rogue key cannot write into deployments it
        # does not run). Read for the whole group at once, then set lookups.
        assigned = pre.assigned.get(agent_id, set())
        status = pre.status.get(agent_id, {})
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
            row = status.get(r.deployment_id)
            if row is None:
                row = PipeStatusRow(agent_id=agent_id, deployment_id=r.deployment_id, state=r.state)
                s.add(row)
                status[r.deployment_id] = row  # the same agent may report twice in a group
            row.hash = r.hash
            row.state = r.state
            row.error = r.error
            if r.metrics is not None:
                row.metrics = r.metrics
            if r.checkpoint is not None:
                row.checkpoint = r.checkpoint
            row.updated_at = now
        if body.full:  # what the agent no longer runs is no longer its status
            for dep_id in [d for d in status if d not in reported]:
                s.delete(status.pop(dep_id))
        self.telemetry.record(s, agent_id, body.pipes, body.logs, assigned)
        if body.acks or body.captures:
            self.commands.ack(s, agent_id, body.acks, body.captures)
        return gone, labels


_PREFETCH = "pipenb_checkin_prefetch"


def _policy(agent: AgentRow | None) -> Any:
    """The policy an agent last reported (in its attributes), as stored."""
    return ((agent.attributes if agent is not None else None) or {}).get("policy")


@dataclass
class _Prefetch:
    """What a group of reports reads at once (``CheckinService._prepare``)."""

    agents: dict[str, AgentRow]
    assigned: dict[str, set[str]]
    status: dict[str, dict[str, PipeStatusRow]]  # agent -> deployment -> its pipe's state
