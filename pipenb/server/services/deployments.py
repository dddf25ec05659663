"""Deployments: which pipe version runs where, placement of instances, failover, desired sets.

Placement is recomputed by ``reconcile`` whenever something it depends on changes (a deploy, an
agent's labels, an agent going offline or coming back). It is idempotent: it only adds and
removes the assignments that differ from what the deployment asks for, so instances stay where
they are unless they must move.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import String, cast, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from pipenb.errors import ApiError, PipeSyntaxError
from pipenb.lang.tablefiles import provided
from pipenb.lang.templates import builtin_values
from pipenb.lang.validate import load_pipe
from pipenb.policy import Access, Policy, accesses
from pipenb.policy.pipe import check_access
from pipenb.server import models as M
from pipenb.server import roles
from pipenb.server.db import in_chunks
from pipenb.server.db_tables import (
    AgentRow,
    AssignmentRow,
    DeploymentRow,
    PipeRow,
    PipeStatusRow,
    PipeVersionRow,
    utcnow,
)
from pipenb.server.placement import (
    ALL,
    Candidate,
    Target,
    agent_change,
    deployment_state,
    eligible,
    in_sync,
    instance_state,
    place,
)
from pipenb.server.secrets import SecretBox, default_key_file, mask_params
from pipenb.server.security import new_id
from pipenb.server.services.agents import agent_state
from pipenb.server.services.pipes import PipeService, invalid_pipe, not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.live import Live
    from pipenb.server.settings import ServerSettings


def _hash(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def checkpoint_stamp() -> int:
    """A number that only grows, to mark a checkpoint the server hands to an agent.

    Agents apply a handed checkpoint once, when its stamp is above the last they applied for
    that deployment; a counter per assignment would start again at 1 when an instance is placed
    anew, and the agent would ignore it. Milliseconds since 1970 only grow (and fit an int).
    """
    import time

    return int(time.time() * 1000)


def builtins_for(agent_id: str, agent_name: str, pipe: str, dep_id: str) -> dict[str, Any]:
    return builtin_values(agent_id, agent_name, pipe, dep_id)


def pipe_hash(version_hash: str, params: Any, builtins: dict[str, Any], checkpoint_seq: int) -> str:
    """What an agent must run for one deployment; a change restarts the pipe there."""
    return _hash(version_hash, params, builtins, checkpoint_seq)


class DeploymentService:
    def __init__(
        self,
        settings: ServerSettings,
        session: SessionScope,
        live: Live,
        lock_placement: Callable[[Session], None] = lambda s: None,
    ):
        self.settings = settings
        self.session = session
        self.live = live
        #: one placement at a time across server processes (coordination.py; nothing on SQLite)
        self.lock_placement = lock_placement
        self.secrets = SecretBox(settings.secret_key_file or default_key_file(settings.db_url))
        self._placing = threading.RLock()

    @contextlib.contextmanager
    def placing(self) -> Iterator[tuple[Session, set[str]]]:
        """``with placing() as (s, wake):`` one session for an operation that changes what
        placement depends on and places in the same transaction (``place_in``,
        ``place_agents_in``); the agents added to ``wake`` are woken once it is committed.

        Placement reads assignments and then writes them: two at once on worker threads
        (dbpool.py) could both add the same instance, so they take turns within the process
        (and across processes: ``lock_placement`` in the session), before the session writes
        anything.
        """
        wake: set[str] = set()
        with self._placing, self.session() as s:
            yield s, wake
        if wake:
            self.live.notify(*wake)

    # ------------------------------------------------------------------ create and change
    def create(self, body: M.DeploymentCreate) -> M.Deployment:
        """A new deployment; see ``apply`` for one a user can repeat by name."""
        return self.apply(body)[0]

    def apply(self, body: M.DeploymentCreate) -> tuple[M.Deployment, bool]:
        """Create a deployment, or change the one of the same ``name`` (True: created)."""
        try:
            return self._apply(body)
        except IntegrityError:  # two deploys made the same name at once: one of them wins
            raise ApiError(
                409,
                "conflict",
                f"a deployment named {body.name or body.pipe!r} was made at the same time; "
                "deploy again to update it",
            ) from None

    def _apply(self, body: M.DeploymentCreate) -> tuple[M.Deployment, bool]:
        """Create a deployment, or change the one of the same ``name`` (and say which: True
        for created).

        Running a notebook twice must not run its pipe twice: the name is the identity a user
        repeats, like ``kubectl apply``. ``new`` (or no name) always creates, under a free name.
        """
        version = None if body.version == "latest" else int(body.version)
        instances = -1 if body.instances == "all" else int(body.instances)
        with self.placing() as (s, wake):
            pipe = s.scalar(select(PipeRow).where(PipeRow.name == body.pipe))
            if pipe is None:
                raise not_found("pipe", body.pipe)
            vrow = PipeService.version_row(s, body.pipe, version)
            labels = body.labels
            if labels is None:
                labels = _pipe_labels(vrow.yaml)
            existing = None
            if body.name is not None and not body.new:
                existing = s.scalar(select(DeploymentRow).where(DeploymentRow.name == body.name))
            now = utcnow()
            who = roles.current_name()
            if existing is not None:
                dep_id = existing.id
                existing.params = self._stored_params(
                    vrow, body.params, dep_id, body.pipe, existing.params
                )
                existing.pipe_id = pipe.id
                existing.version = version
                existing.target_agents = list(body.agents)
                existing.target_labels = list(labels)
                existing.instances = instances
                existing.failover = body.failover
                existing.running = body.start
                existing.updated_at = now
                existing.updated_by = who
            else:
                dep_id = new_id("dep-")
                params = self._stored_params(vrow, body.params, dep_id, body.pipe)
                s.add(
                    DeploymentRow(
                        id=dep_id,
                        name=_free_name(s, body.name or body.pipe),
                        pipe_id=pipe.id,
                        version=version,
                        params=params,
                        target_agents=list(body.agents),
                        target_labels=list(labels),
                        instances=instances,
                        failover=body.failover,
                        running=body.start,
                        created_at=now,
                        updated_at=now,
                        created_by=who,
                        updated_by=who,
                    )
                )
            # one transaction: the deployment, its instances and the answer, or nothing
            s.flush()
            wake.update(self.place_in(s, [dep_id]))
            if existing is not None:  # a new version or new params reach agents that keep it
                wake.update(self._touch(s, [dep_id]))
            return self._get(s, dep_id), existing is None

    def _stored_params(
        self,
        vrow: Any,
        params: dict[str, Any],
        dep_id: str,
        pipe: str,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check the params against the version, and seal the ones it declares secret."""
        spec = self._check_params(vrow, params, dep_id, pipe)
        secret = {name for name, p in spec.params.items() if p.secret}
        return self.secrets.seal_params(params, secret, previous)

    def _check_params(self, vrow: Any, params: dict[str, Any], dep_id: str, pipe: str) -> Any:
        """Parameter values against the pipe version's declarations; a problem is located in
        that version ("apache v3:5:3"), the text the user can look at (`pipes show`)."""
        try:
            with provided(vrow.files, lenient=True):
                return load_pipe(
                    vrow.yaml,
                    f"{pipe} v{vrow.version}",
                    params,
                    builtin_values("agent", "agent", "p", dep_id),
                    require_params=True,
                )
        except PipeSyntaxError as exc:
            raise invalid_pipe(exc) from None

    def _row(self, s: Session, dep_id: str) -> DeploymentRow:
        row = s.get(DeploymentRow, dep_id)
        if row is None:
            raise not_found("deployment", dep_id)
        return row

    def set_running(self, dep_id: str, running: bool) -> M.Deployment:
        with self.placing() as (s, wake):
            row = self._row(s, dep_id)
            row.running = running
            row.updated_at = utcnow()
            row.updated_by = roles.current_name()
            s.flush()
            wake.update(self.place_in(s, [dep_id]))
            # running or not reaches agents through their desired sets
            wake.update(self._touch(s, [dep_id]))
            return self._get(s, dep_id)

    def upgrade(self, dep_id: str, body: M.DeploymentUpgrade) -> M.Deployment:
        with self.session() as s:
            row = self._row(s, dep_id)
            pipe = _pipe_of(s, row)
            version = None if body.version == "latest" else int(body.version)
            vrow = PipeService.version_row(s, pipe.name, version)
            if body.params is not None:
                params = body.params
            else:
                params = self.secrets.open_params(row.params)
            row.params = self._stored_params(vrow, params, dep_id, pipe.name, row.params)
            row.version = version
            row.updated_at = utcnow()
            row.updated_by = roles.current_name()
            s.flush()
            wake = self._touch(s, [dep_id])
            answer = self._get(s, dep_id)
        self.live.notify(*wake)
        return answer

    def delete(self, dep_id: str) -> None:
        with self.session() as s:
            row = self._row(s, dep_id)
            agents = [
                a.agent_id
                for a in s.scalars(
                    select(AssignmentRow).where(AssignmentRow.deployment_id == dep_id)
                )
            ]
            s.query(PipeStatusRow).filter(PipeStatusRow.deployment_id == dep_id).delete()
            s.delete(row)
        # their next check-in answer says so: they clean up its files (here or in another process)
        self.live.tell_gone(agents, dep_id)

    def touch(self, dep_ids: list[str]) -> None:
        """Something about these deployments changed (a version, parameters): check them
        against their agents' policies again, and wake the agents that run them."""
        with self.session() as s:
            agents = self._touch(s, dep_ids)
        self.live.notify(*agents)

    def _touch(self, s: Session, dep_ids: list[str]) -> list[str]:
        """``touch`` within the caller's session; the agents to wake once it is committed."""
        self.check_policies(s, dep_ids=dep_ids)
        return list(
            s.scalars(
                select(AssignmentRow.agent_id).where(AssignmentRow.deployment_id.in_(dep_ids))
            )
        )

    # ------------------------------------------------------------------ placement
    def reconcile(self, dep_ids: list[str]) -> None:
        """Place these deployments again (placement.place), reading only their candidates:
        the agents they name or that carry their labels (see ``_candidates``)."""
        with self.placing() as (s, wake):
            wake.update(self.place_in(s, dep_ids))

    def place_in(self, s: Session, dep_ids: list[str]) -> set[str]:
        """``reconcile`` within a session from ``placing``; the agents whose instances
        changed, to wake once the session is committed."""
        self.lock_placement(s)  # and across processes, until the session commits
        changed: set[str] = set()
        placed: list[tuple[str, str]] = []  # new (deployment, agent) pairs: check policies
        offline_after = self.settings.offline_seconds
        is_online = self.live.is_online
        load: dict[str, int] | None = None  # instances per agent, for counted deployments
        for dep_id in dep_ids:
            dep = s.get(DeploymentRow, dep_id)
            if dep is None:
                continue
            target = Target.of(dep)
            current = dict(
                s.execute(
                    select(AssignmentRow.agent_id, AssignmentRow.id)
                    .where(AssignmentRow.deployment_id == dep_id)
                    .order_by(AssignmentRow.id)
                ).all()
            )
            if target.counted and load is None:
                load = dict(
                    s.execute(
                        select(AssignmentRow.agent_id, func.count()).group_by(
                            AssignmentRow.agent_id
                        )
                    ).all()
                )
            counts = load or {}
            candidates = [
                Candidate(aid, is_online(aid, offline_after), counts.get(aid, 0))
                for aid in _candidates(s, target)
            ]
            plan = place(target, list(current), candidates)
            if not plan:
                continue
            handover = self._handover(s, dep_id, plan.moved_from)
            if plan.remove:
                for chunk in in_chunks([current[aid] for aid in plan.remove]):
                    s.execute(delete(AssignmentRow).where(AssignmentRow.id.in_(chunk)))
            rows = []
            now = utcnow()
            for aid in plan.add:
                checkpoint = handover.pop(0) if handover else None
                rows.append(
                    {
                        "deployment_id": dep_id,
                        "agent_id": aid,
                        "checkpoint": checkpoint,
                        "checkpoint_seq": checkpoint_stamp() if checkpoint is not None else 0,
                        "created_at": now,
                    }
                )
                placed.append((dep_id, aid))
            if rows:  # one executemany, not one ORM insert per instance
                s.execute(insert(AssignmentRow.__table__), rows)
            if load is not None:
                for aid in plan.remove:
                    load[aid] = load.get(aid, 1) - 1
                for aid in plan.add:
                    load[aid] = load.get(aid, 0) + 1
            changed.update(plan.add, plan.remove)
        if placed:
            self.check_policies(s, pairs=placed)
        return changed

    def reconcile_all(self) -> None:
        """Place every deployment again (each reads only its own candidates); for whoever needs
        to start from nothing known, such as a process that takes over the background jobs."""
        with self.session() as s:
            ids = s.scalars(select(DeploymentRow.id)).all()
        self.reconcile(list(ids))

    def reconcile_failover(self) -> None:
        """Agents came online or went silent: only counted deployments with failover depend on
        who is online (one on every eligible agent, or without failover, does not)."""
        with self.session() as s:
            ids = s.scalars(
                select(DeploymentRow.id).where(
                    DeploymentRow.failover.is_(True), DeploymentRow.instances != ALL
                )
            ).all()
        if ids:
            self.reconcile(list(ids))

    def place_agents_in(self, s: Session, agent_ids: list[str]) -> set[str]:
        """Agents joined, or their labels changed: add or remove their instances, reading only
        these agents and the deployments (placement.agent_change), within a session from
        ``placing``; a counted deployment that lost an instance or has room for one is placed
        again. The agents to wake once the session is committed."""
        added: list[tuple[str, str]] = []
        removed: set[str] = set()
        again: set[str] = set()
        self.lock_placement(s)  # one placement at a time across processes
        labels: dict[str, list[str] | None] = dict(
            s.execute(select(AgentRow.id, AgentRow.labels).where(AgentRow.id.in_(agent_ids))).all()
        )
        deps = s.execute(
            select(
                DeploymentRow.id,
                DeploymentRow.target_agents,
                DeploymentRow.target_labels,
                DeploymentRow.instances,
                DeploymentRow.failover,
            )
        ).all()
        if not deps or not labels:
            return set()
        held = {
            (d, a): i
            for d, a, i in s.execute(
                select(AssignmentRow.deployment_id, AssignmentRow.agent_id, AssignmentRow.id).where(
                    AssignmentRow.agent_id.in_(list(labels))
                )
            )
        }
        counted = [d.id for d in deps if d.instances != ALL]
        counts: dict[str, int] = {}
        if counted:
            counts = dict(
                s.execute(
                    select(AssignmentRow.deployment_id, func.count())
                    .where(AssignmentRow.deployment_id.in_(counted))
                    .group_by(AssignmentRow.deployment_id)
                ).all()
            )
        rows = []
        gone = []
        now = utcnow()
        for dep in deps:
            target = Target.of(dep)
            for aid, agent_labels in labels.items():
                holds = (dep.id, aid) in held
                change = agent_change(
                    target, eligible(target, aid, agent_labels), holds, counts.get(dep.id, 0)
                )
                if change == "add":
                    rows.append(
                        {
                            "deployment_id": dep.id,
                            "agent_id": aid,
                            "checkpoint": None,
                            "checkpoint_seq": 0,
                            "created_at": now,
                        }
                    )
                    added.append((dep.id, aid))
                elif change == "remove":
                    gone.append(held[(dep.id, aid)])
                    removed.add(aid)
                elif change == "replace":
                    again.add(dep.id)
        if gone:
            s.execute(delete(AssignmentRow).where(AssignmentRow.id.in_(gone)))
        if rows:
            s.execute(insert(AssignmentRow.__table__), rows)
            self.check_policies(s, pairs=added)
        changed = removed | {a for _, a in added}
        if again:
            changed |= self.place_in(s, sorted(again))
        return changed

    # ------------------------------------------------------------------ agent policies
    def check_policies(
        self,
        s: Session,
        *,
        pairs: list[tuple[str, str]] | None = None,
        dep_ids: list[str] | None = None,
        agent_ids: list[str] | None = None,
    ) -> None:
        """Check placed instances against the policy their agent reported; mark the ones it
        refuses ``refused`` with the rule they break (in pipe_status, where the agent's own
        reports go: it refuses them too, with the same message, and its report then stands).
        An instance the policy now allows loses the server's refusal (it is pending again);
        one the agent refused itself (a symlink leading outside) keeps it."""
        q = select(AssignmentRow.deployment_id, AssignmentRow.agent_id)
        if pairs is None:
            if dep_ids is not None:
                q = q.where(AssignmentRow.deployment_id.in_(dep_ids))
            if agent_ids is not None:
                q = q.where(AssignmentRow.agent_id.in_(agent_ids))
            pairs = [(d, a) for d, a in s.execute(q).all()]
        if not pairs:
            return
        policies: dict[bytes, Policy | None] = {}  # agents often report the same policy
        agents: dict[str, tuple[str, Policy | None]] = {}
        # only agents that report a policy (most report none: nothing to check for them)
        reports_policy = cast(AgentRow.attributes, String).like('%"policy"%')
        for chunk in in_chunks(sorted({a for _, a in pairs})):
            for aid, name, attrs in s.execute(
                select(AgentRow.id, AgentRow.name, AgentRow.attributes).where(
                    AgentRow.id.in_(chunk), reports_policy
                )
            ):
                report = (attrs or {}).get("policy")
                key = orjson.dumps(report, option=orjson.OPT_SORT_KEYS)
                if key not in policies:
                    policies[key] = Policy.from_report(report)
                agents[aid] = (name or aid, policies[key])
        if not any(policy is not None for _, policy in agents.values()):
            return
        pairs = [(d, a) for d, a in pairs if agents.get(a, (a, None))[1] is not None]
        rows = {}
        for chunk in in_chunks(sorted({a for _, a in pairs})):
            for r in s.scalars(
                select(PipeStatusRow).where(
                    PipeStatusRow.agent_id.in_(chunk),
                    PipeStatusRow.deployment_id.in_({d for d, _ in pairs}),
                )
            ):
                rows[(r.agent_id, r.deployment_id)] = r
        deps: dict[str, Any] = {}  # deployment id -> (row, pipe, its accesses) or None
        now = utcnow()
        for dep_id, aid in pairs:
            name, policy = agents.get(aid, (aid, None))
            if policy is None:  # an agent that reports no policy: it enforces none either
                continue
            if dep_id not in deps:
                deps[dep_id] = self._accesses(s, dep_id)
            if deps[dep_id] is None:
                continue
            dep, pipe, accs = deps[dep_id]
            builtins = builtins_for(aid, name, pipe.name, dep.id)
            if accs is None:  # not renderable with placeholders: render for this agent
                try:
                    with provided(None, lenient=True):
                        spec = load_pipe(
                            PipeService.version_row(s, pipe.name, dep.version).yaml,
                            "<deployment>",
                            dep.params or {},
                            builtins,
                            require_params=True,
                        )
                except PipeSyntaxError:
                    continue  # the agent reports what is wrong with it
                mine = accesses(spec)
            else:
                mine = _for_agent(accs, builtins)
            refused = [m for a in mine if (m := check_access(a, policy)) is not None]
            row = rows.get((aid, dep_id))
            if refused:
                if row is None:
                    row = PipeStatusRow(agent_id=aid, deployment_id=dep_id, state="refused")
                    s.add(row)
                # no hash: the server's mark (an agent's report always carries one)
                row.state, row.error, row.hash, row.updated_at = "refused", refused[0], "", now
            elif row is not None and row.state == "refused" and not row.hash:
                s.delete(row)  # the server's own mark only: an agent's refusal stands

    def _accesses(self, s: Session, dep_id: str) -> tuple[Any, Any, list[Access] | None] | None:
        """A deployment's row, pipe, and what its pipe asks of a host, rendered once with
        placeholders for the agent's values (``_for_agent`` puts each agent's in); None for the
        accesses when the pipe does not render that way (then each agent's is rendered)."""
        dep = s.get(DeploymentRow, dep_id)
        if dep is None:
            return None
        pipe = _pipe_of(s, dep)
        vrow = PipeService.version_row(s, pipe.name, dep.version)
        try:
            with provided(vrow.files, lenient=True):
                spec = load_pipe(
                    vrow.yaml,
                    "<deployment>",
                    self.secrets.open_params(dep.params),  # a secret may name a path or address
                    {**builtins_for("", "", pipe.name, dep.id), **_PLACEHOLDERS},
                    require_params=True,
                )
        except PipeSyntaxError:
            return dep, pipe, None
        return dep, pipe, accesses(spec)

    def _handover(self, s: Session, dep_id: str, from_agents: list[str]) -> list[Any]:
        """The last checkpoints reported by agents an instance moves away from."""
        out = []
        for aid in from_agents:
            st = s.get(PipeStatusRow, (aid, dep_id))
            if st is not None and st.checkpoint is not None:
                out.append(st.checkpoint)
        return out

    def reset_checkpoint(self, dep_id: str, agent_id: str) -> None:
        with self.session() as s:
            a = s.scalar(
                select(AssignmentRow).where(
                    AssignmentRow.deployment_id == dep_id, AssignmentRow.agent_id == agent_id
                )
            )
            if a is not None:
                a.checkpoint = None
                a.checkpoint_seq = checkpoint_stamp()
        self.live.notify(agent_id)

    # ------------------------------------------------------------------ what an agent runs
    def desired(self, agent_id: str) -> tuple[list[M.DesiredPipe], str]:
        cached = self.live.desired_cache.get(agent_id)
        if cached is not None:
            return cached
        with self.session() as s:
            return self.desired_many(s, [agent_id])[agent_id]

    def desired_many(
        self, s: Session, agent_ids: list[str]
    ) -> dict[str, tuple[list[M.DesiredPipe], str]]:
        """The desired sets of several agents in one query (agents met for the first time
        arrive together when a fleet starts), each cached as ``desired`` caches one."""
        generations = {a: self.live.generation[a] for a in agent_ids}
        out: dict[str, list[M.DesiredPipe]] = {a: [] for a in agent_ids}
        # One query for the whole set: every assignment with its deployment, pipe, the version it
        # runs (a pinned one, or the newest for "latest") and the agent's name. A version push
        # re-computes this for every agent at once, so its cost is the check-in's tail latency.
        newest = (
            select(func.max(PipeVersionRow.version))
            .where(PipeVersionRow.pipe_id == DeploymentRow.pipe_id)
            .correlate(DeploymentRow)
            .scalar_subquery()
        )
        for chunk in in_chunks(sorted(set(agent_ids))):
            rows = s.execute(
                select(AssignmentRow, DeploymentRow, PipeRow, PipeVersionRow, AgentRow.name)
                .join(DeploymentRow, AssignmentRow.deployment_id == DeploymentRow.id)
                .join(PipeRow, DeploymentRow.pipe_id == PipeRow.id)
                .join(
                    PipeVersionRow,
                    (PipeVersionRow.pipe_id == PipeRow.id)
                    & (PipeVersionRow.version == func.coalesce(DeploymentRow.version, newest)),
                )
                .outerjoin(AgentRow, AgentRow.id == AssignmentRow.agent_id)
                .where(AssignmentRow.agent_id.in_(chunk), DeploymentRow.running.is_(True))
                .order_by(AssignmentRow.agent_id, DeploymentRow.id)
            ).all()
            for a, dep, pipe, vrow, agent_name in rows:
                agent_id = a.agent_id
                builtins = builtins_for(agent_id, agent_name or agent_id, pipe.name, dep.id)
                h = pipe_hash(vrow.hash, dep.params, builtins, a.checkpoint_seq)
                out[agent_id].append(
                    M.DesiredPipe(
                        deployment_id=dep.id,
                        pipe=pipe.name,
                        version=vrow.version,
                        yaml=vrow.yaml,
                        params=self.secrets.open_params(dep.params),
                        builtins=builtins,
                        hash=h,
                        checkpoint=a.checkpoint,
                        checkpoint_seq=a.checkpoint_seq,
                        files=dict(vrow.files or {}),
                    )
                )
        results = {}
        for agent_id, pipes in out.items():
            result = (pipes, _hash(*[p.hash for p in pipes]))
            self.live.cache_desired(agent_id, generations[agent_id], result)
            results[agent_id] = result
        return results

    # ------------------------------------------------------------------ reading
    def list(self) -> M.DeploymentList:
        with self.session() as s:
            ids = s.scalars(select(DeploymentRow.id).order_by(DeploymentRow.created_at)).all()
        return M.DeploymentList(deployments=[self.get(i) for i in ids])

    def get(self, dep_id: str) -> M.Deployment:
        with self.session() as s:
            return self._get(s, dep_id)

    def _get(self, s: Session, dep_id: str) -> M.Deployment:
        """The deployment and its instances' states, read in the caller's session."""
        dep = self._row(s, dep_id)
        pipe = _pipe_of(s, dep)
        vrow = PipeService.version_row(s, pipe.name, dep.version)
        # columns, not ORM rows: a deployment on 10,000 agents is answered with 10,000
        # instances, and whole rows would decode every handed-over checkpoint
        assignments = s.execute(
            select(AssignmentRow.agent_id, AssignmentRow.checkpoint_seq, AgentRow.name)
            .outerjoin(AgentRow, AgentRow.id == AssignmentRow.agent_id)
            .where(AssignmentRow.deployment_id == dep_id)
            .order_by(AssignmentRow.agent_id)
        ).all()
        reports = {
            st.agent_id: st
            for st in s.execute(
                select(
                    PipeStatusRow.agent_id,
                    PipeStatusRow.state,
                    PipeStatusRow.error,
                    PipeStatusRow.hash,
                    PipeStatusRow.metrics,
                    PipeStatusRow.checkpoint,
                    PipeStatusRow.updated_at,
                ).where(PipeStatusRow.deployment_id == dep_id)
            )
        }
        statuses = []
        for a in assignments:
            st = reports.get(a.agent_id)
            want_hash = None
            if dep.running:
                builtins = builtins_for(a.agent_id, a.name or a.agent_id, pipe.name, dep.id)
                want_hash = pipe_hash(vrow.hash, dep.params, builtins, a.checkpoint_seq)
            reported = st.state if st is not None else None
            statuses.append(
                M.InstanceStatus(
                    agent_id=a.agent_id,
                    agent_state=agent_state(self.live, self.settings.offline_seconds, a.agent_id),  # type: ignore[arg-type]
                    state=instance_state(dep.running, reported),
                    error=st.error if st else None,
                    hash=st.hash if st else None,
                    in_sync=in_sync(dep.running, reported, st.hash if st else None, want_hash),
                    metrics=st.metrics if st else None,
                    checkpoint=st.checkpoint if st else None,
                    updated_at=st.updated_at if st else None,
                )
            )
        state = deployment_state(
            dep.running, dep.instances, [(x.state, x.in_sync) for x in statuses]
        )
        return M.Deployment(
            id=dep.id,
            name=dep.name,
            pipe=pipe.name,
            version="latest" if dep.version is None else dep.version,
            resolved_version=vrow.version,
            params=mask_params(dep.params),
            agents=list(dep.target_agents or []),
            labels=list(dep.target_labels or []),
            instances="all" if dep.instances == -1 else dep.instances,
            failover=dep.failover,
            running=dep.running,
            state=state,
            created_at=dep.created_at,
            updated_at=dep.updated_at,
            created_by=dep.created_by,
            updated_by=dep.updated_by,
            status=statuses,
        )


