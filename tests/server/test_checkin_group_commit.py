"""Check-in reports written in groups (pipenb/server/groupcommit.py), on SQLite and on PostgreSQL
when PIPENB_TEST_POSTGRES_URL is set.

Check-ins that arrive together are written in one transaction; each is answered once its report
is committed. A group whose transaction fails fails every check-in in it (the agent is told, and
sends its report again); none is answered as if stored. The first tests run the control plane in
this process (its services, no HTTP) so that they can see the groups; the last goes through a
real server process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from pipenb.server import models as M
from pipenb.server.control_plane import ControlPlane
from pipenb.server.settings import ServerSettings

from support.serverproc import ServerProcess

PIPE = """\
name: grouped
input:
  echo: {lines: ["hi"], interval: 10s}
output:
  print: {}
"""
N = 40  # agents checking in at once


@pytest.fixture
def cp(db_url: str, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(ServerSettings(db_url=db_url, secret_key_file=str(tmp_path / "key")))
    plane.pipes.push(M.PipePush(yaml=PIPE))
    try:
        yield plane
    finally:
        plane.db.shutdown()
        plane.engine.dispose()


def fleet(cp: ControlPlane, n: int) -> tuple[list[str], str, str]:
    """n agents labelled ``web``, one deployment on all of them: (ids, deployment id, hash)."""
    ids = [f"g{i:03d}" for i in range(n)]
    for agent_id in ids:
        cp.agents.add(M.AgentCreate(id=agent_id, labels=["web"]))
    dep = cp.deployments.create(M.DeploymentCreate(pipe="grouped", labels=["web"]))
    desired, _ = cp.deployments.desired(ids[0])
    return ids, dep.id, desired[0].hash


def first_report(agent_id: str, dep_id: str, pipe_hash: str) -> M.CheckinRequest:
    return M.CheckinRequest(
        agent_id=agent_id,
        seq=0,
        full=True,
        attributes={"host": f"host-of-{agent_id}"},
        pipes=[M.PipeReport(deployment_id=dep_id, hash=pipe_hash, state="running")],
    )


async def check_in_together(cp: ControlPlane, bodies: list[M.CheckinRequest]) -> list[Any]:
    """Every check-in at once, on this event loop: their answers, or the exception each got."""
    return await asyncio.gather(
        *(cp.checkin.checkin(b.agent_id, b) for b in bodies), return_exceptions=True
    )


def stored(cp: ControlPlane, ids: list[str], dep_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """What the database holds: each agent's attributes and its instance's reported state."""
    attributes = {a: cp.agents.get(a).attributes for a in ids}
    states = {s.agent_id: s.state for s in cp.deployments.get(dep_id).status}
    return attributes, states


def test_first_check_ins_arriving_together_are_written_in_one_group_and_all_kept(
    cp: ControlPlane,
) -> None:
    ids, dep_id, pipe_hash = fleet(cp, N)
    answers = asyncio.run(check_in_together(cp, [first_report(a, dep_id, pipe_hash) for a in ids]))
    assert all(isinstance(a, M.CheckinResponse) for a in answers), answers
    assert [a.labels for a in answers] == [["web"]] * N  # each answer is its own agent's
    # all N were waiting when the writer started: one transaction for all of them
    assert (cp.checkin.writes.groups, cp.checkin.writes.items) == (1, N)
    # and their answers (desired sets, settings: not cached yet) were read in that same
    # transaction, not in a group of their own
    assert [[d.deployment_id for d in a.desired] for a in answers] == [[dep_id]] * N
    assert [a.desired[0].builtins["agent.id"] for a in answers] == ids  # each its own
    assert (cp.checkin.answers.groups, cp.checkin.answers.items) == (0, 0)
    attributes, states = stored(cp, ids, dep_id)
    assert attributes == {a: {"host": f"host-of-{a}"} for a in ids}
    assert states == dict.fromkeys(ids, "running")


def test_the_keys_of_agents_met_together_are_read_in_one_statement_each_answered_alone(
    cp: ControlPlane,
) -> None:
    """A fleet meeting a process: every first check-in misses the key cache. The keys waiting
    are read in one statement; a wrong or revoked key is refused on its own."""
    ids, _, _ = fleet(cp, N)
    keys = [cp.agents.create_key(a).api_key for a in ids]
    revoked = cp.agents.create_key(ids[0])
    cp.agents.revoke_key(ids[0], revoked.key_id)
    wrong = keys[1][:-4] + ("aaaa" if not keys[1].endswith("aaaa") else "bbbb")
    reads: list[str] = []

    @event.listens_for(cp.engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "api_keys" in statement:
            reads.append(statement)

    async def check_all() -> list[Any]:
        return await asyncio.gather(
            *(cp.key_checks.write(k) for k in [*keys, wrong, revoked.api_key])
        )

    results = asyncio.run(check_all())
    assert results[:N] == ids  # each key its own agent
    assert [(r.status, r.code) for r in results[N:]] == [
        (401, "invalid_key"),
        (401, "key_revoked"),
    ]
    assert (cp.key_checks.groups, cp.key_checks.items) == (1, N + 2)
    assert len(reads) == 1, reads
    # and they are cached now: the next check-in of each reads nothing
    assert [cp.agents.cached_agent(k) for k in keys] == ids


def test_one_agent_reporting_twice_in_one_group_keeps_its_later_report(cp: ControlPlane) -> None:
    ids, dep_id, pipe_hash = fleet(cp, 2)
    first = first_report(ids[0], dep_id, pipe_hash)
    later = M.CheckinRequest(
        agent_id=ids[0],
        seq=1,
        full=False,
        pipes=[M.PipeReport(deployment_id=dep_id, hash=pipe_hash, state="failed", error="boom")],
    )
    other = first_report(ids[1], dep_id, pipe_hash)
    answers = asyncio.run(check_in_together(cp, [first, later, other]))
    assert all(isinstance(a, M.CheckinResponse) for a in answers), answers
    assert cp.checkin.writes.groups == 1
    _, states = stored(cp, ids, dep_id)
    assert states == {ids[0]: "failed", ids[1]: "running"}


def hold_write_lock(url: str, table: str) -> Any:
    """Another connection takes the write lock on the store; returns a function that lets go.

    SQLite: ``BEGIN IMMEDIATE`` on the file, past the server's busy timeout. PostgreSQL: a lock
    on ``table`` that the group's write waits on; that waiting connection is then cut (as when
    the database restarts), so the group's transaction fails."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=30)
        con.execute("BEGIN IMMEDIATE")

        def release_sqlite() -> None:
            con.execute("COMMIT")
            con.close()

        return release_sqlite
    import psycopg

    admin = psycopg.connect(url, autocommit=True)
    holder = psycopg.connect(url)
    holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    stop = threading.Event()

    def cut_waiters() -> None:  # the server's connections waiting for the lock are cut
        while not stop.wait(0.05):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()"
            )

    cutter = threading.Thread(target=cut_waiters, daemon=True)
    cutter.start()

    def release_pg() -> None:
        stop.set()
        cutter.join(10)
        holder.rollback()
        holder.close()
        admin.close()

    return release_pg


