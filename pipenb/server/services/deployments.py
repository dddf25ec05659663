"""Deployments: which pipe version runs where, placement of instances, failover, desired sets.

Placement is recomputed by ``reconcile`` whenever something it depends on changes (a deploy, an
agent's labels, an agent going offline or coming back). It is idempotent: it only adds and
removes the assignments that differ from what the deployment asks for, so instances stay where
they are unless they must move.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pipenb.errors import ApiError, PipeSyntaxError
from pipenb.lang.tablefiles import provided
from pipenb.lang.templates import builtin_values
from pipenb.lang.validate import load_pipe
from pipenb.policy import Access, Policy, accesses
from pipenb.policy.pipe import check_access
from pipenb.server import models as M
from pipenb.server import roles
from pipenb.server.db_tables import (
    AgentRow,
    AssignmentRow,
    DeploymentRow,
    PipeRow,
    PipeStatusRow,
    PipeVersionRow,
    utcnow,
)
from pipenb.server.secrets import SecretBox, default_key_file, mask_params
from pipenb.server.security import new_id
from pipenb.server.services.pipes import invalid_pipe, not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.core import ControlPlane


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
    def __init__(self, cp: ControlPlane):
        self.cp = cp
        settings = cp.settings
        self.secrets = SecretBox(settings.secret_key_file or default_key_file(settings.db_url))

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
        with self.cp.session() as s:
            pipe = s.scalar(select(PipeRow).where(PipeRow.name == body.pipe))
            if pipe is None:
                raise not_found("pipe", body.pipe)
            vrow = self.cp.pipes.version_row(s, body.pipe, version)
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
        self.reconcile([dep_id])
        if existing is not None:
            self.touch([dep_id])  # a new version or new params reach agents that keep it
        return self.get(dep_id), existing is None

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
        with self.cp.session() as s:
            row = self._row(s, dep_id)
            row.running = running
            row.updated_at = utcnow()
            row.updated_by = roles.current_name()
        self.reconcile([dep_id])
        self.touch([dep_id])  # running or not reaches agents through their desired sets
        return self.get(dep_id)

    def upgrade(self, dep_id: str, body: M.DeploymentUpgrade) -> M.Deployment:
        with self.cp.session() as s:
            row = self._row(s, dep_id)
            pipe = _pipe_of(s, row)
            version = None if body.version == "latest" else int(body.version)
            vrow = self.cp.pipes.version_row(s, pipe.name, version)
            if body.params is not None:
                params = body.params
            else:
                params = self.secrets.open_params(row.params)
            row.params = self._stored_params(vrow, params, dep_id, pipe.name, row.params)
            row.version = version
            row.updated_at = utcnow()
            row.updated_by = roles.current_name()
        self.touch([dep_id])
        return self.get(dep_id)

    def delete(self, dep_id: str) -> None:
        with self.cp.session() as s:
            row = self._row(s, dep_id)
            agents = [
                a.agent_id
                for a in s.scalars(
                    select(AssignmentRow).where(AssignmentRow.deployment_id == dep_id)
                )
            ]
            s.query(PipeStatusRow).filter(PipeStatusRow.deployment_id == dep_id).delete()
            s.delete(row)
        for agent_id in agents:  # their next check-in answer says so: they clean up its files
            self.cp.live.gone.setdefault(agent_id, set()).add(dep_id)
        self.cp.live.notify(*agents)

    def touch(self, dep_ids: list[str]) -> None:
        """Something about these deployments changed (a version, parameters): check them
        against their agents' policies again, and wake the agents that run them."""
        with self.cp.session() as s:
            self.check_policies(s, dep_ids=dep_ids)
            agents = s.scalars(
                select(AssignmentRow.agent_id).where(AssignmentRow.deployment_id.in_(dep_ids))
            ).all()
        self.cp.live.notify(*agents)

    # ------------------------------------------------------------------ placement
    def reconcile_all(self) -> None:
        with self.cp.session() as s:
            ids = s.scalars(select(DeploymentRow.id)).all()
        self.reconcile(list(ids))

    def reconcile(self, dep_ids: list[str]) -> None:
        changed: set[str] = set()
        placed: list[tuple[str, str]] = []  # new (deployment, agent) pairs: check policies
        offline_after = self.cp.settings.offline_seconds
        with self.cp.session() as s:
            # only the columns placement reads: whole rows would decode every agent's attributes
            # and every checkpoint (JSON), most of a deployment change's time at 1,000 agents
            agents = {a.id: a for a in s.execute(select(AgentRow.id, AgentRow.labels))}
            load: dict[str, int] = dict(
                s.execute(
                    select(AssignmentRow.agent_id, func.count()).group_by(AssignmentRow.agent_id)
                ).all()
            )
            for dep_id in dep_ids:
                dep = s.get(DeploymentRow, dep_id)
                if dep is None:
                    continue
                current = {
                    a.agent_id: a
                    for a in s.scalars(
                        select(AssignmentRow).where(AssignmentRow.deployment_id == dep_id)
                    )
                }
                eligible = [a for a in agents.values() if _eligible(dep, a)]
                online = {a.id for a in eligible if self.cp.live.is_online(a.id, offline_after)}
                if dep.instances == -1:
                    want = {a.id for a in eligible}
                    moved_from: list[str] = []
                else:
                    keep = [aid for aid in current if aid in {a.id for a in eligible}]
                    moved_from = []
                    if dep.failover:
                        moved_from = [aid for aid in keep if aid not in online]
                        keep = [aid for aid in keep if aid in online]
                    keep = keep[: dep.instances]
                    candidates = sorted(
                        (a for a in eligible if a.id not in keep and a.id not in moved_from),
                        key=lambda a: (a.id not in online, load.get(a.id, 0), a.id),
                    )
                    if dep.failover:
                        candidates = [a for a in candidates if a.id in online]
                    want = set(keep)
                    for a in candidates:
                        if len(want) >= dep.instances:
                            break
                        want.add(a.id)
                    if len(want) < dep.instances and dep.failover:
                        # not enough online agents: keep the silent ones rather than nothing
                        for aid in moved_from:
                            if len(want) < dep.instances:
                                want.add(aid)
                        moved_from = [aid for aid in moved_from if aid not in want]
                handover = self._handover(s, dep_id, moved_from)
                for aid, assigned in current.items():
                    if aid not in want:
                        s.delete(assigned)
                        load[aid] = load.get(aid, 1) - 1
                        changed.add(aid)
                for aid in sorted(want - set(current)):
                    checkpoint = handover.pop(0) if handover else None
                    s.add(
                        AssignmentRow(
                            deployment_id=dep_id,
                            agent_id=aid,
                            checkpoint=checkpoint,
                            checkpoint_seq=checkpoint_stamp() if checkpoint is not None else 0,
                            created_at=utcnow(),
                        )
                    )
                    load[aid] = load.get(aid, 0) + 1
                    changed.add(aid)
                    placed.append((dep_id, aid))
            if placed:
                s.flush()
                self.check_policies(s, pairs=placed)
        if changed:
            self.cp.live.notify(*changed)

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
        for aid, name, attrs in s.execute(
            select(AgentRow.id, AgentRow.name, AgentRow.attributes).where(
                AgentRow.id.in_({a for _, a in pairs})
            )
        ):
            report = (attrs or {}).get("policy")
            key = orjson.dumps(report, option=orjson.OPT_SORT_KEYS)
            if key not in policies:
                policies[key] = Policy.from_report(report)
            agents[aid] = (name or aid, policies[key])
        rows = {
            (r.agent_id, r.deployment_id): r
            for r in s.scalars(
                select(PipeStatusRow).where(
                    PipeStatusRow.agent_id.in_({a for _, a in pairs}),
                    PipeStatusRow.deployment_id.in_({d for d, _ in pairs}),
                )
            )
        }
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
                            self.cp.pipes.version_row(s, pipe.name, dep.version).yaml,
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
        vrow = self.cp.pipes.version_row(s, pipe.name, dep.version)
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
        with self.cp.session() as s:
            a = s.scalar(
                select(AssignmentRow).where(
                    AssignmentRow.deployment_id == dep_id, AssignmentRow.agent_id == agent_id
                )
            )
            if a is not None:
                a.checkpoint = None
                a.checkpoint_seq = checkpoint_stamp()
        self.cp.live.notify(agent_id)

    # ------------------------------------------------------------------ what an agent runs
    def desired(self, agent_id: str) -> tuple[list[M.DesiredPipe], str]:
        cached = self.cp.live.desired_cache.get(agent_id)
        if cached is not None:
            return cached
        out: list[M.DesiredPipe] = []
        # One query for the whole set: every assignment with its deployment, pipe, the version it
        # runs (a pinned one, or the newest for "latest") and the agent's name. A version push
        # re-computes this for every agent at once, so its cost is the check-in's tail latency.
        newest = (
            select(func.max(PipeVersionRow.version))
            .where(PipeVersionRow.pipe_id == DeploymentRow.pipe_id)
            .correlate(DeploymentRow)
            .scalar_subquery()
        )
        with self.cp.session() as s:
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
                .where(AssignmentRow.agent_id == agent_id, DeploymentRow.running.is_(True))
                .order_by(DeploymentRow.id)
            ).all()
            for a, dep, pipe, vrow, agent_name in rows:
                builtins = builtins_for(agent_id, agent_name or agent_id, pipe.name, dep.id)
                h = pipe_hash(vrow.hash, dep.params, builtins, a.checkpoint_seq)
                out.append(
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
        result = (out, _hash(*[p.hash for p in out]))
        self.cp.live.desired_cache[agent_id] = result
        return result

    # ------------------------------------------------------------------ reading
    def list(self) -> M.DeploymentList:
        with self.cp.session() as s:
            ids = s.scalars(select(DeploymentRow.id).order_by(DeploymentRow.created_at)).all()
        return M.DeploymentList(deployments=[self.get(i) for i in ids])

    def get(self, dep_id: str) -> M.Deployment:
        with self.cp.session() as s:
            dep = self._row(s, dep_id)
            pipe = _pipe_of(s, dep)
            vrow = self.cp.pipes.version_row(s, pipe.name, dep.version)
            assignments = s.scalars(
                select(AssignmentRow)
                .where(AssignmentRow.deployment_id == dep_id)
                .order_by(AssignmentRow.agent_id)
            ).all()
            reports = {
                st.agent_id: st
                for st in s.scalars(
                    select(PipeStatusRow).where(PipeStatusRow.deployment_id == dep_id)
                )
            }
            names = dict(
                s.execute(
                    select(AgentRow.id, AgentRow.name).where(
                        AgentRow.id.in_([a.agent_id for a in assignments])
                    )
                ).all()
            )
            statuses = []
            for a in assignments:
                st = reports.get(a.agent_id)
                want_hash = None
                if dep.running:
                    builtins = builtins_for(
                        a.agent_id, names.get(a.agent_id, a.agent_id), pipe.name, dep.id
                    )
                    want_hash = pipe_hash(vrow.hash, dep.params, builtins, a.checkpoint_seq)
                agent_state = self.cp.agents.state(a.agent_id)
                state = st.state if st is not None else "pending"
                if not dep.running:
                    state = (
                        "stopped" if st is None or st.state in ("stopped", "finished") else st.state
                    )
                statuses.append(
                    M.InstanceStatus(
                        agent_id=a.agent_id,
                        agent_state=agent_state,  # type: ignore[arg-type]
                        state=state,
                        error=st.error if st else None,
                        hash=st.hash if st else None,
                        in_sync=bool(st and st.hash == want_hash)
                        if dep.running
                        else st is None or st.state != "running",
                        metrics=st.metrics if st else None,
                        checkpoint=st.checkpoint if st else None,
                        updated_at=st.updated_at if st else None,
                    )
                )
            wanted = len(statuses) if dep.instances == -1 else dep.instances
            if not dep.running:
                state = "stopped"
            elif any(x.state in ("failed", "refused") for x in statuses):
                state = "degraded"
            elif (
                statuses
                and len(statuses) >= wanted
                and all(x.state == "running" and x.in_sync for x in statuses)
            ):
                state = "running"
            else:
                state = "pending"
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


def _eligible(dep: DeploymentRow, agent: Any) -> bool:
    """``agent``: anything with ``id`` and ``labels`` (a row of those two columns)."""
    if dep.target_agents and agent.id not in dep.target_agents:
        return False
    labels = set(agent.labels or [])
    return all(label in labels for label in dep.target_labels or [])


def _pipe_labels(yaml_text: str) -> list[str]:
    try:
        with provided(None, lenient=True):
            return load_pipe(
                yaml_text,
                builtins=builtin_values("a", "a", "p", "d"),
            ).labels
    except PipeSyntaxError:
        return []