#: stand-ins for the builtins that differ per agent, replaced in what a pipe asks for
_PLACEHOLDERS = {"agent.id": "pnbagentid7f3e", "agent.name": "pnbagentname7f3e"}


def _for_agent(accs: list[Access], builtins: dict[str, Any]) -> list[Access]:
    """``accs`` with one agent's values where the placeholders were rendered."""

    def sub(v: Any) -> Any:
        if isinstance(v, str):
            for k, mark in _PLACEHOLDERS.items():
                if mark in v:
                    v = v.replace(mark, str(builtins[k]))
            return v
        if isinstance(v, (list, tuple)):
            return type(v)(sub(x) for x in v)
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return v

    return [Access(a.rule, a.what, sub(a.target)) for a in accs]


def _pipe_of(s: Session, dep: DeploymentRow) -> PipeRow:
    """A deployment's pipe: there always is one (a foreign key, and pipes.delete refuses while
    a deployment uses it)."""
    pipe = s.get(PipeRow, dep.pipe_id)
    assert pipe is not None, dep.id
    return pipe


def _free_name(s: Any, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever no deployment has yet."""
    taken = set(
        s.scalars(
            select(DeploymentRow.name).where(
                (DeploymentRow.name == name) | DeploymentRow.name.like(name + "-%")
            )
        )
    )
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _pipe_labels(yaml_text: str) -> list[str]:
    try:
        with provided(None, lenient=True):
            return load_pipe(
                yaml_text,
                builtins=builtin_values("a", "a", "p", "d"),
            ).labels
    except PipeSyntaxError:
        return []


def _candidates(s: Any, target: Target) -> list[str]:
    """The agents a deployment may be placed on, in id order. The database narrows them down
    (the ids named; labels by their JSON text, ``"web"`` in ``["os:linux", "web"]``) so a
    deployment for a tenth of the fleet reads a tenth of the agents; ``eligible`` decides."""
    text = cast(AgentRow.labels, String)  # decoded here, by orjson: 10,000 rows add up
    q = select(AgentRow.id, text).order_by(AgentRow.id)
    if target.agents:
        q = q.where(AgentRow.id.in_(list(target.agents)))
    for label in target.labels:
        pattern = _json_like(label)
        if pattern is not None:
            q = q.where(text.like(pattern, escape="\\"))
    return [
        aid for aid, labels in s.execute(q) if eligible(target, aid, orjson.loads(labels or "[]"))
    ]


def _json_like(label: str) -> str | None:
    """A LIKE pattern matching JSON text that holds the string ``label``; None for labels whose
    JSON spelling may differ between drivers (non-ASCII, quotes, backslashes): those are
    checked in Python only."""
    if not label.isascii() or any(c in label for c in '"\\') or not label.isprintable():
        return None
    quoted = '"' + label.replace("%", "\\%").replace("_", "\\_") + '"'
    return f"%{quoted}%"
