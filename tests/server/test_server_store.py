"""The server's store: migrations build exactly the tables the code maps, and a restart keeps it all.

SPEC §3: SQLite by default (a file), PostgreSQL by URL; schema changes are migrations. The
PostgreSQL half runs when ``PIPENB_TEST_POSTGRES_URL`` names a server where the test may create
a database (``scripts/postgres-test.sh`` starts one); it makes a fresh database per run and drops
it afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from pipenb.server.db import alembic_config, make_engine, migrate
from pipenb.server.db_tables import Base

from support.serverproc import ServerProcess

# ------------------------------------------------------------------------------ databases


# ------------------------------------------------------------------------------ schema


def reflected(engine: Engine) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for table in sorted(insp.get_table_names()):
            if table == "alembic_version":
                continue
            out[table] = {
                "columns": {c["name"]: c["nullable"] for c in insp.get_columns(table)},
                "pk": sorted(insp.get_pk_constraint(table)["constrained_columns"]),
                "fks": sorted(
                    (
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        (fk.get("options") or {}).get("ondelete"),
                    )
                    for fk in insp.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (tuple(ix["column_names"]), bool(ix["unique"]))
                    for ix in insp.get_indexes(table)
                ),
                "uniques": sorted(
                    tuple(u["column_names"]) for u in insp.get_unique_constraints(table)
                ),
            }
    return out


def declared() -> dict[str, Any]:
    """The same, from ``pipenb.server.db_tables``."""
    out: dict[str, Any] = {}
    for table in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
        out[table.name] = {
            "columns": {c.name: c.nullable for c in table.columns},
            "pk": sorted(c.name for c in table.primary_key.columns),
            "fks": sorted(
                (
                    tuple(e.parent.name for e in fk.elements),
                    fk.elements[0].column.table.name,
                    tuple(e.column.name for e in fk.elements),
                    fk.ondelete,
                )
                for fk in table.foreign_key_constraints
            ),
            "indexes": sorted(
                (tuple(c.name for c in ix.columns), bool(ix.unique)) for ix in table.indexes
            ),
            "uniques": sorted(
                tuple(c.name for c in u.columns)
                for u in table.constraints
                if u.__class__.__name__ == "UniqueConstraint"
            ),
        }
    return out


def version_of(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_there_is_one_migration_head():
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads


def test_migrations_build_exactly_the_mapped_tables(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
        got, want = reflected(engine), declared()
        assert sorted(got) == sorted(want)
        for table in want:
            assert got[table]["columns"] == want[table]["columns"], table
            assert got[table]["pk"] == want[table]["pk"], table
            assert got[table]["fks"] == want[table]["fks"], table
            # a unique constraint may be reflected as a unique index (SQLite) or not
            got_ix = set(got[table]["indexes"])
            want_ix = set(want[table]["indexes"])
            assert want_ix <= got_ix, (table, want_ix - got_ix)
            assert all(unique for _, unique in got_ix - want_ix), (table, got_ix - want_ix)
            extra = {cols for cols, _ in got_ix - want_ix}
            assert extra <= set(want[table]["uniques"]), (table, extra)
            assert set(want[table]["uniques"]) <= set(got[table]["uniques"]) | extra, table
        head = ScriptDirectory.from_config(alembic_config()).get_heads()
        assert version_of(engine) == head
    finally:
        engine.dispose()


def test_migrating_twice_changes_nothing(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine)
        before = reflected(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO agents (id, name, labels, attributes, enrolled, created_at) "
                    "VALUES ('keep-me', 'k', '[]', '{}', false, CURRENT_TIMESTAMP)"
                )
            )
        migrate(engine)
        migrate(engine)
        assert reflected(engine) == before
        assert version_of(engine) == ScriptDirectory.from_config(alembic_config()).get_heads()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id FROM agents")).all()
        assert [r[0] for r in rows] == ["keep-me"]
    finally:
        engine.dispose()


def test_a_database_from_before_enrollment_tokens_upgrades_and_its_keys_still_work(db_url):
    """Migration 0002 on a database at 0001 that holds an agent and its key: the key still
    authenticates (it never expires), and the new tables take tokens and removed ids."""
    from alembic import command

    from pipenb.server import models as M
    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.security import hash_secret, new_api_key, split_api_key
    from pipenb.server.settings import ServerSettings

    engine = make_engine(db_url)
    key_id, api_key = new_api_key()
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(
                text(
                    "INSERT INTO agents (id, name, labels, attributes, enrolled, created_at) "
                    "VALUES ('old-agent', 'o', '[\"web\"]', '{}', false, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, agent_id, hash, created_at) "
                    "VALUES (:id, 'old-agent', :hash, CURRENT_TIMESTAMP)"
                ),
                {"id": key_id, "hash": hash_secret(split_api_key(api_key)[1])},  # type: ignore[index]
            )
        assert version_of(engine) == ["0001"]
    finally:
        engine.dispose()
    cp = ControlPlane(ServerSettings(db_url=db_url, token="t"))  # migrates to the head
    try:
        assert cp.agents.authenticate(api_key) == "old-agent"
        assert cp.agents.keys("old-agent").keys[0].expires_at is None
        token = cp.enrollment.create_token(M.EnrollTokenCreate(labels=["web"], uses=1))
        enrolled = cp.enrollment.enroll(M.EnrollRequest(enroll_key=token.token), "127.0.0.1")
        assert enrolled.labels == ["web"]
        cp.agents.remove("old-agent")
        assert cp.agents.list().agents[0].id == enrolled.agent_id
    finally:
        cp.engine.dispose()


# ------------------------------------------------------------------------------ restart


PIPE = """\
name: store-pipe
params:
  level: {default: error}
