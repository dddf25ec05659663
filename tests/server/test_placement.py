"""Placement and deployment-state rules (pipenb/server/placement.py), on plain values: no
database, no server."""

from __future__ import annotations

import pytest

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


def cands(*specs: str, load: dict[str, int] | None = None) -> list[Candidate]:
    """``"a1+"``: agent a1, online; ``"a2"``: offline."""
    load = load or {}
    return [Candidate(s.rstrip("+"), s.endswith("+"), load.get(s.rstrip("+"), 0)) for s in specs]


# ---------------------------------------------------------------------------- eligibility
@pytest.mark.parametrize(
    ("target", "agent", "labels", "ok"),
    [
        (Target(), "a1", [], True),
        (Target(labels=("web",)), "a1", ["web", "eu"], True),
        (Target(labels=("web", "eu")), "a1", ["web"], False),
        (Target(agents=("a1",)), "a1", None, True),
        (Target(agents=("a1",)), "a2", None, False),
        (Target(agents=("a1",), labels=("web",)), "a1", ["db"], False),
    ],
)
def test_eligible(target: Target, agent: str, labels: list[str] | None, ok: bool) -> None:
    assert eligible(target, agent, labels) is ok


# ---------------------------------------------------------------------------- place
def test_all_instances_follow_eligibility_not_presence() -> None:
    plan = place(Target(), ["a1", "a3"], cands("a1", "a2+"))
    assert plan.add == ["a2"]
    assert plan.remove == ["a3"]  # no longer eligible
    assert not plan.moved_from


def test_counted_instances_stay_where_they_are() -> None:
    plan = place(Target(instances=2), ["a3", "a1"], cands("a1", "a2+", "a3"))
    assert not plan  # a2 is online and idle, but nothing must move


def test_counted_fills_online_then_least_loaded_then_by_id() -> None:
    c = cands("a1", "a2+", "a3+", "a4+", load={"a2": 2, "a3": 1, "a4": 1})
    assert place(Target(instances=3), [], c).add == ["a2", "a3", "a4"]
    assert place(Target(instances=2), [], c).add == ["a3", "a4"]
    assert place(Target(instances=1), [], cands("a1", "a2")).add == ["a1"]  # none online


def test_counted_trims_extra_instances_newest_first() -> None:
    plan = place(Target(instances=1), ["a2", "a1"], cands("a1+", "a2+"))
    assert plan.remove == ["a1"] and not plan.add


def test_failover_moves_an_instance_off_a_silent_agent_and_hands_its_checkpoint() -> None:
    plan = place(Target(instances=1, failover=True), ["a1"], cands("a1", "a2+"))
    assert plan.add == ["a2"]
    assert plan.remove == ["a1"]
    assert plan.moved_from == ["a1"]


def test_failover_keeps_a_silent_agent_when_no_other_is_online() -> None:
    plan = place(Target(instances=1, failover=True), ["a1"], cands("a1", "a2"))
    assert not plan and not plan.moved_from


def test_without_failover_a_silent_agent_keeps_its_instance() -> None:
    assert not place(Target(instances=1), ["a1"], cands("a1", "a2+"))


def test_place_is_idempotent() -> None:
    target = Target(instances=2, failover=True)
    c = cands("a1", "a2+", "a3+", "a4")
    plan = place(target, ["a1", "a4"], c)
    after = [a for a in ["a1", "a4"] if a not in plan.remove] + plan.add
    assert not place(target, after, c)


# ---------------------------------------------------------------------------- one agent
@pytest.mark.parametrize(
    ("target", "is_eligible", "holds", "count", "change"),
    [
        (Target(), True, False, 5, "add"),
        (Target(), False, True, 5, "remove"),
        (Target(), True, True, 5, None),
        (Target(), False, False, 5, None),
        (Target(instances=2), True, False, 1, "replace"),  # room for it
        (Target(instances=2), True, False, 2, None),  # full: instances stay put
        (Target(instances=2), False, True, 2, "replace"),  # lost one: place again
        (Target(instances=2), True, True, 2, None),
    ],
)
def test_agent_change(
    target: Target, is_eligible: bool, holds: bool, count: int, change: str | None
) -> None:
    assert agent_change(target, is_eligible, holds, count) == change


# ---------------------------------------------------------------------------- states
def test_instance_state_and_sync() -> None:
    assert instance_state(True, None) == "pending"
    assert instance_state(True, "failed") == "failed"
    assert instance_state(False, None) == "stopped"
    assert instance_state(False, "finished") == "stopped"
    assert instance_state(False, "running") == "running"  # not stopped yet
    assert in_sync(True, "running", "h1", "h1")
    assert not in_sync(True, "running", "h0", "h1")
    assert not in_sync(True, None, None, "h1")
    assert in_sync(False, None, None, None)
    assert not in_sync(False, "running", "h1", None)


@pytest.mark.parametrize(
    ("running", "instances", "states", "state"),
    [
        (False, ALL, [("running", True)], "stopped"),
        (True, ALL, [("running", True), ("failed", False)], "degraded"),
        (True, ALL, [("running", True), ("refused", False)], "degraded"),
        (True, ALL, [("running", True), ("running", True)], "running"),
        (True, ALL, [("running", True), ("running", False)], "pending"),
        (True, ALL, [], "pending"),
        (True, 3, [("running", True), ("running", True)], "pending"),  # one short
        (True, 2, [("running", True), ("running", True)], "running"),
    ],
)
def test_deployment_state(
    running: bool, instances: int, states: list[tuple[str, bool]], state: str
) -> None:
    assert deployment_state(running, instances, states) == state
