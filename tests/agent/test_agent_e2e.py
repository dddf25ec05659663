"""The agent end to end: a real ``pipenb server``, real ``pipenb agent`` processes, their real
worker processes and real files, all on 127.0.0.1 (SPEC sections 3 and 4).

Each test enrolls its own agents with labels of its own, so tests that share the module's server
never run each other's deployments. Every wait polls a condition with a deadline; every process
a test starts is killed by a fixture finalizer, workers included, even when the test fails.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.client import Client

from support.agentproc import AgentProcess, end_all, tmp_policy
from support.httpsink import HttpSink
from support.processes import pid_alive
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-e2e"
POLL = 1.0  # the server's poll interval: an agent is offline after 3 of them
LONG_POLL = 5.0  # how long the agents let the server hold a check-in
BATCH = 50  # output batch size of the test pipes: "duplicates up to one batch"


# ------------------------------------------------------------------------------ waiting


# ------------------------------------------------------------------------------ files


class LineWriter:
    """Appends numbered lines (``PREFIX-000123``) to a file, at once or from a thread."""

    def __init__(self, path: Path, prefix: str = "line"):
        self.path = path
        self.prefix = prefix
        self.n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, i: int) -> str:
        return f"{self.prefix}-{i:06d}"

    def write(self, count: int) -> None:
        with self._lock:
            text = "".join(self.line(i) + "\n" for i in range(self.n, self.n + count))
            with open(self.path, "a") as fh:
                fh.write(text)
            self.n += count

    def start(self, burst: int = 10, pause: float = 0.01) -> LineWriter:
        """Keep appending ``burst`` lines every ``pause`` seconds until ``stop()``."""

        def run() -> None:
            while not self._stop.is_set():
                self.write(burst)
                self._stop.wait(pause)  # poll: paces the writer, nothing waits on it

        self._stop.clear()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        return self.n

    def lines(self, start: int = 0, end: int | None = None) -> list[str]:
        return [self.line(i) for i in range(start, self.n if end is None else end)]


def read_events(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The events of an NDJSON output (complete lines only) and how many lines were torn."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    cut = data.rfind(b"\n")
    events, torn = [], 0
    for line in data[: cut + 1].splitlines():
        if not line.strip():
            continue
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            torn += 1  # a write cut short by SIGKILL, ended by the output on restart
    return events, torn


def raws(path: Path) -> list[str]:
    return [e["_raw"] for e in read_events(path)[0]]


def has_all(path: Path, lines: list[str]) -> bool:
    return set(lines) <= set(raws(path))


def duplicates(values: list[str]) -> int:
    return sum(n - 1 for n in collections.Counter(values).values() if n > 1)


def out_path(tmp: Path, agent_id: str, stem: str = "out") -> Path:
    return tmp / f"{stem}-{agent_id}.ndjson"


def files_pipe(
    name: str,
    src: Path,
    out: Path | str,
    actions: list[str] = (),  # type: ignore[assignment]
    *,
    labels: list[str] | None = None,
) -> str:
    """A ``files`` -> ``file`` pipe that reacts fast (50 ms polls and batch timeouts)."""
    doc = [f"name: {name}"]
    if labels:
        doc.append(f"labels: [{', '.join(labels)}]")
    doc += ["input:", f'  files: {{path: "{src}", poll-interval: 50ms}}']
    if actions:
        doc += ["actions:", *(f"  - {a}" for a in actions)]
    doc += ["output:", f'  file: {{path: "{out}", batch: {{size: {BATCH}, timeout: 50ms}}}}']
    return "\n".join(doc) + "\n"


PER_AGENT = "{{agent.id}}"  # the template each agent renders into its own output path


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


# ------------------------------------------------------------------------------ status


def status(client: Client, dep_id: str) -> list[dict[str, Any]]:
    return client.deployment(dep_id)["status"]


def brief(client: Client, dep_id: str) -> str:
    d = client.deployment(dep_id)
    rows = [
        (s["agent_id"], s["agent_state"], s["state"], s["in_sync"], s["error"]) for s in d["status"]
    ]
    return f"deployment {dep_id}: {d['state']} {rows}"


def running_everywhere(client: Client, dep_id: str, agent_ids: list[str]) -> bool:
    st = status(client, dep_id)
    return sorted(s["agent_id"] for s in st) == sorted(agent_ids) and all(
        s["state"] == "running" and s["in_sync"] and s["agent_state"] == "online" for s in st
    )


def instance(client: Client, dep_id: str, agent_id: str) -> dict[str, Any] | None:
    return next((s for s in status(client, dep_id) if s["agent_id"] == agent_id), None)


def online(client: Client, agent_id: str) -> bool:
    return client.agent(agent_id)["state"] == "online"


# ------------------------------------------------------------------------------ fixtures

SERVER = {"enroll_key": ENROLL_KEY, "poll_interval": POLL}  # the shared srv fixture


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[AgentFactory]:
    """``agents(server, name, labels=[...], **AgentProcess options)``: a started, enrolled agent
    with a data dir of its own (``data_dir=`` to reuse one, ``enroll=False`` to use its saved
    identity). Their policy lets pipes read and write under the temp dir (``extra=`` adds
    flags; later ones win). Every agent and worker is killed at the end; their logs are printed
    (pytest shows them when the test failed)."""
    made: list[AgentProcess] = []

    def start(
        server: ServerProcess,
        name: str,
        labels: list[str] = (),  # type: ignore[assignment]
        *,
        data_dir: Path | None = None,
        enroll: bool = True,
        wait: bool = True,
        **kw: Any,
    ) -> AgentProcess:
        kw["extra"] = (*tmp_policy(), *kw.get("extra", ()))
        agent = AgentProcess(
            server.url,
            data_dir or tmp_path / f"agent-{name}",
            enroll_key=ENROLL_KEY if enroll else None,
            name=name if enroll else None,
            labels=labels if enroll else (),
            **kw,
        )
        made.append(agent)
        agent.start()
        if wait:
            agent.wait_enrolled()
        return agent

    try:
        yield start
    finally:
        end_all(made, worker_logs=True)


# ------------------------------------------------------------------------------ 1. deploy, upgrade, stop


def test_deploy_by_label_upgrade_and_stop_on_two_agents(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("web")
    a1 = agents(srv, "one", [label, "eu"])
    a2 = agents(srv, "two", [label])
    ids = [a1.wait_enrolled(), a2.wait_enrolled()]
    outs = [out_path(tmp_path, i) for i in ids]
    src = tmp_path / "in.log"
    w = LineWriter(src)
    w.write(100)
    pipe = unique("fleet")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep = client.deploy(pipe, labels=[label])
    assert dep["version"] == "latest"
    dep_id = dep["id"]
    wait_until(
        lambda: running_everywhere(client, dep_id, ids),
        20,
        "both agents running it",
        lambda: brief(client, dep_id),
    )
    first = w.lines()
    for out in outs:
        wait_until(lambda out=out: has_all(out, first), 20, f"the first lines in {out.name}")
        assert "v" not in read_events(out)[0][0]

    # a new version: the deployment follows "latest", both agents replace their workers
    v2 = client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson", ["add: {v: 2}"]))
    assert v2["created"] is True
    wait_until(
        lambda: (
            client.deployment(dep_id)["resolved_version"] == 2
            and running_everywhere(client, dep_id, ids)
        ),
        20,
        "both agents running version 2",
        lambda: brief(client, dep_id),
    )
    w.write(100)
    second = w.lines(100)
    for out in outs:
        wait_until(lambda out=out: has_all(out, second), 20, f"v2 lines in {out.name}")
        events = read_events(out)[0]
        assert all(e.get("v") == 2 for e in events if e["_raw"] in set(second))
        assert all("v" not in e for e in events if e["_raw"] in set(first))

    # upgrade (here: back) to a pinned version through the API
    client.upgrade(dep_id, 1)
    wait_until(
        lambda: (
            client.deployment(dep_id)["resolved_version"] == 1
            and running_everywhere(client, dep_id, ids)
        ),
        20,
        "both agents running version 1 again",
        lambda: brief(client, dep_id),
    )
    w.write(50)
    third = w.lines(200)
    for out in outs:
        wait_until(lambda out=out: has_all(out, third), 20, f"v1 lines in {out.name}")
        events = read_events(out)[0]
        assert all("v" not in e for e in events if e["_raw"] in set(third))
        values = raws(out)
        assert set(values) == set(w.lines())
        assert duplicates(values) <= BATCH  # replacing a worker drains it: at most one batch

    # stop: the agents drain, report it stopped, and write nothing more
    workers_before = [a.worker_pids() for a in (a1, a2)]
    assert all(len(p) == 1 for p in workers_before), workers_before
    client.stop(dep_id)

    def stopped_everywhere() -> bool:
        st = status(client, dep_id)
        return len(st) == 2 and all(s["state"] == "stopped" for s in st)

    wait_until(
        stopped_everywhere, 20, "both agents reporting it stopped", lambda: brief(client, dep_id)
    )
    assert client.deployment(dep_id)["state"] == "stopped"
    wait_until(lambda: not a1.worker_pids() and not a2.worker_pids(), 20, "the workers to exit")
    assert not any(pid_alive(p) for pids in workers_before for p in pids)
    sizes = [o.stat().st_size for o in outs]
    w.write(30)
    after_stop = w.lines(250)
    # started again, it resumes from its checkpoint: the lines appended while it was stopped
    # appear only now, once
    assert [o.stat().st_size for o in outs] == sizes
    client.start(dep_id)
    for out in outs:
        wait_until(lambda out=out: has_all(out, after_stop), 20, f"resumed lines in {out.name}")
        assert collections.Counter(raws(out))[after_stop[0]] == 1
    assert a1.alive() and a2.alive()


# ------------------------------------------------------------------------------ 2. SIGKILL


@pytest.mark.parametrize("what", ["agent", "agent-and-workers"])
def test_sigkill_mid_stream_then_restart_loses_nothing(
    what: str, srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("kill")
    a = agents(srv, "victim", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, "victim")
    pipe = unique("crash")
    client.push(files_pipe(pipe, src, out))
    w = LineWriter(src).start()
    try:
        dep_id = client.deploy(pipe, labels=[label])["id"]
        wait_until(
            lambda: len(raws(out)) >= 300,
            20,
            "output before the kill",
            lambda: brief(client, dep_id),
        )
        if what == "agent":
            a.kill()  # its worker sees stdin close, drains and saves its checkpoint
        else:
            a.kill_group()  # the worker dies too: it resumes from its last checkpoint
        at_kill = len(raws(out))
        # the same data dir, no enrollment key: the saved identity, desired pipes, checkpoints
        b = agents(srv, "victim-again", data_dir=a.data_dir, enroll=False)
        assert b.wait_enrolled() == aid
        wait_until(
            lambda: len(raws(out)) >= at_kill + 300,
            30,
            "output after the restart",
            lambda: brief(client, dep_id),
        )
    finally:
        w.stop()
    every = w.lines()
    wait_until(
        lambda: has_all(out, every),
        30,
        "every line in the output",
        lambda: f"{len(set(every) - set(raws(out)))} missing; {brief(client, dep_id)}",
    )
    events, torn = read_events(out)
    values = [e["_raw"] for e in events]
    assert set(values) == set(every)
    assert duplicates(values) <= BATCH, duplicates(values)
    assert torn <= (0 if what == "agent" else 1)
    wait_until(lambda: running_everywhere(client, dep_id, [aid]), 20, "the instance running")


# ------------------------------------------------------------------------------ workers


def test_a_crashed_worker_is_restarted_and_resumes(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("phoenix")
    a = agents(srv, "phoenix", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    pipe = unique("respawn")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    w = LineWriter(src).start()
    try:
        wait_until(lambda: len(raws(out)) >= 200, 20, "output", lambda: brief(client, dep_id))
        (worker,) = a.worker_pids()
        os.kill(worker, signal.SIGKILL)
        wait_until(
            lambda: a.worker_pids() and a.worker_pids() != [worker],
            20,
            "a new worker",
            a.log_text,
        )
        at = len(raws(out))
        wait_until(lambda: len(raws(out)) >= at + 200, 20, "output from the new worker")
    finally:
        w.stop()
    wait_until(lambda: has_all(out, w.lines()), 20, "every line in the output")
    events, torn = read_events(out)
    values = [e["_raw"] for e in events]
    assert set(values) == set(w.lines())
    assert duplicates(values) <= BATCH and torn <= 1
    assert "restarting pipe" in a.log_text()
    wait_until(lambda: running_everywhere(client, dep_id, [aid]), 20, "running again")


def test_an_agents_pipe_splits_over_worker_processes_and_posts_in_order(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    """``--max-pipe-workers 2`` and ``workers: 2`` on a ``files`` -> ``http-post`` pipe: the
    agent's worker forks two processes for the chunks, and the receiver gets every line once,
    in the file's order."""
    label = unique("par")
    a = agents(srv, "parallel", [label], extra=("--max-pipe-workers", "2"))
    a.wait_enrolled()
    n = 20_000
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"".join(b'{"seq": %d}\n' % i for i in range(n)))
    pipe = unique("post")
    with HttpSink() as rx:
        client.push(
            f"name: {pipe}\nworkers: 2\ninput:\n"
            f'  files: {{path: "{src}", format: json, read-bytes: 16384, poll-interval: 50ms}}\n'
            f'output:\n  http-post: {{url: "{rx.url}", batch: {{size: 500, timeout: 50ms}}}}\n'
        )
        dep_id = client.deploy(pipe, labels=[label])["id"]
        wait_until(
            lambda: len(rx.events()) >= n, 30, "every line posted", lambda: brief(client, dep_id)
        )
        (worker,) = a.worker_pids()
        forked = [
            p
            for task in Path(f"/proc/{worker}/task").iterdir()
            for p in (task / "children").read_text().split()
        ]
        seqs = [e["seq"] for e in rx.events()]
    assert len(forked) == 2, forked
    assert seqs == list(range(n))