input: {echo: {events: [{n: 1, l: "{{level}}"}]}}
output: {discard: {}}
"""


def snapshot(srv: ServerProcess, deps: list[str], cmds: list[str]) -> dict[str, Any]:
    """Everything the API shows, without what depends on the clock or on presence."""

    def get(path: str) -> Any:
        r = srv.request("GET", path)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    agents = get("/agents")["agents"]
    for a in agents:
        assert a["last_seen"] is None or a["last_seen"].endswith("Z")
        a.pop("state"), a.pop("last_seen")
    deployments = [get(f"/deployments/{d}") for d in deps]
    for d in deployments:
        for st in d["status"]:
            st.pop("agent_state")
    return {
        "pipes": get("/pipes"),
        "versions": get("/pipes/store-pipe/versions"),
        "v1": get("/pipes/store-pipe?version=1"),
        "agents": agents,
        "keys": {a["id"]: get(f"/agents/{a['id']}/keys") for a in agents},
        "deployments": deployments,
        "commands": [get(f"/commands/{c}") for c in cmds],
        "metrics": get(f"/deployments/{deps[0]}/metrics"),
        "logs": get("/agents/st-a/logs"),
    }


def checkin(srv: ServerProcess, agent: str, key: str, seq: int, **body) -> Any:
    return srv.request(
        "POST", "/agent/checkin", token=key, json={"agent_id": agent, "seq": seq, **body}
    )


def exercise_then_restart(srv: ServerProcess) -> None:
    """Fill a server through its API, restart it, and check that nothing was lost."""
    req = srv.request
    assert req("POST", "/pipes", json={"yaml": PIPE, "message": "one"}).status_code == 201
    v2 = PIPE.replace("default: error", "default: warn")
    assert req("POST", "/pipes", json={"yaml": v2, "message": "two"}).json()["version"] == 2
    for agent, labels in (("st-a", ["web", "eu"]), ("st-b", ["web"])):
        assert req("POST", "/agents", json={"id": agent, "labels": labels}).status_code == 201
    key_a = req("POST", "/agents/st-a/keys").json()["api_key"]
    old = req("POST", "/agents/st-a/keys").json()
    assert req("DELETE", f"/agents/st-a/keys/{old['key_id']}").status_code == 204
    key_b = req("POST", "/agents/st-b/keys").json()["api_key"]
    assert checkin(srv, "st-b", key_b, 0).status_code == 200
    assert checkin(srv, "st-a", key_a, 0).status_code == 200  # online: failover places on it

    pinned = req(
        "POST", "/deployments", json={"pipe": "store-pipe", "version": 1, "labels": ["web"]}
    )
    latest = req(
        "POST",
        "/deployments",
        json={
            "pipe": "store-pipe",
            "agents": ["st-a"],
            "labels": [],
            "params": {"level": "info"},
            "instances": 1,
            "failover": True,
        },
    )
    assert pinned.status_code == 201 and latest.status_code == 201, (pinned.text, latest.text)
    deps = [pinned.json()["id"], latest.json()["id"]]
    first = checkin(srv, "st-a", key_a, 1).json()
    assert {d["deployment_id"] for d in first["desired"]} == set(deps)
    reports = [
        {
            "deployment_id": d["deployment_id"],
            "hash": d["hash"],
            "state": "running",
            "metrics": {"events_in": 5},
            "checkpoint": {"offset": 42},
        }
        for d in first["desired"]
    ]
    r = checkin(
        srv,
        "st-a",
        key_a,
        2,
        pipes=reports,
        attributes={"host": "a"},
        logs=[{"level": "info", "message": "hello", "deployment_id": deps[0]}],
    )
    assert r.status_code == 200
    restart = req("POST", f"/deployments/{deps[0]}/commands", json={"type": "restart"}).json()
    capture = req(
        "POST",
        f"/deployments/{deps[1]}/commands",
        json={"type": "capture", "limit": 2},
    ).json()
    cmd_restart = next(c["id"] for c in restart["commands"] if c["agent_id"] == "st-a")
    (cmd_capture,) = (c["id"] for c in capture["commands"])
    r = checkin(srv, "st-a", key_a, 3, captures=[{"command_id": cmd_capture, "events": [{"n": 1}]}])
    assert [c["id"] for c in r.json()["commands"]] == [cmd_restart]
    cmds = [cmd_restart, cmd_capture]
    before = snapshot(srv, deps, cmds)
    assert before["commands"][1]["result"]["events"] == [{"n": 1}]
    assert before["metrics"]["metrics"] and before["logs"]["logs"]

    assert srv.stop() == 0  # a clean shutdown
    srv.start()

    after = snapshot(srv, deps, cmds)
    for part in before:
        assert after[part] == before[part], part
    # keys still work, the revoked one still does not; the desired set is the same
    again = checkin(srv, "st-a", key_a, 4)
    assert again.status_code == 200, again.text
    assert again.json()["desired_hash"] == first["desired_hash"]
    assert again.json()["desired"] == first["desired"]
    assert [c["id"] for c in again.json()["commands"]] == [cmd_restart]  # still pending
    assert checkin(srv, "st-a", old["api_key"], 5).status_code == 401
    assert checkin(srv, "st-b", key_b, 1).status_code == 200
    # stored content hashes: identical content is still no new version
    r = req("POST", "/pipes", json={"yaml": v2})
    assert r.status_code == 200 and r.json() == {
        "pipe": "store-pipe",
        "version": 2,
        "created": False,
    }
    assert req("POST", "/pipes", json={"yaml": PIPE}).json()["version"] == 3
    assert req("DELETE", "/pipes/store-pipe").status_code == 409


def test_a_restart_keeps_everything(db_url, tmp_path):
    with ServerProcess(tmp_path / "srv", db_url=db_url) as srv:
        exercise_then_restart(srv)


@pytest.mark.parametrize(
    "db_url",
    [
        "sqlite",
        "postgresql",
    ],
    indirect=True,
)
def test_odd_strings_are_refused_or_stored_never_a_500(db_url, tmp_path):
    """What SQLite stores, PostgreSQL must not answer with an internal error."""
    with ServerProcess(tmp_path / "srv", db_url=db_url) as srv:
        req = srv.request
        assert req("POST", "/agents", json={"id": "odd"}).status_code == 201
        key = req("POST", "/agents/odd/keys").json()["api_key"]
        long_pipe = PIPE.replace("store-pipe", "p" * 250)
        attempts = {
            "agent name": lambda: req("POST", "/agents", json={"id": "o2", "name": "n" * 300}),
            "renamed": lambda: req("PATCH", "/agents/odd", json={"name": "n" * 300}),
            "pipe name": lambda: req("POST", "/pipes", json={"yaml": long_pipe}),
            "report id": lambda: checkin(
                srv, "odd", key, 0, pipes=[{"deployment_id": "d" * 100, "state": "running"}]
            ),
            "log id": lambda: checkin(
                srv, "odd", key, 1, logs=[{"message": "m", "deployment_id": "d" * 100}]
            ),
            "NUL in a log": lambda: checkin(srv, "odd", key, 2, logs=[{"message": "a\x00b"}]),
        }
        answers = {what: attempt().status_code for what, attempt in attempts.items()}
        assert req("GET", "/health", token=None).status_code == 200
        assert {w: s for w, s in answers.items() if s >= 500} == {}
