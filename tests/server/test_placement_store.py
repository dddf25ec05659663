"""Incremental placement on a real store (SQLite, and PostgreSQL when PIPENB_TEST_POSTGRES_URL is
set): an agent joining touches that agent only, a deployment its candidates only, and adding
N agents costs O(N) statements, not O(N^2) rows.

The control plane runs in this process (its services, no HTTP) so that a SQLAlchemy event
listener can see every statement it sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from pipenb.server import models as M
from pipenb.server.control_plane import ControlPlane
from pipenb.server.settings import ServerSettings

PIPE = """\
name: place
input:
  echo: {lines: ["hi"], interval: 10s}
output:
  print: {}
"""


@pytest.fixture
def cp(db_url: str, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(ServerSettings(db_url=db_url, secret_key_file=str(tmp_path / "key")))
    plane.pipes.push(M.PipePush(yaml=PIPE))
    try:
        yield plane
    finally:
        plane.engine.dispose()


class Statements:
    """Every statement the engine sends, with its parameters, while active."""

    def __init__(self, cp: ControlPlane):
        self.seen: list[tuple[str, Any]] = []
        self.on = False
        event.listen(cp.engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if self.on:
            self.seen.append((sql, params))

    def __enter__(self) -> Statements:
        self.seen, self.on = [], True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.on = False


def add(cp: ControlPlane, agent_id: str, *labels: str) -> None:
    cp.agents.add(M.AgentCreate(id=agent_id, labels=list(labels)))


def placed(cp: ControlPlane, dep_id: str) -> list[str]:
    return [s.agent_id for s in cp.deployments.get(dep_id).status]


def test_adding_agents_costs_the_same_statements_at_10_and_at_100(cp: ControlPlane) -> None:
    every = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["web"]))
    two = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["web"], instances=2))
    add(cp, "first", "web")
    add(cp, "second", "web")  # the counted deployment is full from now on
    stmts = Statements(cp)
    counts = {}
    for n in (10, 100):
        with stmts:
            for i in range(n):
                add(cp, f"n{n}-{i:03d}", "web")
        counts[n] = len(stmts.seen)
    # O(N) statements in all: the same per agent at 10 and at 100 (no re-placement of every
    # agent: before, each add read every agent and re-placed every deployment)
    assert counts[100] == 10 * counts[10], counts
    with stmts:
        add(cp, "one-more", "web")
    # and no statement reads the agents table without naming the one agent it is about
    for sql, params in stmts.seen:
        if re.search(r"\bFROM agents\b", sql) and "one-more" not in repr(params):
            pytest.fail(f"adding one agent read other agents: {sql} {params!r}")
    assert len(placed(cp, every.id)) == 113
    assert placed(cp, two.id) == ["first", "second"]  # full: later agents leave it alone


def test_a_deployment_reads_only_the_agents_it_concerns(cp: ControlPlane) -> None:
    for i in range(30):
        add(cp, f"a{i:02d}", "fleet", *(["g_1"] if i % 10 == 0 else []))
    add(cp, "x-gx1", "fleet", "gx1")  # "g_1" as a LIKE pattern would match "gx1": escaped
    stmts = Statements(cp)
    with stmts:
        dep = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["g_1"]))
    assert placed(cp, dep.id) == ["a00", "a10", "a20"]
    reads = [p for sql, p in stmts.seen if re.search(r"SELECT agents\.id, CAST", sql)]
    assert reads, "the candidates query did not run"


@pytest.mark.parametrize("label", ["ünï", 'q"uote', "back\\slash", "50%", "a_b"])
def test_labels_the_database_cannot_match_are_checked_exactly(cp: ControlPlane, label: str) -> None:
    add(cp, "has", label, "other")
    add(cp, "hasnot", "other", label + "x")
    dep = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=[label]))
    assert placed(cp, dep.id) == ["has"]


def test_a_label_change_adds_and_removes_only_that_agents_instances(cp: ControlPlane) -> None:
    for i in range(5):
        add(cp, f"a{i}", "web")
    web = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["web"]))
    db = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["db"]))
    cp.agents.update("a2", M.AgentUpdate(labels=["db"]))
    assert placed(cp, web.id) == ["a0", "a1", "a3", "a4"]
    assert placed(cp, db.id) == ["a2"]


def test_a_counted_deployment_is_placed_again_when_it_loses_an_agent(cp: ControlPlane) -> None:
    for i in range(3):
        add(cp, f"a{i}", "web")
    dep = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["web"], instances=2))
    assert placed(cp, dep.id) == ["a0", "a1"]
    cp.agents.remove("a0")
    assert placed(cp, dep.id) == ["a1", "a2"]
    cp.agents.update("a1", M.AgentUpdate(labels=["db"]))
    assert placed(cp, dep.id) == ["a2"]  # no third agent left
    add(cp, "a3", "web")
    assert placed(cp, dep.id) == ["a2", "a3"]  # room for the newcomer


def test_a_new_agent_is_told_at_once(cp: ControlPlane) -> None:
    dep = cp.deployments.create(M.DeploymentCreate(pipe="place", labels=["web"]))
    add(cp, "late", "web")
    desired, _ = cp.deployments.desired("late")
    assert [d.deployment_id for d in desired] == [dep.id]