def test_a_failed_group_fails_every_check_in_in_it_and_stores_none(
    cp: ControlPlane, tmp_path: Path
) -> None:
    ids, dep_id, pipe_hash = fleet(cp, N)
    bodies = [first_report(a, dep_id, pipe_hash) for a in ids]
    release = hold_write_lock(cp.settings.db_url, "pipe_status")
    try:
        answers = asyncio.run(check_in_together(cp, bodies))
    finally:
        release()
    # every check-in hears that its report was not stored (answered 503 through HTTP)
    assert all(isinstance(a, DBAPIError) for a in answers), answers
    attributes, states = stored(cp, ids, dep_id)
    assert attributes == {a: {} for a in ids}
    assert set(states.values()) == {"pending"}
    # the agents send their reports again, and now they are kept
    for b in bodies:
        b.seq = 1
    answers = asyncio.run(check_in_together(cp, bodies))
    assert all(isinstance(a, M.CheckinResponse) for a in answers), answers
    attributes, states = stored(cp, ids, dep_id)
    assert attributes == {a: {"host": f"host-of-{a}"} for a in ids}
    assert states == dict.fromkeys(ids, "running")


def test_a_report_that_fails_on_its_own_fails_only_its_check_in(cp: ControlPlane) -> None:
    """A group that fails on one report's data (not the database's trouble) is written again
    one report per transaction: only that report's check-in fails."""
    ids, dep_id, pipe_hash = fleet(cp, 3)
    bad = M.CheckinRequest(
        agent_id=ids[1],
        seq=0,
        full=True,
        pipes=[M.PipeReport(deployment_id=dep_id, hash=pipe_hash, state="running")],
        # the database cannot store this (no JSON for it): the write raises for this one
        attributes={"when": object()},
    )
    good = [first_report(a, dep_id, pipe_hash) for a in (ids[0], ids[2])]
    answers = asyncio.run(check_in_together(cp, [good[0], bad, good[1]]))
    assert isinstance(answers[0], M.CheckinResponse), answers
    assert isinstance(answers[1], Exception) and not isinstance(answers[1], M.CheckinResponse)
    assert isinstance(answers[2], M.CheckinResponse), answers
    attributes, states = stored(cp, ids, dep_id)
    assert attributes[ids[0]] == {"host": f"host-of-{ids[0]}"}
    assert attributes[ids[1]] == {}
    assert states == {ids[0]: "running", ids[1]: "pending", ids[2]: "running"}


