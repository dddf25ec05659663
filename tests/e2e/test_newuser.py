"""Issue 13, "What a new user hit": one regression test (or a few) per item, against a real
server (and real agents where the item involves them)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from IPython.core.interactiveshell import InteractiveShell

from pipenb.client import Client
from pipenb.errors import PipenbError

from support import REPO_ROOT
from support.agentproc import AgentProcess, tmp_policy
from support.cli import cli_env
from support.pipes import LABELLED_PIPE as PIPE
from support.serverproc import ServerProcess
from support.waiting import wait_until

_ids = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


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
    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    deployed = shell.run_line_magic("pipe", f"deploy {name} --labels {label} --name {name}-nb")
    assert f"no agent matches labels [{label}]" in deployed._repr_html_()
    code, out, _ = pnb("deployments", "status", out.strip())
    assert f"no agent matches labels [{label}]" in out
    status = shell.run_line_magic("pipe", f"status {deployed.id}")
    assert f"no agent matches labels [{label}]" in status._repr_html_()


def test_a_failed_connect_says_the_old_server_stays(shell, srv: ServerProcess) -> None:
    shell.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    with pytest.raises(PipenbError) as caught:
        shell.run_line_magic("pipe", f"connect {srv.url} --token wrong")
    assert f"still connected to {srv.url}" in str(caught.value)


# ---------------------------------------------------------------------------- with a real agent

ENROLL = "ek-newuser"


class QuietAgent(AgentProcess):
    """An agent at the default verbosity (no ``-v``), as a user starts it."""

    def args(self) -> list[str]:
        args = super().args()
        args.remove("-v")
        return args


@pytest.fixture(scope="module")
def asrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("aserver"), enroll_key=ENROLL)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def aclient(asrv: ServerProcess) -> Client:
    return Client(asrv.url, asrv.token, timeout=10)


@pytest.fixture(scope="module")
def agent(asrv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuietAgent]:
    # the agent's own default long poll (30 s): a held check-in must not delay due reports
    a = QuietAgent(
        asrv.url,
        tmp_path_factory.mktemp("agent"),
        enroll_key=ENROLL,
        long_poll=30,
        extra=("--metrics-every", "1", *tmp_policy()),  # its pipes use the temp dir
    )
    try:
        a.start()
        a.wait_enrolled()
        yield a
    finally:
        a.cleanup()


def files_pipe(name: str, src: Path, out: Path, actions: tuple[str, ...] = ()) -> str:
    doc = [f"name: {name}", "input:", f'  files: {{path: "{src}", poll-interval: 50ms}}']
    if actions:
        doc += ["actions:", *(f"  - {a}" for a in actions)]
    doc += ["output:", f'  file: {{path: "{out}", batch: {{size: 10, timeout: 50ms}}}}']
    return "\n".join(doc) + "\n"


def running_on(client: Client, dep_id: str, agent_id: str) -> dict[str, Any] | None:
    st = client.deployment(dep_id)["status"]
    return next(
        (s for s in st if s["agent_id"] == agent_id and s["state"] == "running" and s["in_sync"]),
        None,
    )


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def events_in(instance: dict[str, Any]) -> int:
    return int(((instance.get("metrics") or {}).get("input") or {}).get("events") or 0)


def test_metrics_and_last_seen_honour_metrics_every(aclient, agent, tmp_path: Path) -> None:
    aid = agent.agent_id
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("")
    name = unique("metrics")
    aclient.push(files_pipe(name, src, out))
    dep_id = aclient.deploy(name, agents=[aid], labels=[])["id"]
    inst = wait_until(lambda: running_on(aclient, dep_id, aid), 20, "the pipe running")
    for round_ in range(1, 4):
        before = inst
        append(src, [f"r{round_}-{i}" for i in range(5)])
        # --metrics-every 1: the server hears within seconds, not at the next long poll (30 s)
        inst = wait_until(
            lambda b=before, n=5 * round_: next(
                (
                    s
                    for s in aclient.deployment(dep_id)["status"]
                    if s["updated_at"] != b["updated_at"] and events_in(s) >= n
                ),
                None,
            ),
            8,
            f"round {round_}: updated_at and metrics moving",
            lambda: aclient.deployment(dep_id)["status"],
        )
    aclient.delete_deployment(dep_id)


def test_pipe_errors_reach_the_server_and_status(aclient, agent, asrv, tmp_path, shell) -> None:
    aid = agent.agent_id
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("")
    name = unique("failing")
    aclient.push(
        files_pipe(
            name, src, out, ("extract: {field: _raw, pattern: '^ok (?P<x>.*)', on-miss: error}",)
        )
    )
    dep_id = aclient.deploy(name, agents=[aid], labels=[])["id"]
    wait_until(lambda: running_on(aclient, dep_id, aid), 20, "the pipe running")
    append(src, ["ok 1", "bad 2", "bad 3"])

    def failed_lines() -> list[dict[str, Any]]:
        return [
            x
            for x in aclient.logs(dep_id)["logs"]
            if "event(s) failed" in x["message"] and "did not match" in x["message"]
        ]

    (line, *_) = wait_until(failed_lines, 20, "the failure in the deployment's logs")
    assert line["agent_id"] == aid and line["level"] == "warning"
    assert "set errors: to keep them" in line["message"]
    assert any("event(s) failed" in x["message"] for x in aclient.agent_logs(aid)["logs"])

    env = {k: v for k, v in cli_env().items() if not k.startswith("PIPENB_")}
    env.update(PIPENB_URL=asrv.url, PIPENB_TOKEN=asrv.token)
    proc = subprocess.run(
        [sys.executable, "-m", "pipenb", "deployments", "status", dep_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "recent errors:" in proc.stdout and "did not match" in proc.stdout, proc.stdout
    shell.run_line_magic("pipe", f"connect {asrv.url} --token {asrv.token}")
    status = shell.run_line_magic("pipe", f"status {dep_id}")
    assert any("did not match" in e for e in status.errors)
    assert "Recent errors" in status._repr_html_()
    from pipenb.dashboard import Dashboard

    dash = Dashboard(aclient, autostart=False)
    try:
        assert any("did not match" in e for e in dash.errors[dep_id])
        assert "recent errors" in dash._deployment_line(aclient.deployment(dep_id))
    finally:
        dash.close()
    aclient.delete_deployment(dep_id)


def test_a_deleted_deployment_leaves_no_files_on_the_agent(aclient, agent, tmp_path) -> None:
    aid = agent.agent_id
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("a\nb\n")
    name = unique("deleted")
    aclient.push(files_pipe(name, src, out))
    dep_id = aclient.deploy(name, agents=[aid], labels=[])["id"]
    files = [
        agent.data_dir / "checkpoints" / f"{dep_id}.json",
        agent.data_dir / "logs" / f"{dep_id}.log",
    ]
    wait_until(lambda: all(f.exists() for f in files), 20, "a checkpoint and a log")
    # stopped is not deleted: the checkpoint stays for a start
    aclient.stop(dep_id)
    wait_until(
        lambda: all(s["state"] == "stopped" for s in aclient.deployment(dep_id)["status"]),
        20,
        "stopped",
    )
    assert files[0].exists()
    aclient.delete_deployment(dep_id)
    wait_until(lambda: not any(f.exists() for f in files), 20, "the files removed", lambda: files)


def test_the_agent_says_it_is_up_and_what_it_runs(aclient, agent, tmp_path) -> None:
    aid = agent.agent_id
    wait_until(lambda: "connected to" in agent.log_text(), 20, "the start line")
    start = next(x for x in agent.log_text().splitlines() if "connected to" in x)
    # labels as the server has them (how an agent gets them is enrollment's business)
    assert aid in start and agent.server in start and "labels: " in start
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("")
    name = unique("said")
    aclient.push(files_pipe(name, src, out))
    dep_id = aclient.deploy(name, agents=[aid], labels=[])["id"]
    wait_until(lambda: f"started {dep_id} (pipe {name} version 1)" in agent.log_text(), 20, "start")
    aclient.delete_deployment(dep_id)
    wait_until(lambda: f"stopped {dep_id} (pipe {name})" in agent.log_text(), 20, "stop")
    # one line each, not a line per check-in
    assert agent.log_text().count(f"started {dep_id}") == 1


# ---------------------------------------------------------------------------- 10. dashboard


def test_the_dashboard_shows_a_recent_rate_on_first_draw(srv: ServerProcess, client) -> None:
    """An idle pipe that read 740 events in its first minute shows 0 in/s, not 740/110 s."""
    from pipenb.dashboard import Dashboard

    name, agent_id = unique("idle"), unique("idle-agent")
    push(client, name)
    client.add_agent(agent_id)
    key = client.create_key(agent_id)["api_key"]
    dep = client.deploy(name, agents=[agent_id], labels=[])
    desired = client.checkin(key, {"agent_id": agent_id, "seq": 1})["desired"]
    for seq, uptime in ((2, 100.0), (3, 110.0)):
        metrics = {"uptime_s": uptime, "input": {"events": 740}, "output": {"events": 740}}
        report = {"deployment_id": dep["id"], "hash": desired[0]["hash"], "state": "running"}
        client.checkin(
            key, {"agent_id": agent_id, "seq": seq, "pipes": [{**report, "metrics": metrics}]}
        )
    dash = Dashboard(client, autostart=False)
    try:
        assert dash.rates[dep["id"]] == (0.0, 0.0)
        assert "0.0 in/s" in dash._deployment_line(client.deployment(dep["id"]))
    finally:
        dash.close()


# ---------------------------------------------------------------------------- 6. templates


def test_builtins_in_a_param_default_are_expanded(aclient, agent, tmp_path: Path) -> None:
    aid = agent.agent_id
    src = tmp_path / "in.log"
    src.write_text("one\n")
    name = unique("tmpl")
    doc = (
        f"name: {name}\n"
        f'params:\n  out: {{default: "{tmp_path}/{{{{agent.id}}}}.ndjson"}}\n'
        f'input: {{files: {{path: "{src}", poll-interval: 50ms}}}}\n'
        'output:\n  file: {path: "{{out}}", batch: {timeout: 50ms}}\n'
    )
    aclient.push(doc)
    dep_id = aclient.deploy(name, agents=[aid], labels=[])["id"]
    wait_until(lambda: (tmp_path / f"{aid}.ndjson").exists(), 20, "the agent's own file")
    assert not (tmp_path / "{{agent.id}}.ndjson").exists()
    aclient.delete_deployment(dep_id)


def test_a_param_default_may_use_only_builtins() -> None:
    from pipenb.lang.validate import load_pipe

    doc = (
        "name: p\nparams:\n"
        '  out: {default: "/x/{{nope}}.ndjson"}\n'
        'input: {echo: {lines: [a]}}\noutput: {file: {path: "{{out}}"}}\n'
    )
    with pytest.raises(PipenbError) as caught:
        load_pipe(doc)
    (problem,) = caught.value.problems  # type: ignore[attr-defined]
    assert (problem.line, problem.column) == (3, 18)
    assert "{{nope}} in parameter 'out'" in problem.message and "agent.name" in problem.message


# ---------------------------------------------------------------------------- 8. preview


def test_preview_says_it_stopped_at_the_limit(tmp_path: Path, shell) -> None:
    import pipenb

    src = tmp_path / "big.log"
    src.write_text("".join(f"line {i}\n" for i in range(1200)))
    pipe = pipenb.Pipe.from_yaml(
        f'name: big\ninput: {{files: {{path: "{src}"}}}}\noutput: {{discard: {{}}}}\n'
    )
    result = pipe.preview()
    assert len(result.events) == 1000
    assert "showing 1,000 of 1,000+ input events (--limit)" in result._repr_html_()
    assert "showing 1,000 of 1,000+ input events (--limit)" in repr(result)
    assert "showing 1,000 of 1,200" in pipe.preview(src.read_text().splitlines())._repr_html_()
    assert pipe.preview(limit=5000).limit_note == ""  # all of it: nothing to say
    # the magic's default is the same 1,000
    shell.user_ns["big_src"] = str(src)
    magic_result = shell.run_cell_magic(
        "pipe", "--sample big_src", "name: big2\ninput: {stdin: {}}\noutput: {discard: {}}\n"
    )
    assert magic_result.limit_note.startswith("showing 1,000 of")


def test_long_values_are_cut_in_the_html_but_kept_in_the_dataframe() -> None:
    import pipenb

    pipe = pipenb.Pipe.from_yaml("name: p\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n")
    result = pipe.preview(["x" * 5_000_000, "short"])
    page = result._repr_html_()
    assert len(page) < 20_000
    assert "(5,000,000 characters)" in page and "short" in page
    assert len(result.df.loc[0, "_raw"]) == 5_000_000


# ---------------------------------------------------------------------------- 9. the CLI


def hand_agent(client: Client, name: str) -> tuple[str, str, dict[str, Any]]:
    """An agent driven by hand (its check-ins from the test), running a new deployment."""
    agent_id = unique("hand")
    client.add_agent(agent_id, labels=["hand"])
    key = client.create_key(agent_id)["api_key"]
    push(client, name)
    dep = client.deploy(name, agents=[agent_id], labels=[])
    client.checkin(key, {"agent_id": agent_id, "seq": 1})
    return agent_id, key, dep


def test_the_cli_shows_logs_and_metrics(pnb, client: Client, srv: ServerProcess) -> None:
    agent_id, key, dep = hand_agent(client, unique("cli-logs"))
    desired = client.checkin(key, {"agent_id": agent_id, "seq": 2})["desired"]
    report = {
        "deployment_id": dep["id"],
        "hash": desired[0]["hash"],
        "state": "running",
        "metrics": {"uptime_s": 5, "input": {"events": 42}, "output": {"events": 40}},
    }
    line = {"level": "warning", "deployment_id": dep["id"], "message": "2 event(s) failed"}
    client.checkin(key, {"agent_id": agent_id, "seq": 3, "pipes": [report], "logs": [line]})
    code, out, err = pnb("deployments", "logs", dep["id"])
    assert code == 0, err
    assert f"{agent_id} WARNING 2 event(s) failed" in out
    code, out, _ = pnb("deployments", "metrics", dep["id"])
    assert code == 0
    assert out.splitlines()[1].split()[1:4] == [agent_id, "42", "40"]
    code, out, _ = pnb("agents", "show", agent_id)
    assert code == 0 and out.startswith(f"agent {agent_id} (") and "labels: hand" in out
    code, _, err = pnb("agents", "show", "no-such-agent")
    assert code == 1 and "does not exist" in err

    # --follow prints what arrives later
    env = {k: v for k, v in cli_env().items() if not k.startswith("PIPENB_")}
    env.update(PIPENB_URL=srv.url, PIPENB_TOKEN=srv.token)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipenb",
            "deployments",
            "logs",
            dep["id"],
            "-f",
            "--interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    guard = threading.Timer(30, proc.kill)  # a line that never comes ends the read, not the run
    guard.start()
    try:
        assert proc.stdout is not None
        assert "2 event(s) failed" in proc.stdout.readline()
        later = {**line, "message": "a later line"}
        client.checkin(key, {"agent_id": agent_id, "seq": 4, "logs": [later]})
        assert "a later line" in proc.stdout.readline()  # blocks until it comes (or the kill)
    finally:
        guard.cancel()
        proc.kill()
        proc.wait()


def test_the_cli_restarts_and_resets_a_deployment(pnb, client: Client) -> None:
    agent_id, _key, dep = hand_agent(client, unique("cli-cmd"))
    code, out, err = pnb("deployments", "restart", dep["id"])
    assert code == 0, err
    assert out.startswith(f"restart of {dep['id']} queued for agent(s) {agent_id}")
    code, out, _ = pnb("deployments", "reset-checkpoint", dep["id"], "--agent", agent_id)
    assert code == 0 and "reset-checkpoint" in out
    assert [c["type"] for c in client.commands(dep["id"])["commands"]] == [
        "restart",
        "reset-checkpoint",
    ]


# ---------------------------------------------------------------------------- 10. messages


def test_push_and_deploy_print_each_problem_once(pnb, client: Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ninput: {echo: {lines: [a]}}\nactions:\n  - extrac: {}\noutput: {discard: {}}\n"
    )
    code, _, err = pnb("pipes", "push", str(bad))
    assert code == 1
    assert err.count("unknown action 'extrac'") == 1, err
    name = unique("params")
    push(client, name)
    code, _, err = pnb("deploy", name, "--param", "n=lots")
    assert code == 1
    assert err.count("expects int") == 1, err
    assert f"{name} v1:4:3: parameter 'n' expects int, got 'lots'" in err
    assert "<deployment>" not in err
    code, _, err = pnb("deploy", name, "--param", "m=1")
    assert f"{name} v1: unknown parameter 'm'; declared: n" in err
    assert ":0:0" not in err and err.count("unknown parameter") == 1


def problems(doc: str) -> list[str]:
    from pipenb.lang.validate import load_pipe

    with pytest.raises(PipenbError) as caught:
        load_pipe(doc)
    return [str(p) for p in caught.value.problems]  # type: ignore[attr-defined]


HEAD = "name: p\ninput: {echo: {lines: [a]}}\n"


@pytest.mark.parametrize(
    ("option", "own", "parents"),
    [
        (
            "rotate: {size: 1MB, kep: 3}",
            "for file.rotate (did you mean 'keep'?); allowed: keep, size",
            "raw-field",
        ),
        (
            "batch: {sise: 3}",
            "for file.batch (did you mean 'size'?); allowed: size, timeout",
            "raw-field",
        ),
    ],
)
def test_a_wrong_nested_option_names_its_own_options(option: str, own: str, parents: str) -> None:
    (problem,) = problems(HEAD + f"output: {{file: {{path: /tmp/x, {option}}}}}\n")
    assert own in problem and parents not in problem


def test_the_reference_documents_the_rotate_options() -> None:
    from pipenb.lang.reference import render_reference

    text = render_reference()
    assert "`file.rotate` options:" in text and "| `keep` | integer | `5` |" in text
    assert (REPO_ROOT / "docs" / "reference.md").read_text() == text  # regenerated


@pytest.mark.parametrize(
    ("doc", "where", "hint"),
    [
        (
            HEAD + "actions:\n  - filter: message == 'a: b'\noutput: {discard: {}}\n",
            ":4:26:",
            "a ': ' inside an unquoted value",
        ),
        (
            "name: p\ninput: {echo: {lines: [a #b]}}\noutput: {discard: {}}\n",
            ":3:1:",
            "' #' starts a comment",
        ),
        (
            HEAD
            + "actions:\n  - extract: {field: _raw, pattern: ^x(?P<n>a)}\noutput: {discard: {}}\n",
            ":4:40:",
            "quote a value that contains ','",
        ),
        (
            HEAD + "actions:\n  - set: {msg: concat(a, b)}\noutput: {discard: {}}\n",
            ":4:22:",
            "a ',' ends the entry",
        ),
        (
            HEAD + "actions:\n  - filter: level = 'x'\noutput: {discard: {}}\n",
            ":4:19:",
            "to compare, use ==",
        ),
        (
            HEAD + "actions:\n  - filter: a == 1 && b == 2\noutput: {discard: {}}\n",
            ":4:20:",
            "use and",
        ),
        (
            HEAD + "actions:\n  - filter: msg =~ 'x'\noutput: {discard: {}}\n",
            ":4:17:",
            'use matches(field, "regex")',
        ),
    ],
)
def test_syntax_errors_say_the_usual_cause(doc: str, where: str, hint: str) -> None:
    first = problems(doc)[0]
    assert where in first and hint in first, first


# ---------------------------------------------------------------------------- 11. make test


def _test_recipe(command: str) -> str:
    """The shell of the Makefile's ``test`` recipe, its pytest run replaced by ``command``."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(x for x in lines if x.startswith("test:")))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    text = "\n".join(recipe).replace("\\\n", " ")
    (pg_line,) = [x for x in text.splitlines() if "postgres-test.sh" in x]
    assert "$(BIN)/python -m pytest -q" in pg_line
    return pg_line.lstrip("@").replace("$(BIN)/python -m pytest -q", command).replace("$$", "$")


@pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")), reason="no PostgreSQL here"
)
def test_make_test_stops_the_postgresql_it_started(tmp_path: Path) -> None:
    import socket
    import tempfile

    with socket.socket() as s:  # a free port, not the 55432 other runs may use
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = tempfile.mkdtemp(prefix="pipenb-pg-newuser-", dir="/tmp")  # readable by postgres
    env = {**cli_env(), "PIPENB_TEST_PG_DIR": base, "PIPENB_TEST_PG_PORT": str(port)}
    env.pop("PIPENB_TEST_POSTGRES_URL", None)
    seen = tmp_path / "url"
    try:
        proc = subprocess.run(
            ["sh", "-c", _test_recipe(f'echo "$PIPENB_TEST_POSTGRES_URL" > {seen}')],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"127.0.0.1:{port}/pipenb_test" in seen.read_text(), proc.stderr
        assert "stopping the cluster" in proc.stderr
        with socket.socket() as s, pytest.raises(OSError):
            s.connect(("127.0.0.1", port))  # nothing listens any more
    finally:
        subprocess.run(
            ["bash", "scripts/postgres-test.sh", "stop"], cwd=REPO_ROOT, env=env, timeout=60
        )
        subprocess.run(["rm", "-rf", base], check=False)
