"""Check-in soak and burst: many simulated agents on one real ``pipenb server`` (SQLite file).

Built on ``bench/checkin_load.py`` (its HTTP client on raw asyncio streams, its simulated
agent state, its statistics), with the work a production server does meanwhile:

- every agent runs at least one pipe (a deployment by a label all of them carry) and reports
  each pipe's metrics and checkpoint every 15 s, as the real agent does; the server keeps one
  metrics point per pipe per minute, so the store grows;
- every ``period`` seconds a deployment is created for one group of agents (a tenth of them),
  the one created two periods earlier is stopped (every third period: deleted while it runs,
  so its agents' last reports arrive after the delete) and the one four periods earlier deleted;
  every fourth period a new version of the pipe every agent runs is pushed (its deployment
  follows ``latest``, so every agent is handed a new pipe); every other period a ``restart``
  goes to one group and a ``capture`` (a tap) to one agent, whose events are read back;
- a dashboard reads (``GET /deployments/{id}``, ``/agents``, ``/metrics``) every period;
- about one agent a second restarts (a new process: ``seq`` from 0, a full report), agents
  send a log line now and then, and ``long_poll_agents`` more agents behave like the real
  agent: they hold long polls (``wait: 30``) and check in again at once when they have news.

The load agents check in every ``interval`` with ``wait: 0`` (evenly spread, as in
``checkin_load.py``), so their latency is the server's answer time; a failed check-in (no
answer within 20 s, a refused connection, a non-200) is followed by a full report after the
real agent's backoff (0.5 s doubling to 30 s, with jitter). Long-poll check-ins are counted
apart (their latency is the hold).
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing as mp
import os
import queue
import random
import secrets
import signal
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from checkin_load import AgentState, HttpConn, Records, with_timeout
from common import (
    ProcSeries,
    fmt,
    header,
    latency_summary,
    say,
    table,
    write_json,
)

# the real agent's backoff after a failed check-in (pipenb/agent): 0.5 s doubling to 30 s, and
# each wait drawn between half and 1.5 times that
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0

PIPE_ALL = """\
name: soak-all
description: every agent runs this one (version {version})
params:
  path: {{default: /var/log/app/*.log}}
  out: {{default: /var/lib/pipes/soak-all.ndjson}}
input:
  files: {{path: "{{{{path}}}}"}}
actions:
  - extract: {{field: _raw, pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$', remove: true}}
  - filter: level in ["WARN", "ERROR"]
  - add: {{host: "{{{{agent.name}}}}"}}
output:
  file: {{path: "{{{{out}}}}", rotate: {{size: 100MB, keep: 3}}}}
"""

PIPE_GROUP = """\
name: soak-group
description: deployed to one group of agents at a time
params:
  out: {default: /var/lib/pipes/soak-group.ndjson}
input:
  echo: {lines: ["hello from {{agent.id}}"], interval: 10s}
output:
  file: {path: "{{out}}"}
"""


@dataclass
class Config:
    name: str
    agents: int
    duration: float  # the load window, seconds
    interval: float = 5.0  # load agents check in this often (wait: 0)
    procs: int = 1  # load generator processes
    long_poll_agents: int = 20
    groups: int = 10  # deployments are churned one group (labels g0..g9) at a time
    period: float = 30.0  # deployment churn and dashboard reads
    report_every: float = 15.0  # metrics + checkpoint of each pipe (the agent's default)
    restarts_per_s: float = 1.0  # agents restarting (new process, full report)
    sample_every: float = 10.0
    warmup: float = 120.0  # the RSS slope is taken after this

    def params(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------- simulated agent
@dataclass
class SoakAgent(AgentState):
    """``checkin_load.AgentState`` plus what a production agent also sends: metrics and
    checkpoints every ``report_every`` per pipe, a final ``stopped`` report for a pipe taken
    away, command acks, captured events, log lines."""

    report_every: float = 15.0
    reported: dict[str, float] = field(default_factory=dict)  # deployment -> last metrics
    stopped: dict[str, str] = field(default_factory=dict)  # deployment -> hash, to report once
    acks: list[str] = field(default_factory=list)
    captures: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)  # deployment -> lines read (for metrics)
    started: float = field(default_factory=time.time)
    _with_metrics: list[str] = field(default_factory=list)

    def due(self, now: float) -> list[str]:
        return [d for d in self.running if now - self.reported.get(d, now) >= self.report_every]

    def news(self, now: float) -> bool:
        return bool(
            self.full
            or self.unreported
            or self.stopped
            or self.acks
            or self.captures
            or self.logs
            or self.due(now)
        )

    def restart(self) -> None:
        """A new agent process: sequence from 0, a full report, nothing pending."""
        self.seq = 0
        self.full = True
        self.desired_hash = None
        self.stopped.clear()
        self.acks.clear()
        self.captures.clear()
        self.started = time.time()

    def soak_body(self, now: float, wait: float) -> bytes:
        b: dict[str, Any] = {"agent_id": self.agent_id, "seq": self.seq, "wait": wait}
        if self.desired_hash is not None:
            b["desired_hash"] = self.desired_hash
        with_metrics: list[str]
        if self.full:
            b["full"] = True
            b["attributes"] = {"host": self.agent_id, "os": "Linux", "python": "3.11.7"}
            with_metrics = list(self.running)
            pipes = [self._soak_report(d, True, now) for d in self.running]
        else:
            b["full"] = False
            due = set(self.due(now))
            with_metrics = [d for d in self.running if d in due]
            pipes = [
                self._soak_report(d, d in due, now)
                for d in self.running
                if d in due or d in self.unreported
            ]
            pipes += [
                {"deployment_id": d, "hash": h, "state": "stopped"} for d, h in self.stopped.items()
            ]
        if pipes:
            b["pipes"] = pipes
        if self.acks or self.captures:
            b["acks"] = self.acks
            b["captures"] = self.captures
        if self.logs:
            b["logs"] = self.logs
        self._with_metrics = with_metrics
        return orjson.dumps(b)

    def _soak_report(self, dep: str, metrics: bool, now: float) -> dict[str, Any]:
        r: dict[str, Any] = {"deployment_id": dep, "hash": self.running[dep], "state": "running"}
        if metrics:
            n = self.read.get(dep, 0) + random.randint(500, 5000)
            self.read[dep] = n
            offset = n * 112
            r["metrics"] = {
                "pipe": "soak",
                "state": "running",
                "uptime_s": round(now - self.started, 3),
                "input": {"name": "files", "events": n, "bytes": offset, "errors": 0, "lag": 0},
                "actions": [
                    {"stage": "extract", "in": n, "out": n, "dropped": 0, "errors": 0},
                    {"stage": "filter", "in": n, "out": n * 3 // 10, "dropped": n - n * 3 // 10},
                    {"stage": "add", "in": n * 3 // 10, "out": n * 3 // 10, "dropped": 0},
                ],
                "output": {"name": "file", "events": n * 3 // 10, "errors": 0, "batches": n // 900},
                "dead_letters": 0,
                "checkpoints": n // 900,
            }
            r["checkpoint"] = {
                "files": {
                    "2049:1835011": {
                        "path": "/var/log/app/app.log",
                        "offset": offset,
                        "fp": "9f86d081884c7d65",
                        "fp_len": 1024,
                    }
                }
            }
        return r

    def done(self, now: float) -> None:
        """The server has this report (HTTP 200): forget what it carried."""
        for d in self._with_metrics:
            self.reported[d] = now
        self.stopped.clear()
        self.acks = []
        self.captures = []
        self.logs = []

    def soak_answer(self, data: bytes, now: float) -> tuple[int, int]:
        """Apply an answer; returns (pipes newly handed, commands received)."""
        before = dict(self.running)
        new = self.answer(data)
        for d, h in before.items():
            if d not in self.running:
                self.stopped[d] = h
                self.reported.pop(d, None)
                self.read.pop(d, None)
        for d in new:
            self.reported[d] = now  # the state now, metrics a report interval later
        commands = orjson.loads(data).get("commands") or []
        for c in commands:
            if c["type"] == "capture":
                limit = min(int(c["args"].get("limit", 10)), 10)
                self.captures.append(
                    {
                        "command_id": c["id"],
                        "events": [
                            {"ts": now, "level": "ERROR", "msg": f"captured {i}"}
                            for i in range(limit)
                        ],
                    }
                )
            else:
                self.acks.append(c["id"])
        return len(new), len(commands)


# ---------------------------------------------------------------------------- load process
@dataclass
class SoakJob:
    host: str
    port: int
    agents: list[tuple[int, str, str]]  # (index, id, key), checking in every interval
    lp_agents: list[tuple[str, str]]  # (id, key), long polls
    n_total: int
    interval: float
    t0: float
    report_every: float
    restart_p: float  # probability that a check-in is a restarted agent's first
    timeout: float = 20.0  # the real agent gives a check-in ``wait`` + 20 s


def soak_process(job: SoakJob, stop: Any, out: Any) -> None:
    """Entry point of a generator process: run the agents until ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    out.put(asyncio.run(_soak(job, stop)))


async def _soak(job: SoakJob, stop_flag: Any) -> dict[str, Any]:
    sent_at, latency, lag = array.array("d"), array.array("d"), array.array("d")
    status = array.array("h")
    lp_sent, lp_latency, lp_wait = array.array("d"), array.array("d"), array.array("d")
    lp_status, lp_woken = array.array("h"), array.array("b")
    errors: dict[str, int] = {}
    counts = {
        "full": 0,
        "with_metrics": 0,
        "stopped_reports": 0,
        "acks": 0,
        "captures": 0,
        "logs": 0,
        "restarts": 0,
        "pipes_handed": 0,
        "commands": 0,
        "connects": 0,
    }
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop_flag.is_set():
            await asyncio.sleep(0.25)
        stop.set()

    def count(st: SoakAgent, body: bytes) -> None:
        counts["full"] += st.full
        counts["with_metrics"] += len(st._with_metrics) > 0
        counts["stopped_reports"] += len(st.stopped)
        counts["acks"] += len(st.acks)
        counts["captures"] += len(st.captures)
        counts["logs"] += len(st.logs)

    def note_error(exc: BaseException) -> None:
        name = type(exc).__name__
        errors[name] = errors.get(name, 0) + 1

    async def agent(index: int, agent_id: str, key: str) -> None:
        st = SoakAgent(agent_id, key, report_every=job.report_every)
        conn = HttpConn(job.host, job.port, key)
        due = job.t0 + job.interval * index / job.n_total
        rng = random.Random(index)
        backoff = BACKOFF_FIRST
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop.is_set():
                break
            if st.seq > 0 and rng.random() < job.restart_p:
                st.restart()
                counts["restarts"] += 1
                conn.close()  # a new process: a new connection
            if rng.random() < 0.005:
                st.logs.append({"level": "warning", "message": f"slow write on {agent_id}"})
            now = time.time()
            body = st.soak_body(now, 0)
            count(st, body)
            t1 = time.monotonic()
            code = 0
            try:
                code, data = await with_timeout(
                    conn.request("POST", "/agent/checkin", body), job.timeout
                )
            except Exception as exc:  # counted, the agent goes on
                note_error(exc)
                data = b""
            t2 = time.monotonic()
            sent_at.append(t1)
            latency.append(t2 - t1)
            status.append(code)
            lag.append(t1 - due)
            st.sent()
            if code == 200:
                st.done(now)
                backoff = BACKOFF_FIRST
                try:
                    handed, cmds = st.soak_answer(data, time.time())
                    counts["pipes_handed"] += handed
                    counts["commands"] += cmds
                except Exception:
                    errors["bad answer"] = errors.get("bad answer", 0) + 1
                due += job.interval
                while due < t2:  # late: skip the missed slots, keep the even spread (no burst)
                    due += job.interval
            else:  # as the real agent: a full report next, after a backoff with jitter
                st.full = True
                due = t2 + backoff * (0.5 + rng.random())
                backoff = min(backoff * 2, BACKOFF_MAX)
        counts["connects"] += conn.connects
        conn.close()

    async def long_poller(agent_id: str, key: str) -> None:
        """Like the real agent: hold a long poll; check in again at once when there is news
        (a report is due, a pipe was handed); a failed check-in is retried after a backoff."""
        st = SoakAgent(agent_id, key, report_every=job.report_every)
        conn = HttpConn(job.host, job.port, key)
        backoff = BACKOFF_FIRST
        await asyncio.sleep(max(0.0, job.t0 - time.monotonic()) + random.random() * job.interval)
        while not stop.is_set():
            now = time.time()
            if st.news(now):
                wait = 0.0
            else:
                nxt = min(
                    (st.reported[d] + job.report_every for d in st.running if d in st.reported),
                    default=now + 30,
                )
                wait = max(0.0, min(30.0, nxt - now))
            body = st.soak_body(now, wait)
            count(st, body)
            t1 = time.monotonic()
            code, old_hash = 0, st.desired_hash
            try:
                code, data = await with_timeout(
                    conn.request("POST", "/agent/checkin", body), wait + job.timeout
                )
            except Exception as exc:
                note_error(exc)
                data = b""
            t2 = time.monotonic()
            lp_sent.append(t1)
            lp_latency.append(t2 - t1)
            lp_wait.append(wait)
            lp_status.append(code)
            st.sent()
            woken = False
            if code == 200:
                st.done(now)
                st.soak_answer(data, time.time())
                woken = wait > 0 and st.desired_hash != old_hash
                backoff = BACKOFF_FIRST
            else:
                st.full = True
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)
            lp_woken.append(woken)
        conn.close()

    watcher = asyncio.create_task(watch())
    tasks = [agent(i, a, k) for i, a, k in job.agents]
    tasks += [long_poller(a, k) for a, k in job.lp_agents]
    lp = [asyncio.ensure_future(t) for t in tasks[len(job.agents) :]]
    await asyncio.gather(*tasks[: len(job.agents)])
    for t in lp:
        t.cancel()  # a held request: no need to wait for its answer
    await asyncio.gather(*lp, return_exceptions=True)
    await watcher
    return {
        "sent_at": sent_at,
        "latency": latency,
        "status": status,
        "lag": lag,
        "lp_sent": lp_sent,
        "lp_latency": lp_latency,
        "lp_wait": lp_wait,
        "lp_status": lp_status,
        "lp_woken": lp_woken,
        "errors": errors,
        "counts": counts,
    }


async def receive(q: Any, timeout: float) -> Any:
    """The next item of a multiprocessing queue, polled: a thread blocked in ``get`` would
    outlive a cancelled soak (Ctrl-C) and hold up the interpreter's exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get_nowait()
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError("a generator process sent no results") from None
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- server and store
def seed(db_url: str, specs: list[tuple[str, list[str]]]) -> dict[str, str]:
    """Agents and their keys written into a new store before the server starts.

    The same rows ``POST /agents`` and ``POST /agents/{id}/keys`` write; through the API each
    add re-places every deployment (O(N^2) in all: ~25 s for 1,000 agents, many minutes for
    5,000), and setup is not what a soak measures.
    """
    from pipenb.server.db import make_engine, migrate
    from pipenb.server.db_tables import AgentRow, ApiKeyRow, utcnow
    from pipenb.server.security import hash_secret, new_api_key, split_api_key

    engine = make_engine(db_url)
    migrate(engine)
    keys: dict[str, str] = {}
    agents, key_rows = [], []
    now = utcnow()
    for agent_id, labels in specs:
        key_id, api_key = new_api_key()
        keys[agent_id] = api_key
        agents.append(
            {
                "id": agent_id,
                "name": agent_id,
                "labels": labels,
                "attributes": {},
                "enrolled": False,
                "created_at": now,
            }
        )
        key_rows.append(
            {
                "id": key_id,
                "agent_id": agent_id,
                "hash": hash_secret(split_api_key(api_key)[1]),  # type: ignore[index]
                "created_at": now,
            }
        )
    with engine.begin() as conn:
        conn.execute(AgentRow.__table__.insert(), agents)
        conn.execute(ApiKeyRow.__table__.insert(), key_rows)
    engine.dispose()
    return keys


STORE_QUERIES = {
    "agents": "select count(*) from agents",
    "deployments": "select count(*) from deployments",
    "assignments": "select count(*) from assignments",
    "pipe_status": "select count(*) from pipe_status",
    "pipe_status_orphans": "select count(*) from pipe_status where deployment_id not in "
    "(select id from deployments)",
    "pipe_versions": "select count(*) from pipe_versions",
    "commands": "select count(*) from commands",
    "commands_unacked": "select count(*) from commands where acked_at is null",
    "metrics": "select count(*) from metrics",
    "logs": "select count(*) from logs",
}


def store_stats(db_path: str) -> dict[str, Any]:
    """Row counts and file sizes of the SQLite store (read while the server runs: WAL)."""
    out: dict[str, Any] = {}
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            for k, q in STORE_QUERIES.items():
                try:
                    out[k] = con.execute(q).fetchone()[0]
                except sqlite3.Error:
                    out[k] = None
        finally:
            con.close()
    except sqlite3.Error as exc:
        out["error"] = str(exc)
    size = sum(os.path.getsize(db_path + s) for s in ("", "-wal") if os.path.exists(db_path + s))
    out["file_mb"] = round(size / 1e6, 1)
    return out


# ---------------------------------------------------------------------------- user side
class User:
    """The user API on one connection; every call's latency and status is kept, failures too."""

    def __init__(self, host: str, port: int, token: str, t0: float):
        self.conn = HttpConn(host, port, token)
        self.t0 = t0
        self.calls: list[tuple[float, str, float, int]] = []  # (t, op, seconds, status)
        self.failures: list[str] = []

    async def __call__(self, op: str, method: str, path: str, body: Any = None) -> Any:
        t1 = time.monotonic()
        try:
            code, data = await with_timeout(self.conn.request(method, path, body), 120)
        except Exception as exc:
            code, data = 0, repr(exc).encode()
        self.calls.append((t1 - self.t0, op, time.monotonic() - t1, code))
        if not 200 <= code < 300:
            self.failures.append(f"{method} {path}: {code} {data[:300]!r}")
            return None
        return orjson.loads(data) if data else {}

    def summary(self) -> dict[str, Any]:
        ops: dict[str, list[tuple[float, int]]] = {}
        for _, op, sec, code in self.calls:
            ops.setdefault(op, []).append((sec, code))
        out = {}
        for op, xs in sorted(ops.items()):
            ok = [s for s, c in xs if 200 <= c < 300]
            lat = latency_summary(ok)
            out[op] = {
                "calls": len(xs),
                "errors": len(xs) - len(ok),
                "p50_ms": lat["p50"],
                "max_ms": lat["max"],
            }
        return out


async def churn(
    user: User, cfg: Config, t0: float, t_end: float, dep_all: str, done: dict[str, Any]
) -> None:
    """Deployments created, stopped and deleted, versions pushed, commands, dashboard reads.

    Counts what it did in ``done`` as it goes: the caller cancels it at the end of the window.
    """
    created: list[str] = []
    versions = 1
    captures: list[str] = []
    k = 0
    while True:
        k += 1
        at = t0 + k * cfg.period
        if at >= t_end:
            break
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        done["periods"] = k
        group = f"g{k % cfg.groups}"
        dep = await user(
            "create deployment",
            "POST",
            "/deployments",
            {"pipe": "soak-group", "labels": [group], "params": {"out": f"/tmp/soak-{k}.ndjson"}},
        )
        created.append(dep["id"] if dep else "")
        done["deployments_created"] = len(created)
        if len(created) > 2 and created[-3] and k % 3 == 0:
            # deleted while running: its agents send a last "stopped" report afterwards
            await user("delete running deployment", "DELETE", f"/deployments/{created[-3]}")
            created[-3] = ""
        elif len(created) > 2 and created[-3]:
            await user("stop deployment", "POST", f"/deployments/{created[-3]}/stop")
        if len(created) > 4 and created[-5]:
            await user("delete deployment", "DELETE", f"/deployments/{created[-5]}")
        if k % 4 == 0:
            versions += 1
            done["versions_pushed"] = versions - 1
            await user(
                "push version",
                "POST",
                "/pipes",
                {"yaml": PIPE_ALL.format(version=versions), "message": f"v{versions}"},
            )
        running = created[-2] if len(created) > 1 and created[-2] else None
        if k % 2 == 0 and running:
            await user("command", "POST", f"/deployments/{running}/commands", {"type": "restart"})
            d = await user("show deployment", "GET", f"/deployments/{running}")
            if d and d["status"]:
                got = await user(
                    "command",
                    "POST",
                    f"/deployments/{running}/commands",
                    {"type": "capture", "agent": d["status"][0]["agent_id"], "limit": 5},
                )
                if got:
                    captures.extend(c["id"] for c in got["commands"])
        for cid in captures[-3:-1]:  # earlier taps: their events are back by now
            await user("read capture", "GET", f"/commands/{cid}")
        # the dashboard
        await user("show deployment (all agents)", "GET", f"/deployments/{dep_all}")
        await user("list agents", "GET", "/agents")
        if running:
            await user("metrics", "GET", f"/deployments/{running}/metrics?limit=200")


# ---------------------------------------------------------------------------- the soak
def run(cfg: Config) -> dict[str, Any]:
    return asyncio.run(_run(cfg))


async def _run(cfg: Config) -> dict[str, Any]:
    from support.serverproc import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix=f"pipenb-soak-{cfg.name}-"))
    db_path = str(tmp / "server.db")
    specs = [(f"soak-{i + 1:05d}", ["soak", f"g{i % cfg.groups}"]) for i in range(cfg.agents)]
    lp_specs = [
        (f"lp-{i + 1:04d}", ["soak", "lp", f"g{i % cfg.groups}"])
        for i in range(cfg.long_poll_agents)
    ]
    result = header(cfg.name, cfg.params())
    load_start = os.getloadavg()[0]
    t = time.monotonic()
    keys = seed(f"sqlite:///{db_path}", specs + lp_specs)
    say(
        f"[{cfg.name}] {cfg.agents} agents every {cfg.interval:g} s "
        f"(+{cfg.long_poll_agents} long-polling) for {cfg.duration:g} s; "
        f"store seeded in {time.monotonic() - t:.1f} s; load average {load_start:.2f}"
    )
    server = ServerProcess(
        tmp, token=secrets.token_urlsafe(16), poll_interval=cfg.interval, long_poll=30.0
    )
    procs: list[Any] = []
    stop: Any = None
    try:
        await asyncio.to_thread(server.start)
        assert server.proc is not None
        pid = server.proc.pid
        parts = urlsplit(server.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        t_setup = time.monotonic()
        user = User(host, port, server.token, t_setup)
        for text in (PIPE_ALL.format(version=1), PIPE_GROUP):
            if (
                await user("push version", "POST", "/pipes", {"yaml": text, "message": "v1"})
                is None
            ):
                raise RuntimeError("; ".join(user.failures))
        dep = await user("create deployment", "POST", "/deployments", {"pipe": "soak-all"})
        if dep is None:
            raise RuntimeError("; ".join(user.failures))
        dep_all = dep["id"]
        say(f"[{cfg.name}] server pid {pid}, setup {time.monotonic() - t_setup:.1f} s")
        store_start = store_stats(db_path)

        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        out = ctx.Queue()
        t0 = time.monotonic() + 3.0  # time for the generator processes to start
        t_end = t0 + cfg.duration
        load = [(i, a, keys[a]) for i, (a, _) in enumerate(specs)]
        lps = [(a, keys[a]) for a, _ in lp_specs]
        restart_p = cfg.restarts_per_s * cfg.interval / max(1, cfg.agents)
        for p in range(cfg.procs):
            job = SoakJob(
                host,
                port,
                load[p :: cfg.procs],
                lps[p :: cfg.procs],
                cfg.agents,
                cfg.interval,
                t0,
                cfg.report_every,
                restart_p,
            )
            proc = ctx.Process(target=soak_process, args=(job, stop, out), daemon=True)
            proc.start()
            procs.append(proc)
        srv = ProcSeries(pid, t0, cfg.sample_every)
        gens = [ProcSeries(p.pid, t0, cfg.sample_every) for p in procs]

        def progress(x: Any) -> None:
            if x.t < 1:
                return
            g = sum(s.cpu_pct(x.t - 2 * cfg.sample_every, x.t) for s in gens)  # taken after srv
            say(
                f"[{cfg.name}] t={x.t:5.0f} s  server CPU "
                f"{srv.cpu_pct(x.t - cfg.sample_every, x.t):5.1f}%  RSS {x.rss_mb:6.1f} MB  "
                f"generator CPU {g:5.1f}%  load average {os.getloadavg()[0]:.2f}"
            )

        samplers = [asyncio.create_task(srv.run(progress))]
        samplers += [asyncio.create_task(g.run()) for g in gens]
        churned: dict[str, Any] = {"periods": 0, "deployments_created": 0, "versions_pushed": 0}
        work = asyncio.create_task(churn(user, cfg, t0, t_end, dep_all, churned))
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        churned["cut_at_the_end"] = not work.done()  # a user call still waiting: abandoned
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        store_end = await asyncio.to_thread(store_stats, db_path)
        stop.set()
        results = [await receive(out, 180) for _ in procs]
        for proc in procs:
            proc.join(30)
        for task in samplers:
            task.cancel()
        user.conn.close()
        await asyncio.sleep(10)  # the server works off what it still holds
        after = srv.take()
        result.update(
            figures(cfg, results, srv, gens, t0, t_end, user, churned, store_start, store_end)
        )
        result["server"]["rss_mb"]["10s_after_the_load"] = after.rss_mb if after else None
        result["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    finally:
        if stop is not None:
            stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        code = server.stop()
        log = server.log.read_text(errors="replace") if server.log.exists() else ""
        bad = [x for x in log.splitlines() if x.startswith(("ERROR", "Traceback", "CRITICAL"))]
        result["server_log"] = {
            "lines": len(log.splitlines()),
            "error_lines": len(bad),
            "first_errors": bad[:10],
            "exit_code": code,
        }
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return result


def figures(
    cfg: Config,
    results: list[dict[str, Any]],
    srv: ProcSeries,
    gens: list[ProcSeries],
    t0: float,
    t_end: float,
    user: User,
    churned: dict[str, Any],
    store_start: dict[str, Any],
    store_end: dict[str, Any],
) -> dict[str, Any]:
    rec = Records([], [], [], [])
    lp = {"requests": 0, "held": 0, "woken": 0, "errors": 0, "held_latency": []}
    errors: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r in results:
        rec.sent_at.extend(x - t0 for x in r["sent_at"])
        rec.latency.extend(r["latency"])
        rec.status.extend(r["status"])
        rec.lag.extend(r["lag"])
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for t, _lat, w, s, woken in zip(
            r["lp_sent"], r["lp_latency"], r["lp_wait"], r["lp_status"], r["lp_woken"]
        ):
            if t - t0 > cfg.duration:
                continue
            lp["requests"] += 1
            lp["errors"] += not 200 <= s < 300
            if w > 0:
                lp["held"] += 1
                lp["woken"] += woken
    dur = cfg.duration
    expected = cfg.agents / cfg.interval
    whole = rec.window(0, dur)
    steady = rec.window(cfg.interval, dur)
    series = []
    for a in range(0, int(dur), int(cfg.sample_every)):
        b = a + cfg.sample_every
        w = rec.window(a, b)
        lat = latency_summary(w.ok_latencies())
        s1 = min(srv.samples, key=lambda s: abs(s.t - b)) if srv.samples else None
        series.append(
            {
                "t": a,
                "rps": round(len(w.latency) / (min(b, dur) - a), 1),
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "max_ms": lat["max"],
                "errors": sum(w.error_counts().values()),
                "server_cpu_pct": round(srv.cpu_pct(a, b), 1),
                "server_runq_pct": round(srv.runq_pct(a, b), 1),
                "server_rss_mb": s1.rss_mb if s1 else None,
                "generator_cpu_pct": round(sum(g.cpu_pct(a, b) for g in gens), 1),
            }
        )
    gen_cpu = sum(g.cpu_pct(0, dur) for g in gens)
    # the 10 s after each churn step (a deployment created, stopped or deleted, maybe a version
    # pushed): where placement work shows in the agents' latency
    steps = [k * cfg.period for k in range(1, int(dur // cfg.period) + 1) if k * cfg.period < dur]
    churn_lat: list[float] = []
    churn_p99: list[float] = []
    for a in steps:
        w = rec.window(a, a + cfg.sample_every).ok_latencies()
        churn_lat.extend(w)
        churn_p99.append(latency_summary(w)["p99"])
    return {
        "window_s": dur,
        "requests": len(whole.latency),
        "rate_rps": round(len(whole.latency) / dur, 1),
        "expected_rps": round(expected, 1),
        "latency_ms": latency_summary(whole.ok_latencies()),
        "latency_steady_ms": latency_summary(steady.ok_latencies()),
        "latency_after_warmup_ms": latency_summary(rec.window(cfg.warmup, dur).ok_latencies()),
        "latency_after_churn_ms": latency_summary(sorted(churn_lat)),
        "churn_step_p99_ms": churn_p99,
        "errors": whole.error_counts(),
        "client_exceptions": errors,
        "client_late_sends": sum(1 for x in whole.lag if x > 0.1),
        "server": {
            "cpu_pct": round(srv.cpu_pct(0, dur), 1),
            "runq_pct": round(srv.runq_pct(0, dur), 1),
            "rss_mb": srv.rss_summary(dur, cfg.warmup),
            "fds": srv.fd_summary(),
        },
        "generator": {
            "procs": len(gens),
            "cpu_pct": round(gen_cpu, 1),
            "rss_mb": round(sum(g.samples[-1].rss_mb for g in gens if g.samples), 1),
        },
        "agent_reports": counts,
        "long_poll": {k: v for k, v in lp.items() if k != "held_latency"},
        "churn": churned,
        "user_api": user.summary(),
        "user_api_failures": user.failures[:20],
        "store": {"start": store_start, "end": store_end},
        "series": series,
    }


def summary(r: dict[str, Any]) -> str:
    p = r["params"]
    lat, st, aw = r["latency_ms"], r["latency_steady_ms"], r["latency_after_warmup_ms"]
    ch = r["latency_after_churn_ms"]
    rss = r["server"]["rss_mb"]
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    exc = ", ".join(f"{k}: {v}" for k, v in r["client_exceptions"].items())
    lp = r["long_poll"]
    s0, s1 = r["store"]["start"], r["store"]["end"]
    rows = [
        ["agents", f"{p['agents']:,} every {p['interval']:g} s, wait 0 "
         f"(+{p['long_poll_agents']} long-polling), {p['duration']:g} s"],
        ["requests", f"{r['requests']:,}: {r['rate_rps']:.1f} req/s "
         f"(expected {r['expected_rps']:.1f})"],
        ["latency, whole window", f"p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
         f"p99 {lat['p99']:.1f}  max {lat['max']:.1f} ms"],
        ["latency, after the first interval", f"p50 {st['p50']:.1f}  p90 {st['p90']:.1f}  "
         f"p99 {st['p99']:.1f}  max {st['max']:.1f} ms"],
        ["latency, after warm-up", f"p50 {aw['p50']:.1f}  p90 {aw['p90']:.1f}  "
         f"p99 {aw['p99']:.1f}  max {aw['max']:.1f} ms (from {p['warmup']:g} s on)"],
        ["latency, 10 s after each churn step", f"p50 {ch['p50']:.1f}  p90 {ch['p90']:.1f}  "
         f"p99 {ch['p99']:.1f}  max {ch['max']:.1f} ms; p99 per step "
         + " ".join(f"{x:.0f}" for x in r["churn_step_p99_ms"])],
        ["errors", errs + (f" (client: {exc})" if exc else "")],
        ["server CPU", f"{fmt(r['server']['cpu_pct'])}% of one core; ready but waiting for a "
         f"CPU {fmt(r['server']['runq_pct'])}% of the time"],
        ["server RSS", f"start {fmt(rss.get('start'))}, after warm-up "
         f"{fmt(rss.get('after_warmup'))}, middle {fmt(rss.get('middle'))}, end "
         f"{fmt(rss.get('end'))}, max {fmt(rss.get('max'))}, 10 s after the load "
         f"{fmt(rss.get('10s_after_the_load'))} MB"],
        ["RSS slope after warm-up", f"{fmt(rss.get('slope_mb_per_min'))} MB/min "
         f"(from {fmt(rss.get('warmup_s'))} s on)"],
        ["server open fds", f"{r['server']['fds']}"],
        ["generator", f"{r['generator']['procs']} process(es), {fmt(r['generator']['cpu_pct'])}%"
         f" of one core, {r['client_late_sends']:,} sends >100 ms late"],
        ["long polls", f"{lp['requests']:,} check-ins, {lp['held']:,} held, {lp['woken']:,} "
         f"woken by a change, {lp['errors']} errors"],
        ["agent reports", ", ".join(f"{k} {v:,}" for k, v in r["agent_reports"].items())],
        ["churn", ", ".join(f"{k} {v}" for k, v in r["churn"].items())],
        ["store", ", ".join(f"{k} {s0.get(k)}->{v}" for k, v in s1.items())],
        ["server log", f"{r['server_log']['error_lines']} ERROR/Traceback lines, exit code "
         f"{r['server_log']['exit_code']}"],
    ]  # fmt: skip
    out = [table(["figure", "value"], rows), ""]
    out.append(
        table(
            ["user API call", "calls", "errors", "p50 ms", "max ms"],
            [
                [k, v["calls"], v["errors"], v["p50_ms"], v["max_ms"]]
                for k, v in r["user_api"].items()
            ],
        )
    )
    out.append("")
    cols = ["t", "rps", "p50_ms", "p99_ms", "max_ms", "errors", "server_cpu_pct"]
    cols += ["server_runq_pct", "server_rss_mb", "generator_cpu_pct"]
    out.append(table(["t s", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "srv CPU%",
                      "srv runq%", "srv RSS MB", "gen CPU%"],
                     [[x[c] for c in cols] for x in r["series"]]))  # fmt: skip
    return "\n".join(out)


def write(r: dict[str, Any]) -> Path:
    return write_json(r["soak"], r)
