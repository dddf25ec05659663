"""Placement and deployment-state rules, as pure functions: no database, no clock, no I/O.

Which agents hold an instance of a deployment, what an agent joining (or changing its labels)
changes, and what state a deployment and its instances are in. The deployment service
(``services/deployments.py``) reads the rows these rules need, for the agents a change concerns
only, and writes back what they decide; here they can be tested on plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ALL = -1  # ``instances`` of a deployment that runs on every eligible agent

#: instance states reported by agents that mean "should run and does not"
NOT_RUNNING = ("failed", "refused")


@dataclass(frozen=True)
class Target:
    """Where a deployment wants its instances: agents by id and/or labels (an agent needs all
    of them), how many (``ALL``: every eligible agent), and whether instances leave agents
    that went silent (failover)."""

    agents: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    instances: int = ALL
    failover: bool = False

    @classmethod
    def of(cls, row: Any) -> Target:
        """From anything with the deployment row's columns of those names."""
        return cls(
            tuple(row.target_agents or ()),
            tuple(row.target_labels or ()),
            row.instances,
            bool(row.failover),
        )

    @property
    def counted(self) -> bool:
        return self.instances != ALL


def eligible(target: Target, agent_id: str, labels: Iterable[str] | None) -> bool:
    """May this agent hold an instance? It must be named (when agents are named) and carry every
    label the target asks for."""
    if target.agents and agent_id not in target.agents:
        return False
    have = set(labels or ())
    return all(label in have for label in target.labels)


@dataclass(frozen=True)
class Candidate:
    """An eligible agent, as placement sees it."""

    id: str
    online: bool = False
    load: int = 0  # instances it holds already (of any deployment)


@dataclass
class Plan:
    """What placing one deployment changes: instances added and removed, and the agents whose
    last checkpoints go to the new instances (failover hands a moved instance's position on)."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    moved_from: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def place(target: Target, current: Sequence[str], candidates: Sequence[Candidate]) -> Plan:
    """Where a deployment's instances should be, given the agents that hold one now
    (``current``, oldest first) and every eligible agent (``candidates``).

    Idempotent and sticky: instances stay where they are unless they must move (the agent is no
    longer eligible, or went silent under failover, or there are more than asked for). New
    instances go to online agents first, then the least loaded, then by id. Under failover,
    when too few agents are online, silent ones keep their instances rather than have none.
    """
    ids = {c.id for c in candidates}
    online = {c.id for c in candidates if c.online}
    moved_from: list[str] = []
    if not target.counted:
        want = ids
    else:
        keep = [aid for aid in current if aid in ids]
        if target.failover:
            moved_from = [aid for aid in keep if aid not in online]
            keep = [aid for aid in keep if aid in online]
        keep = keep[: target.instances]
        taken = set(keep) | set(moved_from)
        pool = sorted(
            (c for c in candidates if c.id not in taken),
            key=lambda c: (not c.online, c.load, c.id),
        )
        if target.failover:
            pool = [c for c in pool if c.online]
        want = set(keep)
        for c in pool:
            if len(want) >= target.instances:
                break
            want.add(c.id)
        if len(want) < target.instances and target.failover:
            # not enough online agents: keep the silent ones rather than nothing
            for aid in moved_from:
                if len(want) < target.instances:
                    want.add(aid)
            moved_from = [aid for aid in moved_from if aid not in want]
    held = set(current)
    return Plan(
        add=sorted(want - held),
        remove=[aid for aid in current if aid not in want],
        moved_from=moved_from,
    )


AgentChange = Literal["add", "remove", "replace"] | None


def agent_change(target: Target, is_eligible: bool, holds: bool, count: int) -> AgentChange:
    """What one agent joining, or changing its labels, does to one deployment, without looking
    at any other agent: ``add`` or ``remove`` its instance, ``replace`` (place the deployment
    again: a counted one lost an instance, or has room for this agent), or nothing (None).

    ``count`` is how many instances the deployment has now.
    """
    if not target.counted:
        if is_eligible and not holds:
            return "add"
        if holds and not is_eligible:
            return "remove"
        return None
    if holds and not is_eligible:
        return "replace"
    if is_eligible and not holds and count < target.instances:
        return "replace"
    return None


# ---------------------------------------------------------------------------- states
def instance_state(running: bool, reported: str | None) -> str:
    """An instance's state from its deployment's ``running`` and the agent's last report."""
    state = reported if reported is not None else "pending"
    if not running:
        return "stopped" if reported is None or reported in ("stopped", "finished") else reported
    return state


def in_sync(
    running: bool, reported: str | None, reported_hash: str | None, want: str | None
) -> bool:
    """Does the agent run what it should? A stopped deployment is in sync once nothing runs."""
    if running:
        return reported is not None and reported_hash == want
    return reported is None or reported != "running"


def deployment_state(running: bool, instances: int, states: Sequence[tuple[str, bool]]) -> str:
    """A deployment's state from its instances' ``(state, in_sync)``: ``stopped``, ``degraded``
    (an instance failed or is refused), ``running`` (every instance asked for runs what it
    should) or ``pending``."""
    if not running:
        return "stopped"
    if any(state in NOT_RUNNING for state, _ in states):
        return "degraded"
    wanted = len(states) if instances == ALL else instances
    if states and len(states) >= wanted and all(s == "running" and ok for s, ok in states):
        return "running"
    return "pending"