def test_restart_and_reset_checkpoint_commands(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("cmd")
    a = agents(srv, "obedient", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    w = LineWriter(src)
    w.write(30)
    pipe = unique("cmds")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    wait_until(lambda: has_all(out, w.lines()), 20, "output", lambda: brief(client, dep_id))
    wait_until(lambda: a.worker_pids(), 20, "a worker")
    (worker,) = a.worker_pids()

    (cmd,) = client.command(dep_id, "restart")["commands"]
    wait_until(lambda: client.get_command(cmd["id"])["acked_at"], 20, "the restart acked")
    wait_until(lambda: a.worker_pids() and a.worker_pids() != [worker], 20, "a new worker")
    w.write(10)
    wait_until(lambda: has_all(out, w.lines()), 20, "output after the restart")
    assert duplicates(raws(out)) == 0  # a restart drains: nothing is read twice

    client.command(dep_id, "reset-checkpoint")
    # the pipe starts over: every line of the input once more
    wait_until(
        lambda: all(n == 2 for n in collections.Counter(raws(out)).values()),
        20,
        "the input read again from its beginning",
        lambda: brief(client, dep_id),
    )
    assert len(raws(out)) == 2 * w.n


def test_reset_checkpoint_after_the_instance_was_placed_again(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("replace")
    a = agents(srv, "replaced", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    w = LineWriter(src)
    w.write(10)
    pipe = unique("reset")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    wait_until(lambda: len(raws(out)) == 10, 20, "output", lambda: brief(client, dep_id))
    client.command(dep_id, "reset-checkpoint")
    wait_until(lambda: len(raws(out)) == 20, 20, "the first reset's replay")
    # the agent loses the label, so the instance leaves it, then gets it back
    client.update_agent(aid, labels=["elsewhere"])
    wait_until(lambda: not status(client, dep_id) and not a.worker_pids(), 20, "unplaced")
    client.update_agent(aid, labels=[label])
    wait_until(
        lambda: running_everywhere(client, dep_id, [aid]),
        20,
        "placed again",
        lambda: brief(client, dep_id),
    )
    assert len(raws(out)) == 20  # it resumed from its own checkpoint, as it should
    (cmd,) = client.command(dep_id, "reset-checkpoint")["commands"]
    wait_until(lambda: client.get_command(cmd["id"])["acked_at"], 20, "the reset acked")
    wait_until(
        lambda: len(raws(out)) == 30,
        20,
        "the second reset's replay",
        lambda: f"{len(raws(out))} lines; {brief(client, dep_id)}",
    )


def test_a_stop_while_the_worker_waits_for_its_lock(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    import fcntl

    label = unique("lock")
    a = agents(srv, "locked", [label])
    aid = a.wait_enrolled()
    wait_until(lambda: online(client, aid), 20, "the agent online")
    src = tmp_path / "in.log"
    LineWriter(src).write(10)
    pipe = unique("locked")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label], start=False)["id"]
    # the lock a worker of this deployment takes: held here, as by an old worker still draining
    (a.data_dir / "locks").mkdir(exist_ok=True)
    with open(a.data_dir / "locks" / f"{dep_id}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client.start(dep_id)
        wait_until(lambda: a.worker_pids(), 20, "a worker waiting for the lock")
        client.stop(dep_id)

        def told_to_stop() -> bool:
            saved = orjson.loads((a.data_dir / "desired.json").read_bytes())
            return all(d["deployment_id"] != dep_id for d in saved)

        wait_until(told_to_stop, 20, "the agent to learn of the stop")
        fcntl.flock(lock, fcntl.LOCK_UN)
    released = time.monotonic()

    states: list[str] = []

    def gone() -> bool:
        states.append(client.agent(aid)["state"])
        return not a.worker_pids()

    # with the lock free, the worker sees its stop and exits (a drain of nothing is quick)
    wait_until(gone, 6, "the worker to exit", lambda: f"{brief(client, dep_id)} {set(states)}")
    print(f"the worker exited {time.monotonic() - released:.1f}s after the lock was free")
    assert set(states) == {"online"}, "the agent stopped checking in while stopping a worker"
    wait_until(lambda: status(client, dep_id)[0]["state"] == "stopped", 10, "stopped")


# ------------------------------------------------------------------------------ 3. server away


def test_server_down_agent_keeps_running_and_resyncs(agents: AgentFactory, tmp_path: Path) -> None:
    # this test runs a server of its own, stopped, then restarted on the same port and database
    server = ServerProcess(tmp_path / "server", enroll_key=ENROLL_KEY, poll_interval=POLL)
    try:
        server.start()
        own = Client(server.url, server.token, timeout=10)
        label = unique("alone")
        a = agents(server, "lonely", [label])
        aid = a.wait_enrolled()
        src, out = tmp_path / "in.log", out_path(tmp_path, "lonely")
        pipe = unique("keepgoing")
        own.push(files_pipe(pipe, src, out))
        dep_id = own.deploy(pipe, labels=[label])["id"]
        w = LineWriter(src).start()
        try:
            wait_until(
                lambda: running_everywhere(own, dep_id, [aid]),
                20,
                "running",
                lambda: brief(own, dep_id),
            )
            wait_until(lambda: len(raws(out)) >= 100, 20, "output before the server stops")
            port = server.port
            assert server.stop() == 0
            down_at = len(raws(out))
            # the agent keeps writing while the server is away
            wait_until(lambda: len(raws(out)) >= down_at + 300, 20, "output with no server")
            wait_until(lambda: "server unreachable" in a.log_text(), 10, "the agent noticing")
            assert a.alive()
            # an agent that restarts while the server is away runs the pipes it saved
            a.kill()
            a = agents(server, "lonely-again", data_dir=a.data_dir, enroll=False)
            again_at = len(raws(out))
            wait_until(
                lambda: len(raws(out)) >= again_at + 300, 20, "output from the restarted agent"
            )
            assert a.alive()
            restarted = datetime.now(timezone.utc)
            server.start(port=port)
            assert server.port == port

            def resynced() -> bool:
                s = instance(own, dep_id, aid)
                return bool(
                    s
                    and s["state"] == "running"
                    and s["in_sync"]
                    and s["agent_state"] == "online"
                    and s["updated_at"]
                    and datetime.fromisoformat(s["updated_at"].replace("Z", "+00:00")) > restarted
                )

            # the agent retries with backoff (0.5 s doubling, with jitter): a few seconds
            wait_until(resynced, 30, "a fresh report from the agent", lambda: brief(own, dep_id))
            assert own.agent(aid)["state"] == "online"
            back_at = len(raws(out))
            wait_until(lambda: len(raws(out)) >= back_at + 100, 20, "output after the restart")
        finally:
            w.stop()
        every = w.lines()
        wait_until(lambda: has_all(out, every), 20, "every line in the output")
        values = raws(out)
        assert set(values) == set(every)
        # the killed agent's worker drained and saved its checkpoint before the new one started
        assert duplicates(values) <= BATCH
        # and the control channel works again: a stop reaches the agent
        own.stop(dep_id)
        wait_until(lambda: not a.worker_pids(), 20, "the worker to stop after the restart")
    finally:
        server.kill()


# ------------------------------------------------------------------------------ 4. failover


def _failover_pair(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path, long_poll: float
) -> tuple[dict[str, AgentProcess], str, LineWriter, str]:
    label = unique("ha")
    pool = {}
    for name in ("ha-a", "ha-b"):
        ag = agents(srv, name, [label], long_poll=long_poll)
        pool[ag.wait_enrolled()] = ag
    for aid in pool:
        wait_until(lambda aid=aid: online(client, aid), 20, f"agent {aid} online")
    src = tmp_path / "in.log"
    w = LineWriter(src)
    w.write(200)
    pipe = unique("single")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label], instances=1, failover=True)["id"]
    return pool, dep_id, w, label


def test_failover_moves_the_instance_and_continues_from_the_checkpoint(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    pool, dep_id, w, _ = _failover_pair(srv, client, agents, tmp_path, LONG_POLL)

    def placed() -> str | None:
        st = status(client, dep_id)
        if len(st) == 1 and st[0]["state"] == "running" and st[0]["in_sync"]:
            return st[0]["agent_id"]
        return None

    first = wait_until(placed, 20, "one running instance", lambda: brief(client, dep_id))
    (second,) = [aid for aid in pool if aid != first]
    out1, out2 = out_path(tmp_path, first), out_path(tmp_path, second)
    before = w.lines()
    wait_until(lambda: has_all(out1, before), 20, "the first agent's output")
    size = w.path.stat().st_size

    def reported_checkpoint() -> bool:
        s = instance(client, dep_id, first)
        files = ((s or {}).get("checkpoint") or {}).get("files") or {}
        return any(f.get("offset") == size for f in files.values())

    # checkpoints travel with a check-in every `metrics_every` (15 s), carried by the next
    # check-in after a hold of up to LONG_POLL: wait for both, plus slack
    wait_until(
        reported_checkpoint,
        15 + LONG_POLL + 10,
        "the server to hold the checkpoint",
        lambda: brief(client, dep_id),
    )

    pool[first].kill()
    killed = time.monotonic()

    def moved() -> bool:
        st = status(client, dep_id)
        return (
            len(st) == 1
            and st[0]["agent_id"] == second
            and st[0]["state"] == "running"
            and st[0]["in_sync"]
        )

    # offline after 3 poll intervals (the check-in the dead agent left held ends with its
    # connection), placed again on the server's next 1 s tick, then the worker starts
    wait_until(
        moved,
        3 * POLL + 1.0 + 4.0,
        "the instance to move to the other agent",
        lambda: brief(client, dep_id),
    )
    print(f"failover took {time.monotonic() - killed:.1f}s")
    w.write(100)
    after = w.lines(200)
    wait_until(
        lambda: has_all(out2, after), 20, "the second agent's output", lambda: brief(client, dep_id)
    )
    again = set(raws(out2)) & set(raws(out1))
    assert len(again) <= BATCH, f"{len(again)} lines written again by the second agent"
    assert set(raws(out1)) | set(raws(out2)) == set(w.lines())


def test_failover_within_three_poll_intervals(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    # a long hold, as agents have by default (30 s): the check-in a dead agent left held must
    # not keep it present until the hold ends
    hold = 20.0
    pool, dep_id, _, _ = _failover_pair(srv, client, agents, tmp_path, hold)

    def placed() -> str | None:
        st = status(client, dep_id)
        ok = len(st) == 1 and st[0]["state"] == "running" and st[0]["in_sync"]
        return st[0]["agent_id"] if ok else None

    first = wait_until(placed, 20, "one running instance", lambda: brief(client, dep_id))
    pool[first].kill()
    wait_until(
        lambda: [s["agent_id"] for s in status(client, dep_id)] == [a for a in pool if a != first],
        3 * POLL + 3.0,  # 3 poll intervals, the server's 1 s background tick, slack
        "the instance to move to the other agent",
        lambda: brief(client, dep_id),
    )


# ------------------------------------------------------------------------------ 5. failures


def test_failing_pipes_are_reported_and_others_keep_running(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    # exec allowed by its policy, and disabled by the --disable shorthand, which wins
    a = agents(srv, "two words", [unique("mixed")], disable=["exec"], extra=("--allow-exec", "any"))
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    w = LineWriter(src)
    w.write(20)
    good, uses_exec, uses_script, bad_here = (unique(p) for p in ("good", "ex", "scr", "bad"))
    client.push(files_pipe(good, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    client.push(
        f"name: {uses_exec}\ninput:\n  exec: {{command: 'echo hi'}}\n"
        f"output:\n  file: {{path: '{tmp_path}/exec.ndjson'}}\n"
    )
    client.push(
        files_pipe(
            uses_script,
            src,
            tmp_path / "script.ndjson",
            ['script: {code: "def process(event):\\n    return event"}'],
        )
    )
    # valid where the server checks it, invalid once this agent's name is rendered into it
    client.push(
        files_pipe(bad_here, src, tmp_path / "bad.ndjson", ['filter: "{{agent.name}} == 1"'])
    )
    deps = {
        name: client.deploy(name, agents=[aid], labels=[])["id"]
        for name in (good, uses_exec, uses_script, bad_here)
    }

    def failed(dep_id: str, state: str) -> dict[str, Any] | None:
        s = instance(client, dep_id, aid)
        return s if s and s["state"] == state and s["error"] else None

    # what the agent's policy refuses is "refused", an invalid pipe "failed"
    expected = {uses_exec: "refused", uses_script: "refused", bad_here: "failed"}
    errors = {
        name: wait_until(
            lambda d=dep_id, st=expected[name]: failed(d, st),
            20,
            f"{name} reported {expected[name]}",
            lambda d=dep_id: brief(client, d),
        )["error"]
        for name, dep_id in deps.items()
        if name != good
    }
    assert "exec" in errors[uses_exec] and "policy is off" in errors[uses_exec], errors
    assert "script" in errors[uses_script] and "policy is off" in errors[uses_script], errors
    assert "--allow-scripts" in errors[uses_script], errors
    assert "invalid expression" in errors[bad_here], errors  # located: <dep-...>:5:18: ...

    def good_running() -> bool:
        s = instance(client, deps[good], aid)
        return bool(s and s["state"] == "running" and s["in_sync"] and not s["error"])

    wait_until(good_running, 20, "the good pipe running", lambda: brief(client, deps[good]))
    # the server marks a refused instance at once; the agent's own reports follow (its worker
    # says "starting" before it refuses): poll until they agree
    wait_until(
        lambda: client.deployment(deps[uses_exec])["state"] == "degraded",
        20,
        "the refused deployment degraded",
        lambda: brief(client, deps[uses_exec]),
    )
    for name, dep_id in deps.items():
        if name != good:
            assert instance(client, dep_id, aid)["agent_state"] == "degraded"
    assert client.agent(aid)["state"] == "degraded"  # a pipe is failing there
    # refused pipes are not restarted: only the good pipe keeps a worker (a refused or failed
    # worker reports first and exits right after, so its process may linger for a moment)
    wait_until(lambda: len(a.worker_pids()) == 1, 20, "one worker left", a.worker_pids)
    good_worker = a.worker_pids()
    # the good pipe keeps running and its output keeps growing
    wait_until(lambda: has_all(out, w.lines()), 20, "the good pipe's first lines")
    for _ in range(3):
        w.write(20)
        wait_until(lambda: has_all(out, w.lines()), 20, "the good pipe's new lines")
    assert a.worker_pids() == good_worker  # no refused pipe came back meanwhile
    assert a.alive()


# ------------------------------------------------------------------------------ 6. deploy latency


def test_a_deploy_reaches_a_long_polling_agent_in_under_a_second(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("fast")
    a = agents(srv, "quick", [label])
    aid = a.wait_enrolled()
    wait_until(lambda: online(client, aid), 20, "the agent online")
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    w = LineWriter(src)
    w.write(10)
    pipe = unique("latency")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    deployed = time.monotonic()

    def started() -> bool:
        s = instance(client, dep_id, aid)
        return bool(s and s["state"] in ("starting", "running"))

    wait_until(
        started, 10, "the agent to report the pipe", lambda: brief(client, dep_id), interval=0.005
    )
    took = time.monotonic() - deployed
    assert took < 1.0, f"the deploy took {took:.3f}s to reach the agent"
    wait_until(lambda: has_all(out, w.lines()), 20, "the pipe's output")


# ------------------------------------------------------------------------------ 7. taps


def test_taps_return_live_events_at_each_stage(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("tap")
    a = agents(srv, "tapped", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    pipe = unique("taps")
    actions = ["add: {tapped: true}", "rename: {_raw: line}"]
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson", actions))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    w = LineWriter(src).start(burst=5, pause=0.02)
    try:
        wait_until(lambda: read_events(out)[0], 20, "some output", lambda: brief(client, dep_id))

        def number(value: str) -> int:
            assert value.startswith("line-"), value
            return int(value.split("-")[1])

        for stage in ("input", "0:add", "add", "1", "output"):
            written = len(read_events(out)[0])  # lines 0 .. written-1 passed every stage
            events = client.tap(dep_id, stage=stage, limit=3, timeout=20)
            assert len(events) == 3, (stage, events)
            if stage == "input":
                assert all(set(e) == {"_raw"} for e in events), events
                got = [number(e["_raw"]) for e in events]
            elif stage in ("0:add", "add"):
                assert all(e["tapped"] is True and "_raw" in e for e in events), events
                got = [number(e["_raw"]) for e in events]
            else:  # after the rename
                assert all(e["tapped"] is True and "_raw" not in e for e in events), events
                got = [number(e["line"]) for e in events]
            assert got == sorted(got) and len(set(got)) == 3, got
            assert min(got) >= written, f"{stage}: {got} are not new (output had {written})"
        assert a.alive()
    finally:
        w.stop()


# ------------------------------------------------------------------------------ 8. small agent

HEAVY = (
    "pandas",
    "numpy",
    "pydantic",
    "pydantic_core",
    "yaml",
    "sqlalchemy",
    "tornado",
    "jupyter_server",
    "jupyter_client",
    "ipykernel",
    "IPython",
    "notebook",
    "traitlets",
    "pipenb.server",
)


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_the_agent_module_tree_imports_nothing_heavy() -> None:
    code = (
        "import sys, pipenb.cli, pipenb.agent.agent, pipenb.agent.worker_main\n"
        "from pipenb.cli import build_parser\n"
        "build_parser().parse_args(['agent', '--server', 'http://127.0.0.1:1', '--data-dir', 'x'])\n"
        "from pipenb.engine.checkpoints import default_data_dir\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    modules = proc.stdout.split()
    assert "pipenb.agent.agent" in modules
    assert _heavy(modules) == []


def test_a_running_agent_process_loads_nothing_heavy(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("slim")
    # -X importtime logs every import the process ever makes, lazy ones included
    a = agents(srv, "slim", [label], python_flags=("-X", "importtime"))
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    pipe = unique("slim")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson", ["add: {x: 1}"]))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    w = LineWriter(src).start(burst=5, pause=0.02)
    try:
        wait_until(lambda: read_events(out)[0], 20, "output", lambda: brief(client, dep_id))
        assert len(client.tap(dep_id, stage="output", limit=2, timeout=20)) == 2
    finally:
        w.stop()
    wait_until(lambda: running_everywhere(client, dep_id, [aid]), 20, "running")
    maps = a.maps()
    for lib in ("pydantic_core", "_yaml", "pandas", "numpy", "sqlalchemy", "tornado"):
        assert lib not in maps, f"the agent process has {lib} loaded"
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in a.log_text().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "pipenb.agent.agent" in imported
    assert _heavy(imported) == []
    # while its worker, which runs the engine, does load pydantic
    (worker,) = a.worker_pids()
    assert "pydantic_core" in Path(f"/proc/{worker}/maps").read_text()


# ------------------------------------------------------------------------------ 9. SIGTERM


def test_sigterm_drains_saves_checkpoints_leaves_and_exits_0(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("term")
    a = agents(srv, "polite", [label])
    aid = a.wait_enrolled()
    src, out = tmp_path / "in.log", out_path(tmp_path, aid)
    pipe = unique("drain")
    client.push(files_pipe(pipe, src, tmp_path / f"out-{PER_AGENT}.ndjson"))
    dep_id = client.deploy(pipe, labels=[label])["id"]
    w = LineWriter(src).start()
    try:
        wait_until(
            lambda: running_everywhere(client, dep_id, [aid]),
            20,
            "running",
            lambda: brief(client, dep_id),
        )
        wait_until(lambda: len(raws(out)) >= 200, 20, "output")
        workers = a.worker_pids()
        assert len(workers) == 1
        code = a.terminate(timeout=30)
    finally:
        w.stop()
    assert code == 0, a.log_text()
    # the server heard it leave: offline at once, not after 3 missed poll intervals
    assert client.agent(aid)["state"] == "offline"
    s = instance(client, dep_id, aid)
    assert s is not None and s["agent_state"] == "offline" and s["state"] == "stopped", s
    assert not any(pid_alive(p) for p in workers)
    # the worker drained: what it read is written, and its checkpoint says exactly that much
    saved = a.checkpoint(dep_id)
    assert saved is not None, list((a.data_dir / "checkpoints").iterdir())
    (pos,) = saved["position"]["files"].values()
    data = src.read_bytes()
    assert 0 < pos["offset"] <= len(data) and data[pos["offset"] - 1 : pos["offset"]] == b"\n"
    upto = data[: pos["offset"]].decode().splitlines()
    values = raws(out)
    assert set(values) == set(upto), (len(values), len(upto))
    assert duplicates(values) == 0
    assert s["checkpoint"] == saved["position"]  # the final report carried it


# ------------------------------------------------------------------------------ 10. enrollment


def test_enrolls_once_then_uses_the_saved_key(
    srv: ServerProcess, client: Client, agents: AgentFactory, tmp_path: Path
) -> None:
    label = unique("enr")
    a = agents(srv, "newcomer", [label, "blue"])
    aid = a.wait_enrolled()
    ident = a.data_dir / "identity.json"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    saved = orjson.loads(ident.read_bytes())
    assert saved["agent_id"] == aid and saved["api_key"].startswith("pnb_")
    wait_until(lambda: online(client, aid), 20, "the agent online")
    info = client.agent(aid)
    assert info["enrolled"] is True and info["name"] == "newcomer"
    assert info["labels"] == [label, "blue"]
    assert info["attributes"]["capabilities"]["allowed"] == []  # exec and scripts: off
    policy = info["attributes"]["policy"]
    assert policy["exec"] == "off" and policy["scripts"] is False
    assert str(a.data_dir.resolve()) in policy["protected"]
    count = len(client.agents()["agents"])
    assert a.terminate() == 0
    assert client.agent(aid)["state"] == "offline"

    # only --server and --data-dir: it checks in with the saved key, under the same id
    again = agents(srv, "ignored", data_dir=a.data_dir, enroll=False, long_poll=None)
    assert "--enroll-key" not in again.args() and "--long-poll" not in again.args()
    wait_until(lambda: online(client, aid), 20, "the agent online again", again.log_text)
    assert len(client.agents()["agents"]) == count
    assert orjson.loads(ident.read_bytes()) == saved
    assert again.log_text().count("enrolled as") == 1  # the first run's line only
    assert again.alive()

    # an agent added by hand runs with --id and --api-key, and saves no identity
    manual = unique("manual-")
    client.add_agent(manual, labels=[label])
    key = client.create_key(manual)["api_key"]
    by_hand = agents(srv, "by-hand", agent_id=manual, api_key=key, enroll=False, wait=False)
    wait_until(lambda: online(client, manual), 20, "the hand-made agent online", by_hand.log_text)
    assert by_hand.identity() is None

    # a wrong enrollment key is refused: the agent says why and exits 1
    wrong = AgentProcess(srv.url, tmp_path / "wrong", enroll_key="not-the-key", long_poll=None)
    try:
        wrong.start()
        wrong.proc.wait(30)  # type: ignore[union-attr]
        assert wrong.returncode() == 1
        assert "enrollment refused" in wrong.log_text()
        assert wrong.identity() is None
    finally:
        wrong.cleanup()
