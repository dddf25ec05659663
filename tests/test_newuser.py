"""Issue 13, "What a new user hit": one regression test (or a few) per item, against a real
server (and real agents where the item involves them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import cli_env
from IPython.core.interactiveshell import InteractiveShell
from serverproc import ServerProcess

from pipenb.client import Client
from pipenb.errors import PipenbError

PIPE = """\
name: {name}
labels: [{label}]
params:
  n: {{default: 1, type: int}}
input: {{echo: {{lines: ['[error] disk full']}}}}
actions:
  - filter: 'True'
output: {{discard: {{}}}}
"""

_ids = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> Client:
    return Client(srv.url, srv.token, timeout=10)


@pytest.fixture
def pnb(srv: ServerProcess, tmp_path: Path):
    """``pipenb ARGS`` in a subprocess: (exit code, stdout, stderr)."""

    def run(*args: str, **env: str) -> tuple[int, str, str]:
        base = {k: v for k, v in cli_env().items() if not k.startswith("PIPENB_")}
        base.update({"PIPENB_URL": srv.url, "PIPENB_TOKEN": srv.token})
        base.update(env)
        proc = subprocess.run(
            [sys.executable, "-m", "pipenb", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={k: v for k, v in base.items() if v is not None},
            timeout=60,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    return sh


def magics(sh: InteractiveShell) -> Any:
    return sh.magics_manager.registry["PipeMagics"]


def push(client: Client, name: str, label: str = "none", extra: str = "") -> dict[str, Any]:
    return client.push(PIPE.format(name=name, label=label) + extra)


def deps_named(client: Client, pipe: str) -> list[dict[str, Any]]:
    return [d for d in client.deployments()["deployments"] if d["pipe"] == pipe]


# ---------------------------------------------------------------------------- 1. idempotent


def test_deploying_again_by_name_updates_the_deployment(pnb, client: Client) -> None:
    name, label = unique("idem"), unique("lab")
    push(client, name, label)
    code, out, err = pnb("deploy", name, "--labels", label)
    assert code == 0, err
    first = out.strip()
    # the same command again (Run All twice): the same deployment, not a second one
    code, out, err = pnb("deploy", name, "--labels", label, "--param", "n=2")
    assert (code, out.strip()) == (0, first), err
    (dep,) = deps_named(client, name)
    assert (dep["id"], dep["name"], dep["params"]) == (first, name, {"n": "2"})
    # a new version and another target reach the same deployment too
    push(client, name, label, "# v2\n")
    code, out, _ = pnb("deploy", name, "--agents", "nobody")
    assert out.strip() == first
    (dep,) = deps_named(client, name)
    assert (dep["version"], dep["agents"], dep["params"]) == (2, ["nobody"], {})
    # --new forces a second one, under a free name
    code, out, _ = pnb("deploy", name, "--new", "--json")
    second = orjson.loads(out)
    assert second["id"] != first and second["name"] == f"{name}-2"
    assert len(deps_named(client, name)) == 2
    # --name picks the identity: another name is another deployment
    code, out, _ = pnb("deploy", name, "--name", "mine")
    assert out.strip() not in (first, second["id"])
    assert client.deployment(out.strip())["name"] == "mine"


def test_the_api_answers_200_when_it_changed_a_deployment(srv: ServerProcess, client) -> None:
    name = unique("api-idem")
    push(client, name)
    body = {"pipe": name, "name": name, "version": 1, "labels": []}
    r1 = srv.request("POST", "/deployments", json=body)
    r2 = srv.request("POST", "/deployments", json={**body, "params": {"n": 3}})
    assert (r1.status_code, r2.status_code) == (201, 200), r2.text
    assert r1.json()["id"] == r2.json()["id"] and r2.json()["params"] == {"n": 3}
    # without a name, the API keeps making new deployments (as before)
    r3 = srv.request("POST", "/deployments", json={"pipe": name, "labels": []})
    assert r3.status_code == 201 and r3.json()["name"] == f"{name}-2"


def test_a_notebook_run_twice_keeps_one_deployment(shell, srv: ServerProcess, client) -> None:
    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    name = unique("nb-idem")
    shell.run_cell_magic("pipe", "", PIPE.format(name=name, label="x"))
    a = shell.run_line_magic("pipe", "deploy --labels x")
    b = shell.run_line_magic("pipe", "deploy --labels x --param n=5")
    assert a.id == b.id
    assert "updated" in repr(b) and "created" in repr(a)
    (dep,) = deps_named(client, name)
    assert dep["params"] == {"n": "5"}
    c = shell.run_line_magic("pipe", "deploy --labels x --new")
    assert c.id != a.id and len(deps_named(client, name)) == 2


def test_migration_0003_names_existing_deployments(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from pipenb.server.db import alembic_config, make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO pipes (id, name, created_at) VALUES (1, 'p', '2026-01-01')"))
        for dep in ("dep-a", "dep-b"):
            conn.execute(
                text(
                    "INSERT INTO deployments (id, pipe_id, params, target_agents, target_labels,"
                    " instances, failover, running, created_at, updated_at) VALUES "
                    f"('{dep}', 1, '{{}}', '[]', '[]', -1, 0, 1, '2026-01-01', '2026-01-01')"
                )
            )
    migrate(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, name FROM deployments ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("dep-a", "dep-a"), ("dep-b", "dep-b")]


# ---------------------------------------------------------------------------- 2. pinned


def test_deploy_pins_the_version_and_upgrade_moves_it(pnb, client: Client) -> None:
    name = unique("pin")
    push(client, name)
    code, out, err = pnb("deploy", name, "--agents", "nobody")
    dep_id = out.strip()
    assert client.deployment(dep_id)["version"] == 1, err
    push(client, name, extra="# v2\n")
    # the push did not go live: the deployment stays on version 1
    assert (
        client.deployment(dep_id)["version"],
        client.deployment(dep_id)["resolved_version"],
    ) == (
        1,
        1,
    )
    code, out, _ = pnb("deployments", "upgrade", dep_id)
    assert code == 0 and out.startswith(f"upgraded {dep_id}: {name} version 2, ")
    assert client.deployment(dep_id)["version"] == 2
    # --version latest opts in to following
    code, out, _ = pnb("deploy", name, "--agents", "nobody", "--version", "latest")
    assert out.strip() == dep_id and client.deployment(dep_id)["version"] == "latest"


# ---------------------------------------------------------------------------- 3. cells fail


def test_magic_errors_are_pipenb_errors_with_a_short_display(shell, srv: ServerProcess) -> None:
    from pipenb.magics import MagicError

    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    bad = "name: bad\ninput: {echo: {lines: [a]}}\nactions:\n  - fliter: 'True'\noutput: {discard: {}}\n"
    with pytest.raises(MagicError) as caught:
        shell.run_cell_magic("pipe", "", bad)
    assert isinstance(caught.value, PipenbError)
    shown = caught.value._render_traceback_()
    assert "cell:4:5: unknown action 'fliter'" in "\n".join(shown)
    assert len(shown) < 10 and not any("Traceback" in line for line in shown)
    with pytest.raises(MagicError, match="404"):
        shell.run_line_magic("pipe", "stop no-such-deployment")
    with pytest.raises(MagicError, match="nor on the server"):
        shell.run_line_magic("pipe", "deploy no-such-pipe-anywhere")


def test_a_failing_magic_fails_run_cell(shell) -> None:
    """What a kernel reports: run_cell's result is an error, so Run All stops."""
    result = shell.run_cell("%%pipe\nname: x\ninput: {nope: {}}\noutput: {discard: {}}\n")
    assert not result.success
    assert isinstance(result.error_in_exec, PipenbError)


