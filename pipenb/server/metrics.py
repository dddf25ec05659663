"""``GET /metrics``: the server in Prometheus's text format (``prometheus_client``).

At the root path, Prometheus's default, so a scrape config needs only the target. Open to
clients on loopback (a Prometheus on the same host); from anywhere else it needs a user token
(``Authorization: Bearer``, any role), since agent names and counts say something about a
fleet. Gauges (agents, deployments, pipe instances by state) are read from the database and
the live state at each scrape; counters and latencies (requests by handler and status,
check-ins) are kept by the application's ``log_function``, which tornado calls once per request.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from pipenb.server.handlers.base import error_body

#: the text format every Prometheus reads (``generate_latest`` writes it)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerMetrics:
    """One control plane's registry: request counters and the state collector."""

    def __init__(self, cp: Any):
        self.cp = cp
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "pipenb_http_request_duration_seconds",
            "Time to answer an API request (long-polled check-ins include their wait)",
            ["handler", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checkins = Counter(
            "pipenb_checkins", "Agent check-ins answered", ["status"], registry=self.registry
        )
        self.registry.register(_StateCollector(cp))

    def observe(self, handler: tornado.web.RequestHandler) -> None:
        """tornado's ``log_function``: count and time every request."""
        name = type(handler).__name__
        status = str(handler.get_status())
        took = handler.request.request_time()
        self.requests.labels(name, handler.request.method or "", status).observe(took)
        if name == "CheckinHandler":
            self.checkins.labels(status).inc()


class _StateCollector:
    """Gauges read at scrape time, so they are never stale and cost nothing between scrapes."""

    def __init__(self, cp: Any):
        self.cp = cp

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from pipenb.server.db_tables import AgentRow, DeploymentRow, PipeStatusRow

        cp = self.cp
        offline_after = cp.settings.offline_seconds
        agents = {"online": 0, "offline": 0, "left": 0}
        with cp.sessions() as s:
            for agent_id, left_at in s.execute(select(AgentRow.id, AgentRow.left_at)):
                if left_at is not None:
                    agents["left"] += 1
                elif cp.live.is_online(agent_id, offline_after):
                    agents["online"] += 1
                else:
                    agents["offline"] += 1
            by_running = select(DeploymentRow.running, func.count()).group_by(DeploymentRow.running)
            deps = {running: n for running, n in s.execute(by_running)}
            by_state = select(PipeStatusRow.state, func.count()).group_by(PipeStatusRow.state)
            pipes = {state: n for state, n in s.execute(by_state)}
        g = GaugeMetricFamily("pipenb_agents", "Agents by state", labels=["state"])
        for state, n in agents.items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("pipenb_deployments", "Deployments by state", labels=["state"])
        g.add_metric(["running"], deps.get(True, 0))
        g.add_metric(["stopped"], deps.get(False, 0))
        yield g
        g = GaugeMetricFamily(
            "pipenb_pipe_instances", "Pipe instances by the state their agent reported",
            labels=["state"],
        )  # fmt: skip
        for state, n in sorted(pipes.items()):
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("pipenb_up_since_seconds", "When this server started (Unix time)")
        g.add_metric([], _STARTED)
        yield g
        # per process (several may serve one fleet: docs/server.md)
        g = GaugeMetricFamily(
            "pipenb_held_checkins", "Agent check-ins this process holds in a long poll"
        )
        # read on a worker thread while the event loop changes it: list() copies it at once
        g.add_metric([], sum(len(w) for w in list(cp.live.waiters.values())))
        yield g
        writes = cp.checkin.writes  # per process: check-in reports written in groups
        c = CounterMetricFamily(
            "pipenb_checkin_report_writes", "Check-in reports this process wrote to the database"
        )
        c.add_metric([], writes.items)
        yield c
        c = CounterMetricFamily(
            "pipenb_checkin_write_groups",
            "Transactions those reports were written in (reports arriving together share one)",
        )
        c.add_metric([], writes.groups)
        yield c
        g = GaugeMetricFamily(
            "pipenb_background_jobs",
            "1 when this process runs the fleet's background jobs (one process does)",
        )
        g.add_metric([], 1 if cp.coord.leading else 0)
        yield g


_STARTED = time.time()


def _loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: open on loopback, a user token elsewhere."""

    def check_xsrf_cookie(self) -> None:
        """Scrapers send no cookies."""

    async def get(self) -> None:
        cp = self.settings["pipenb"]
        if not _loopback(self.request.remote_ip):
            header = self.request.headers.get("Authorization", "")
            token = header[7:].strip() if header[:7].lower() == "bearer " else None
            if await cp.db.run(cp.users.authenticate, token) is None:
                self.set_status(401)
                self.set_header("WWW-Authenticate", 'Bearer realm="pipenb"')
                self.set_header("Content-Type", "application/json")
                self.finish(
                    error_body(
                        "unauthorized",
                        "/metrics is open on loopback only; from elsewhere send a user token "
                        "(Authorization: Bearer TOKEN; in Prometheus: authorization: {credentials: ...})",
                    )
                )
                return
        metrics: ServerMetrics = self.settings["pipenb_metrics"]
        # the gauges read every agent from the database: on a worker thread (dbpool.py), not
        # on the event loop the check-ins are answered on
        text = await cp.db.run(generate_latest, metrics.registry)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(text)