@pytest.fixture(params=["sqlite", "postgresql"])
def server_db(request: Any, tmp_path: Path) -> str | None:
    """None: the server's own SQLite file; else a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_check_ins_through_the_server_are_refused_while_the_store_fails_then_all_stored(
    tmp_path: Path, server_db: str | None
) -> None:
    """Through a real server process: N agents' first check-ins at once while their group's
    write fails (the file locked past the busy timeout; the PostgreSQL connection cut) are each
    answered 503 with Retry-After, nothing stored; sent again, each is answered 200 and its
    report is readable afterwards."""
    with ServerProcess(tmp_path, db_url=server_db, poll_interval=1.0) as srv:
        ids = [f"s{i:03d}" for i in range(N)]
        keys = {}
        for agent_id in ids:
            srv.request("POST", "/agents", json={"id": agent_id}).raise_for_status()
            keys[agent_id] = srv.request("POST", f"/agents/{agent_id}/keys").json()["api_key"]

        def checkin(agent_id: str, seq: int) -> Any:
            body = {
                "agent_id": agent_id,
                "seq": seq,
                "full": True,
                "wait": 0,
                "attributes": {"host": f"host-of-{agent_id}", "seq": seq},
            }
            return srv.request(
                "POST", "/agent/checkin", json=body, token=keys[agent_id], timeout=60
            )

        release = hold_write_lock(server_db or f"sqlite:///{tmp_path / 'server.db'}", "agents")
        try:
            with ThreadPoolExecutor(N) as pool:
                refused = list(pool.map(lambda a: checkin(a, 0), ids))
        finally:
            release()
        assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
        assert all(r.headers.get("Retry-After") for r in refused)
        assert {r.json()["error"]["code"] for r in refused} == {"unavailable"}
        for agent_id in ids:
            assert srv.request("GET", f"/agents/{agent_id}").json()["attributes"] == {}

        with ThreadPoolExecutor(N) as pool:
            answers = list(pool.map(lambda a: checkin(a, 1), ids))
        assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
        for agent_id in ids:
            agent = srv.request("GET", f"/agents/{agent_id}").json()
            assert agent["attributes"] == {"host": f"host-of-{agent_id}", "seq": 1}