# ---------------------------------------------------------------------------- 7. fresh kernel


def test_a_fresh_kernel_deploys_a_pipe_stored_on_the_server(srv: ServerProcess, client) -> None:
    from pipenb.magics import PipeMagics

    name = unique("stored")
    push(client, name, "x")
    push(client, name, "x", "# v2\n")
    fresh = PipeMagics(shell=InteractiveShell.instance())
    fresh.pipe(f"connect {srv.url} --token {srv.token}")
    dep = fresh.pipe(f"deploy {name} --labels x")
    got = client.deployment(dep.id)
    assert (got["pipe"], got["version"]) == (name, 2)
    with pytest.raises(PipenbError, match="nor on the server"):
        fresh.pipe("deploy never-pushed-anywhere")


# ---------------------------------------------------------------------------- 10. messages


def test_deploying_to_labels_nobody_has_warns_and_status_says_so(pnb, client, shell, srv) -> None:
    name, label = unique("lonely"), unique("nolabel")
    push(client, name)
    code, out, err = pnb("deploy", name, "--labels", label)
    assert code == 0
    assert f"warning: no agent matches labels [{label}]" in err
    code, out, _ = pnb("deployments", "status", out.strip())
    assert f"no agent matches labels [{label}]" in out
    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    status = shell.run_line_magic("pipe", f"status {client.deployments()['deployments'][-1]['id']}")
    assert f"no agent matches labels [{label}]" in status._repr_html_()


def test_a_failed_connect_says_the_old_server_stays(shell, srv: ServerProcess) -> None:
    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    with pytest.raises(PipenbError) as caught:
        shell.run_line_magic("pipe", f"connect {srv.url} --token wrong")
    assert f"still connected to {srv.url}" in str(caught.value)
