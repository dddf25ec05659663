"""``--metrics-address``: the agent's pipes in Prometheus's text format, at ``GET /metrics``.

Off by default: an agent opens no port unless asked. The figures are the ones each worker
reports to the agent (every ``--metrics-every`` seconds at most, and at every state change), per
pipe (``deployment``, ``pipe``) and stage: events in/out/dropped/errors, output events, batches,
errors, retries and write latency, dead letters, the input's lag (bytes not yet read, for
files), and the input's own counters (such as ``kernel_dropped`` of ``udp`` or
``buffer_bytes`` of a disk buffer). Counters restart at 0 when a pipe's worker restarts, which
Prometheus's ``rate()`` handles.

``prometheus_client`` (in the ``server`` extra) writes the format; an agent installed without it
refuses ``--metrics-address`` with the command that installs it.
"""

from __future__ import annotations

import logging
from typing import Any

from pipenb.errors import AgentError

log = logging.getLogger("pipenb.agent.metrics")

_STAGE = (("in", "events_in"), ("out", "events_out"), ("dropped", "dropped"), ("errors", "errors"))


class _PipesCollector:
    def __init__(self, agent: Any):
        self.agent = agent

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stage = {
            name: CounterMetricFamily(
                f"pipenb_stage_{metric}", f"Events {name} of a pipe's stage",
                labels=["deployment", "pipe", "stage"],
            )
            for name, metric in _STAGE
        }  # fmt: skip
        out_events = CounterMetricFamily("pipenb_output_events", "Events written",
                                         labels=["deployment", "pipe"])  # fmt: skip
        out_errors = CounterMetricFamily("pipenb_output_errors", "Events the output refused",
                                         labels=["deployment", "pipe"])  # fmt: skip
        out_retries = CounterMetricFamily("pipenb_output_retries", "Output writes retried",
                                          labels=["deployment", "pipe"])  # fmt: skip
        latency = GaugeMetricFamily("pipenb_output_latency_seconds",
                                    "Average time to write a batch", labels=["deployment", "pipe"])  # fmt: skip
        dead = CounterMetricFamily("pipenb_dead_letters", "Events sent to errors:",
                                   labels=["deployment", "pipe"])  # fmt: skip
        lag = GaugeMetricFamily("pipenb_input_lag_bytes", "Input not read yet (checkpoint lag)",
                                labels=["deployment", "pipe"])  # fmt: skip
        extra = GaugeMetricFamily("pipenb_input_stat", "The input's own counters and gauges",
                                  labels=["deployment", "pipe", "name"])  # fmt: skip
        up = GaugeMetricFamily("pipenb_pipe_up", "1 while the pipe runs",
                               labels=["deployment", "pipe", "state"])  # fmt: skip
        for w in list(self.agent.workers.values()):
            dep = w.dep_id
            pipe = str((w.desired or {}).get("pipe", ""))
            up.add_metric([dep, pipe, str(w.state)], 1.0 if w.state == "running" else 0.0)
            m = w.metrics or {}
            inp = m.get("input") or {}
            if inp:
                stage["out"].add_metric([dep, pipe, "input"], inp.get("events", 0))
                stage["errors"].add_metric([dep, pipe, "input"], inp.get("errors", 0))
                if isinstance(inp.get("lag"), (int, float)):
                    lag.add_metric([dep, pipe], inp["lag"])
                for k, v in inp.items():
                    if k not in ("name", "events", "bytes", "errors", "lag") and isinstance(
                        v, (int, float)
                    ):
                        extra.add_metric([dep, pipe, k], v)
            for i, a in enumerate(m.get("actions") or []):
                name = f"{i}:{a.get('stage', '')}"
                for key, _ in _STAGE:
                    stage[key].add_metric([dep, pipe, name], a.get(key, 0))
            o = m.get("output") or {}
            if o:
                out_events.add_metric([dep, pipe], o.get("events", 0))
                out_errors.add_metric([dep, pipe], o.get("errors", 0))
                out_retries.add_metric([dep, pipe], o.get("retries", 0))
                latency.add_metric([dep, pipe], (o.get("latency_ms") or 0) / 1000)
            if "dead_letters" in m:
                dead.add_metric([dep, pipe], m["dead_letters"])
        yield from stage.values()
        yield from (out_events, out_errors, out_retries, latency, dead, lag, extra, up)


async def serve(agent: Any, address: str) -> Any:
    """Start the endpoint on ``address`` (``host:port``); the tornado server, to stop it."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise AgentError(
            "pipenb agent: --metrics-address needs prometheus_client: "
            "pip install 'pipenb-fleet[server]' (or pip install prometheus_client)"
        ) from None
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from pipenb.engine.net import split_address

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_PipesCollector(agent))

    class Handler(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.finish(generate_latest(registry))

    host, port = split_address(address)
    server = HTTPServer(tornado.web.Application([("/metrics", Handler)]))
    sockets = bind_sockets(port, host or None)
    server.add_sockets(sockets)
    agent.metrics_port = sockets[0].getsockname()[1]
    log.info("metrics at http://%s:%d/metrics", host or "*", agent.metrics_port)
    return server
