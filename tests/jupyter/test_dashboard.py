"""``%pipe dashboard``: the live fleet view against a real server and a real agent process.

The widgets are driven as a notebook user drives them (``button.click()``, the toggle's value);
what they show is read back from the widget values, and what they did from the server.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from pipenb.client import Client
from pipenb.dashboard import Dashboard, InstanceRate, instance_rate

from support.agentproc import AgentProcess
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL = "ek-dash"

TICKING = """\
name: ticking
labels: [dash]
input: {echo: {events: [{n: 1}, {n: 2}], interval: 20ms}}
actions:
  - add: {seen: yes}
output: {discard: {}}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("server"), enroll_key=ENROLL, poll_interval=1)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def agent(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc = AgentProcess(
        srv.url,
        tmp_path_factory.mktemp("agent"),
        enroll_key=ENROLL,
        labels=["dash"],
        long_poll=2,
        extra=("--metrics-every", "0.5"),
    )
    proc.start()
    try:
        yield proc.wait_enrolled()
    finally:
        proc.kill_group()
        proc.cleanup()


@pytest.fixture
def client(srv: ServerProcess) -> Client:
    return Client(srv.url, srv.token, timeout=10)


def test_rates_come_from_the_reported_counters_and_uptime() -> None:
    first = instance_rate(
        {"uptime_s": 10, "input": {"events": 100}, "output": {"events": 50}}, None
    )
    assert first == InstanceRate(10, 100, 50, 10.0, 5.0)  # the average since the pipe started
    same = instance_rate({"uptime_s": 10, "input": {"events": 100}}, first)
    assert same is first  # the same report seen again keeps its rate
    later = instance_rate(
        {"uptime_s": 12, "input": {"events": 140}, "output": {"events": 70}}, first
    )
    assert later is not None and (later.in_per_s, later.out_per_s) == (20.0, 10.0)
    restarted = instance_rate({"uptime_s": 1, "input": {"events": 3}}, later)
    assert restarted is not None and restarted.in_per_s == 3.0
    assert instance_rate({}, None) is None


def test_dashboard_shows_the_fleet_and_its_buttons_stop_and_start(
    srv: ServerProcess, agent: str, client: Client
) -> None:
    dep = client.deploy(client.push(TICKING)["pipe"], labels=["dash"])["id"]
    dash = Dashboard(client, interval=0.5)
    try:
        assert dash.running and dash.auto.value
        # the background thread keeps refreshing, and the rate appears once the agent reports
        before = dash.refreshes
        wait_until(lambda: dash.refreshes >= before + 2, 20, "two background refreshes")
        wait_until(
            lambda: (dash.rates.get(dep) or (0, 0))[0] > 0, 30, "an input rate for the deployment"
        )
        assert agent in dash.agents_html.value and "online" in dash.agents_html.value
        _row, label, button = dash._rows[dep]
        assert "ticking" in label.value and "in/s" in label.value and "running" in label.value
        assert button.description == "Stop"
        assert "ticking" in repr(dash) and agent in repr(dash)
        bundle = dash._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        assert "application/vnd.jupyter.widget-view+json" in data
        assert "deployment" in data["text/plain"]

        button.click()
        assert client.deployment(dep)["running"] is False
        assert button.description == "Start" and "stopped" in dash.message.value
        wait_until(lambda: "stopped" in label.value, 20, "the row to show the stopped state")

        button.click()
        assert client.deployment(dep)["running"] is True
        assert button.description == "Stop"

        dash.stop()
        assert not dash.running and "paused" in dash.title.value
        frozen = dash.refreshes
        dash.refresh_button.click()
        assert dash.refreshes == frozen + 1
    finally:
        dash.close()
        client.stop(dep)


def test_a_deployment_that_goes_away_leaves_the_view(
    srv: ServerProcess, agent: str, client: Client
) -> None:
    name = f"gone{secrets.token_hex(2)}"
    dep = client.deploy(client.push(TICKING.replace("ticking", name))["pipe"], labels=["nobody"])
    dash = Dashboard(client, autostart=False)
    try:
        assert dep["id"] in dash._rows and not dash.running
        client.stop(dep["id"])
        client.delete_deployment(dep["id"])
        dash.refresh()
        assert dep["id"] not in dash._rows
        assert all(
            dep["id"] not in child.children[1].value
            for child in dash.deployments_box.children
            if hasattr(child, "children")
        )
    finally:
        dash.close()


def test_a_server_that_goes_away_is_shown_not_raised(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    client = Client(server.url, server.token, timeout=2)
    dash = Dashboard(client, autostart=False)
    try:
        assert dash.error is None
        server.kill()
        dash.refresh()
        assert dash.error and "server:" in dash.problem.value
        assert "server error" in repr(dash)
    finally:
        dash.close()


def test_the_dashboard_magic(srv: ServerProcess, agent: str) -> None:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    sh.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    first = sh.run_line_magic("pipe", "dashboard --interval 0.5")
    try:
        assert isinstance(first, Dashboard) and first.running and first.interval == 0.5
        second = sh.run_line_magic("pipe", "dashboard --paused")
        # one refreshing view at a time: the new one replaces the old one's thread
        assert not first.running and not second.running
        assert agent in second.agents_html.value
        second.close()
    finally:
        first.close()
