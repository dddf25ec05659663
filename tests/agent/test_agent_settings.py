"""Agent settings from the server (issue 21): set per label or agent, delivered in the check-in
answer, applied by a real running ``pipenb agent`` without a restart, within the bounds of its
own command line, and reported back with the version applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipenb.client import Client
from pipenb.errors import ApiError

from support.agentproc import AgentProcess, tmp_policy
from support.cli import run_cli
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-settings"
OLD_EVERY = 20.0  # the agent's own --metrics-every

SERVER = {"enroll_key": ENROLL_KEY, "poll_interval": 1.0}  # the shared srv fixture


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    made: list[AgentProcess] = []

    def start(srv: ServerProcess, name: str, label: str, *extra: str) -> tuple[AgentProcess, str]:
        a = AgentProcess(
            srv.url,
            tmp_path / f"agent-{name}",
            enroll_key=ENROLL_KEY,
            name=name,
            labels=[label],
            extra=(*tmp_policy(), *extra),
        )
        made.append(a)
        a.start()
        return a, a.wait_enrolled()

    try:
        yield start
    finally:
        for a in made:
            a.cleanup()


def applied(client: Client, aid: str) -> bool:
    v = client.agent_settings(aid)
    return v["applied_version"] == v["version"]


def test_metrics_every_for_a_label_speeds_reports_up_without_a_restart(
    srv: ServerProcess, client: Client, agent_factory, tmp_path: Path
) -> None:
    agent, aid = agent_factory(srv, "st1", "st-web", "--metrics-every", str(OLD_EVERY))
    pid = agent.proc.pid
    src = tmp_path / "in.log"
    src.write_text("a\nb\n")
    client.push(
        "name: stpipe\nlabels: [st-web]\n"
        f'input:\n  files: {{path: "{src}", poll-interval: 50ms}}\n'
        f'output:\n  file: {{path: "{tmp_path / "out.ndjson"}"}}\n'
    )
    dep = client.deploy("stpipe")["id"]
    wait_until(
        lambda: (
            client.deployment(dep)["status"][0]["state"] == "running"
            if client.deployment(dep)["status"]
            else False
        ),
        timeout=30,
        what="the pipe running",
    )
    wait_until(lambda: applied(client, aid), timeout=30, what="the first settings applied")

    client.set_agent_settings({"metrics-every": "1s"}, labels=["st-web"])
    wait_until(lambda: applied(client, aid), timeout=10, what="the new settings applied")
    assert client.agent_settings(aid)["values"] == {"metrics-every": "1s"}
    # each report of the pipe stamps its status; three new stamps within (less than) one old
    # interval: at 20 s there would be one at most
    stamps: set[str] = set()

    def reports() -> int:
        stamps.update(str(st["updated_at"]) for st in client.deployment(dep)["status"])
        return len(stamps)

    first = reports()
    wait_until(lambda: reports() >= first + 3, timeout=OLD_EVERY - 2, what="reports every second")
    assert agent.proc.pid == pid and agent.proc.poll() is None  # the same process: no restart

    # removing the key gives the command line's value back, and the CLI shows it all
    out = run_cli(
        "agents", "settings", "set", "--labels", "st-web", "metrics-every=",
        "--url", srv.url, "--token", srv.token,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_until(lambda: applied(client, aid), timeout=10, what="the removal applied")
    assert client.agent_settings(aid)["values"] == {}
    out = run_cli("agents", "settings", "show", aid, "--url", srv.url, "--token", srv.token)
    assert out.returncode == 0 and "applied: yes" in out.stdout, out.stdout + out.stderr


def test_a_setting_outside_the_agents_bounds_is_refused_and_reported(
    srv: ServerProcess, client: Client, agent_factory
) -> None:
    _, aid = agent_factory(
        srv, "st2", "st-db", "--max-log-level", "info", "--settings-bounds", "metrics-every=5s..60s"
    )
    wait_until(lambda: applied(client, aid), timeout=30, what="the first settings applied")
    client.set_agent_settings(
        {"log-level": "debug", "metrics-every": "1s", "capture-limit": 50}, agent=aid
    )
    wait_until(lambda: applied(client, aid), timeout=10, what="the settings applied")
    view = client.agent_settings(aid)
    assert set(view["refused"]) == {"log-level", "metrics-every"}
    assert "--max-log-level info" in view["refused"]["log-level"]
    assert "5..60" in view["refused"]["metrics-every"]
    assert view["bounds"]["max-log-level"] == "info"
    # the agent says so in its logs on the server too
    wait_until(
        lambda: any(
            "setting refused" in line["message"] for line in client.agent_logs(aid)["logs"]
        ),
        timeout=10,
        what="the refusal in the agent's logs",
    )
    out = run_cli("agents", "settings", "show", aid, "--url", srv.url, "--token", srv.token)
    assert "REFUSED" in out.stdout and "capture-limit = 50" in out.stdout


def test_the_server_refuses_unknown_settings_and_non_admins(
    srv: ServerProcess, client: Client
) -> None:
    with pytest.raises(ApiError) as err:
        client.set_agent_settings({"metric-every": "5s"}, labels=["x"])
    assert err.value.status == 400 and "unknown setting 'metric-every'" in str(err.value)
    with pytest.raises(ApiError) as err:
        client.set_agent_settings({"log-level": "loud"}, labels=["x"])
    assert err.value.status == 400 and "debug, info, warning, error" in str(err.value)
    srv.request("POST", "/users", json={"name": "ed-st", "role": "editor"})
    token = srv.request("POST", "/users/ed-st/tokens", json={}).json()["token"]
    with pytest.raises(ApiError) as err:
        Client(srv.url, token).set_agent_settings({"log-level": "info"}, labels=["x"])
    assert err.value.status == 403


def test_bad_bounds_stop_the_agent_at_start(tmp_path: Path) -> None:
    out = run_cli(
        "agent", "--server", "http://127.0.0.1:9", "--data-dir", tmp_path / "a",
        "--settings-bounds", "metrics-every=1s",
    )  # fmt: skip
    assert out.returncode == 2 and "KEY=LOW..HIGH" in out.stderr


def test_bounds_and_values_are_read_strictly() -> None:
    from pipenb.agent.remote_settings import Bounds, SettingError, parse, version

    b = Bounds.parse("warning", "metrics-every=2s..1m,capture-limit=..500")
    assert b.check("metrics-every", "30s") == 30.0
    assert b.check("capture-limit", "500") == 500
    assert b.check("log-level", "ERROR") == "error"
    for key, value, says in (
        ("metrics-every", "1s", "2..60"),
        ("capture-limit", 501, "1..500"),
        ("ship-level", "info", "--max-log-level warning"),
        ("long-poll", "soon", "not a seconds value"),
        ("metrics-every", "2h", "outside 0.5..3600"),
    ):
        with pytest.raises(SettingError, match=says.replace(".", r"\.")):
            b.check(key, value)
    with pytest.raises(SettingError, match=r"KEY=LOW\.\.HIGH"):
        Bounds.parse(None, "log-level=debug..info")
    with pytest.raises(SettingError, match="low end is above"):
        Bounds.parse(None, "long-poll=30s..5s")
    assert parse("metrics-every", "500ms") == 0.5
    # the version names the values, whatever their order
    assert version({"a": 1, "b": 2}) == version({"b": 2, "a": 1}) != version({"a": 1})
