"""``GET /metrics`` on the server in Prometheus's text format.

A real server process with a real agent checking in is scraped twice: by Debian's
``prometheus`` (its own config file and data dir, on loopback), whose API must then show the
target up and the gauges, and by ``prometheus_client``'s own parser. The access rule (open on
loopback, a user token from elsewhere) is tested on an in-process app that trusts
``X-Real-IP``, the only way to look like a remote client on a loopback-only machine.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from support.agentproc import AgentProcess
from support.processes import free_port
from support.serverproc import ServerProcess
from support.waiting import wait_until

PROMETHEUS = shutil.which("prometheus")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def fleet(tmp_path: Path):
    server = ServerProcess(tmp_path / "server", enroll_key="ek-metrics", poll_interval=0.5)
    server.start()
    agent = AgentProcess(
        server.url, tmp_path / "agent", enroll_key="ek-metrics", labels=["metrics"], long_poll=None
    )
    try:
        agent.start()
        agent.wait_enrolled()
        yield server
    finally:
        agent.cleanup()
        server.stop()


def test_metrics_parse_and_count_the_fleet(fleet):
    url = fleet.url + "/metrics"

    def scraped():
        r = requests.get(url, timeout=10)  # loopback: no token needed
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        got = samples(r.text)
        ok = got.get(("pipenb_agents", (("state", "online"),))) == 1
        return (
            got if ok and got.get(("pipenb_checkins_total", (("status", "200"),)), 0) >= 2 else None
        )

    got = wait_until(scraped, timeout=30, what="an online agent and its check-ins")
    assert got[("pipenb_deployments", (("state", "running"),))] == 0
    assert got[("pipenb_agents", (("state", "offline"),))] == 0
    checkin_latency = [
        k for k in got
        if k[0] == "pipenb_http_request_duration_seconds_count" and ("handler", "CheckinHandler") in k[1]
    ]  # fmt: skip
    assert checkin_latency
    # the agent's first check-in brought a full report: written, in a group of its own or more
    reports = got[("pipenb_checkin_report_writes_total", ())]
    assert 1 <= got[("pipenb_checkin_write_groups_total", ())] <= reports


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed")
def test_scraped_by_a_real_prometheus(fleet, tmp_path):
    port = free_port()
    target = fleet.url.split("://", 1)[1].rstrip("/")
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: pipenb\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:

        def online() -> float | None:
            try:
                r = requests.get(api + "/query", params={"query": 'pipenb_agents{state="online"}'},
                                 timeout=5).json()  # fmt: skip
            except (requests.ConnectionError, ValueError):
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                return None
            result = r["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        assert wait_until(online, timeout=60, what="prometheus to scrape the server") == 1.0
        targets = requests.get(api + "/targets", timeout=5).json()["data"]["activeTargets"]
        assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
    finally:
        proc.terminate()
        proc.wait(20)


def test_metrics_need_a_token_from_elsewhere(tmp_path):
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from pipenb.server.app import make_app
    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.settings import ServerSettings

    cp = ControlPlane(ServerSettings(db_url=f"sqlite:///{tmp_path}/cp.db", token="tok"))

    async def scenario():
        server = HTTPServer(make_app(cp), xheaders=True)  # trusts X-Real-IP: test only
        (sock,) = bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
        remote = {"X-Real-IP": "192.0.2.7"}

        def get(headers):
            return requests.get(url, headers=headers, timeout=10)

        try:
            local = await asyncio.to_thread(get, {})
            refused = await asyncio.to_thread(get, remote)
            wrong = await asyncio.to_thread(get, {**remote, "Authorization": "Bearer nope"})
            right = await asyncio.to_thread(get, {**remote, "Authorization": "Bearer tok"})
        finally:
            server.stop()
        return local, refused, wrong, right

    local, refused, wrong, right = asyncio.run(scenario())
    assert local.status_code == 200 and "pipenb_agents" in local.text
    assert (
        refused.status_code == 401 and "open on loopback only" in refused.json()["error"]["message"]
    )
    assert wrong.status_code == 401
    assert right.status_code == 200 and "pipenb_deployments" in right.text


# ------------------------------------------------------------------------------ agent


def test_agent_metrics_address_serves_its_pipes(tmp_path):
    """``--metrics-address`` (off by default) serves per-pipe and per-stage counters."""
    from pipenb.client import Client

    port = free_port()
    server = ServerProcess(tmp_path / "server", enroll_key="ek-m", poll_interval=0.5)
    server.start()
    agent = AgentProcess(
        server.url, tmp_path / "agent", enroll_key="ek-m", labels=["m"], long_poll=None,
        extra=("--metrics-address", f"127.0.0.1:{port}", "--metrics-every", "0.5"),
    )  # fmt: skip
    plain = AgentProcess(server.url, tmp_path / "plain", enroll_key="ek-m", labels=["m"],
                         long_poll=None)  # fmt: skip
    try:
        agent.start()
        agent_id = agent.wait_enrolled()
        client = Client(server.url, server.token, timeout=10)
        client.push(
            "name: ticks\ninput: {echo: {lines: [a, b, c], interval: 50ms}}\n"
            "actions:\n  - filter: \"_raw != 'b'\"\noutput: {discard: {}}\n"
        )
        dep = client.deploy("ticks", agents=[agent_id], labels=[])["id"]

        def scraped():
            try:
                r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except requests.ConnectionError:
                return None
            got = samples(r.text)
            written = got.get(
                ("pipenb_output_events_total", (("deployment", dep), ("pipe", "ticks"))), 0
            )
            return got if written >= 6 else None

        got = wait_until(scraped, timeout=60, what="the pipe's metrics")
        stages = {dict(k[1]).get("stage") for k in got if k[0] == "pipenb_stage_events_in_total"}
        assert len(stages) == 1, (stages, sorted(got))
        key = (("deployment", dep), ("pipe", "ticks"), ("stage", stages.pop()))
        assert (
            got[("pipenb_stage_events_in_total", key)]
            > got[("pipenb_stage_events_out_total", key)]
            > 0
        )
        assert got[("pipenb_stage_dropped_total", key)] > 0
        assert (
            got[("pipenb_pipe_up", (("deployment", dep), ("pipe", "ticks"), ("state", "running")))]
            == 1
        )
        # off by default: an agent without the flag opens no port for it
        plain.start()
        plain.wait_enrolled()
        assert "metrics at" not in plain.log_text()
    finally:
        plain.cleanup()
        agent.cleanup()
        server.stop()
