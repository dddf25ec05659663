"""Several server processes on one PostgreSQL serving one fleet (issue 17, items 1 and 6).

Real ``pipenb server`` processes on a fresh PostgreSQL database per test, real agents, and
Debian's nginx on loopback in front where a test needs one address. The PostgreSQL tests run
when ``PIPENB_TEST_POSTGRES_URL`` names a server where a test may create a database
(``scripts/postgres-test.sh``); the nginx ones when nginx is installed (``scripts/nginx-test.sh``).
"""

from __future__ import annotations

import collections
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from sqlalchemy.engine import make_url

from pipenb.client import Client

from support import REPO_ROOT
from support.agentproc import AgentProcess, tmp_policy
from support.nginxproc import NginxProcess, nginx_missing
from support.processes import clean_env, free_port, terminate
from support.serverproc import ServerProcess
from support.waiting import wait_until, wait_until_up

ENROLL_KEY = "ek-fleet"
POLL = 1.0  # poll interval: an agent is offline after 3 of them
BATCH = 20  # output batch of the test pipes: "duplicates up to one batch"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def nginx_ok() -> None:
    why = nginx_missing()
    if why:
        pytest.skip(why)


Fleet = Callable[..., list[ServerProcess]]


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """``fleet(n)``: n started server processes on one database (one secret key file)."""
    made: list[ServerProcess] = []
    key = tmp_path / "secret.key"

    def start(n: int, poll: float = POLL) -> list[ServerProcess]:
        out = []
        for _ in range(n):
            srv = ServerProcess(
                tmp_path / f"server-{len(made)}",
                db_url=pg_url,
                enroll_key=ENROLL_KEY,
                poll_interval=poll,
                extra=("--secret-key-file", str(key)),
            )
            made.append(srv)
            out.append(srv.start())
        return out

    try:
        yield start
    finally:
        for srv in made:
            srv.kill()
        for srv in made:
            print(f"==== {srv.log}\n{srv.log.read_text(errors='replace')[-4000:]}")


Agents = Callable[..., AgentProcess]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    """``agents(server_url, name, labels)``: an enrolled agent (its policy allows the temp dir).
    ``server_url`` may list several URLs (``URL1,URL2``)."""
    made: list[AgentProcess] = []

    def start(url: str, name: str, labels: list[str], token_url: str | None = None, **kw: Any):
        agent = AgentProcess(
            url,
            tmp_path / f"agent-{name}",
            enroll_key=ENROLL_KEY,
            name=name,
            labels=labels,
            long_poll=20.0,
            extra=tmp_policy(),
            **kw,
        )
        if token_url is not None:  # where the enrollment token is made (url lists several)
            agent.server = token_url
            agent.enroll_token = agent.create_enroll_token()
            agent.server = url
        made.append(agent)
        agent.start()
        agent.wait_enrolled()
        return agent

    try:
        yield start
    finally:
        for agent in made:
            agent.cleanup()
        for agent in made:
            print(f"==== {agent.log}\n{agent.log_text()[-4000:]}")


def client(srv: ServerProcess | str) -> Client:
    url = srv if isinstance(srv, str) else srv.url
    return Client(url, "test-token", timeout=10)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


# ------------------------------------------------------------------------------ pipes and files


def files_pipe(name: str, src: Path, out: str) -> str:
    return (
        f"name: {name}\n"
        f'input:\n  files: {{path: "{src}", poll-interval: 50ms}}\n'
        f'output:\n  file: {{path: "{out}", batch: {{size: {BATCH}, timeout: 50ms}}}}\n'
    )


def raws(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    cut = data.rfind(b"\n")
    out = []
    for line in data[: cut + 1].splitlines():
        try:
            out.append(orjson.loads(line)["_raw"])
        except (orjson.JSONDecodeError, KeyError):
            pass  # a write cut short
    return out


def write_lines(path: Path, start: int, count: int) -> list[str]:
    lines = [f"line-{i:06d}" for i in range(start, start + count)]
    with open(path, "a") as fh:
        fh.write("".join(x + "\n" for x in lines))
    return lines


def instance(c: Client, dep_id: str, agent_id: str) -> dict[str, Any] | None:
    return next((s for s in c.deployment(dep_id)["status"] if s["agent_id"] == agent_id), None)


def brief(c: Client, dep_id: str) -> str:
    d = c.deployment(dep_id)
    return f"{d['state']} {[(s['agent_id'], s['agent_state'], s['state']) for s in d['status']]}"


def running(c: Client, dep_id: str, agent_id: str) -> bool:
    s = instance(c, dep_id, agent_id)
    return bool(s and s["state"] == "running" and s["in_sync"])


def online(c: Client, agent_id: str) -> bool:
    return c.agent(agent_id)["state"] == "online"


def jobs(srv: ServerProcess) -> bool:
    return bool(srv.request("GET", "/health", token=False, timeout=5).json()["jobs"])


# ------------------------------------------------------------------------------ a raw check-in


def checkin(srv: ServerProcess | str, key: str, agent_id: str, **body: Any) -> requests.Response:
    """One check-in as an agent makes it (the protocol, for timing a held one exactly)."""
    url = srv if isinstance(srv, str) else srv.api
    return requests.post(
        url + "/agent/checkin",
        json={"agent_id": agent_id, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def held_checkins(srv: ServerProcess) -> int:
    """How many check-ins ``srv`` holds now (its Prometheus gauge, open on loopback)."""
    text = requests.get(srv.url + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("pipenb_held_checkins "))
    return int(float(line.split()[1]))


class Held:
    """A check-in held by ``srv`` in a thread: ``returned`` is when its answer came. It is
    held once the server's gauge says so."""

    def __init__(
        self,
        srv: ServerProcess,
        key: str,
        agent_id: str,
        seq: int,
        dhash: str | None,
        **extra: Any,
    ):
        self.answer: requests.Response | None = None
        self.returned = 0.0
        before = held_checkins(srv)
        args = {"seq": seq, "full": False, "desired_hash": dhash, "wait": 30, **extra}

        def run() -> None:
            self.answer = checkin(srv, key, agent_id, **args)
            self.returned = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_until(lambda: held_checkins(srv) > before, 10, "the check-in to be held")


def hand_agent(c: Client, label: str) -> tuple[str, str, str]:
    """An agent added by hand with a key: (id, key id, key)."""
    aid = unique("hand-")
    c.add_agent(aid, labels=[label])
    k = c.create_key(aid)
    return aid, k["key_id"], k["api_key"]


def held_on(srv: ServerProcess, aid: str, key: str) -> Held:
    """A check-in of ``aid`` held by ``srv`` (after a first one that says what it runs)."""
    first = checkin(srv, key, aid, seq=0, full=True)
    assert first.status_code == 200, first.text
    return Held(srv, key, aid, 1, first.json()["desired_hash"])


# ------------------------------------------------------------------------------ SQLite: one process


def test_a_second_server_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'one.db'}"
    first = ServerProcess(tmp_path / "a", db_url=db).start()
    try:
        second = ServerProcess(tmp_path / "b", db_url=db)
        with pytest.raises(RuntimeError, match="did not start"):
            second.start()
        said = second.log.read_text()
        assert "is in use by another pipenb server process" in said, said
        assert f"pid {first.proc.pid}" in said, said  # type: ignore[union-attr]
        assert "PostgreSQL" in said and "Traceback" not in said, said
        assert first.request("GET", "/health").ok  # the first one serves on
    finally:
        first.stop()
    # the lock goes with the process: the file can be served again
    again = ServerProcess(tmp_path / "c", db_url=db).start()
    again.stop()


def test_the_sqlite_lock_is_per_database_and_released_on_stop(tmp_path: Path) -> None:
    import asyncio

    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.leader import DatabaseInUse
    from pipenb.server.settings import ServerSettings

    url = f"sqlite:///{tmp_path / 'cp.db'}"
    cp = ControlPlane(ServerSettings(db_url=url))
    with pytest.raises(DatabaseInUse, match=r"cp\.db is in use"):
        ControlPlane(ServerSettings(db_url=url))
    other = ControlPlane(ServerSettings(db_url=f"sqlite:///{tmp_path / 'other.db'}"))
    asyncio.run(other.stop())
    asyncio.run(cp.stop())
    cp = ControlPlane(ServerSettings(db_url=url))  # free again
    assert cp.coord.leading  # alone on SQLite: it runs the jobs
    asyncio.run(cp.stop())


def test_processes_started_at_once_on_a_new_database_all_serve(pg_url: str, tmp_path: Path) -> None:
    """One migrates, the others wait for it (an advisory lock), none fails on a half-made
    schema."""
    procs = [
        ServerProcess(tmp_path / f"s{i}", db_url=pg_url, extra=("--secret-key-file", "k"))
        for i in range(3)
    ]
    errors: list[BaseException] = []

    def start(p: ServerProcess) -> None:
        try:
            p.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, [str(e) for e in errors]
        assert all(p.request("GET", "/agents").ok for p in procs)
        wait_until(lambda: sum(jobs(p) for p in procs) == 1, 10, "one process with the jobs")
    finally:
        for p in procs:
            p.kill()


# ------------------------------------------------------------------------------ wake-ups


def test_a_deploy_through_one_process_wakes_a_check_in_held_by_another(
    fleet: Fleet, tmp_path: Path
) -> None:
    a, b = fleet(2)
    ca = client(a)
    label = unique("wake")
    aid, key_id, key = hand_agent(ca, label)
    pipe = unique("p")
    ca.push(files_pipe(pipe, tmp_path / "in.log", str(tmp_path / "out.ndjson")))
    took, after = [], []
    for _ in range(3):  # three deploys, three wake-ups
        held = held_on(b, aid, key)
        deployed = time.monotonic()
        ca.deploy(pipe, labels=[label], new=True)
        answered = time.monotonic()  # the deploy's answer: committed, and the NOTIFY sent
        held.thread.join(10)
        assert held.answer is not None and held.answer.status_code == 200
        took.append(held.returned - deployed)
        after.append(held.returned - answered)
        assert held.answer.json()["desired"], held.answer.text
    print(
        "cross-process wake-ups, from the deploy request:",
        [f"{t * 1000:.0f} ms" for t in took],
        "from its answer:",
        [f"{t * 1000:.0f} ms" for t in after],
    )
    assert max(took) < 1.0, took

    # a command queued through a: the check-in held by b is answered with it
    dep = ca.deployments()["deployments"][0]["id"]
    held = held_on(b, aid, key)
    ca.command(dep, "restart")
    held.thread.join(10)
    assert held.answer is not None
    commands = held.answer.json()["commands"]
    assert [c["type"] for c in commands] == ["restart"]

    # a key revoked through a: the check-in held by b is answered 401 at once
    dhash = held.answer.json()["desired_hash"]
    held = Held(b, key, aid, 2, dhash, acks=[commands[0]["id"]])
    revoked = time.monotonic()
    ca.revoke_key(aid, key_id)
    held.thread.join(10)
    assert held.answer is not None and held.answer.status_code == 401, held.answer.text
    assert held.answer.json()["error"]["code"] == "key_revoked"
    assert held.returned - revoked < 1.0
    # and b refuses the key from now on (its cache dropped it)
    assert checkin(b, key, aid, seq=3).status_code == 401


def test_agents_held_by_other_processes_get_a_deploy_within_a_second(
    fleet: Fleet, agents: Agents, tmp_path: Path
) -> None:
    a, b, c = fleet(3)
    ca = client(a)
    label = unique("spread")
    on_b = agents(b.url, "on-b", [label])
    on_c = agents(c.url, "on-c", [label])
    ids = [on_b.wait_enrolled(), on_c.wait_enrolled()]
    for aid in ids:
        wait_until(lambda aid=aid: online(ca, aid), 20, f"{aid} online through a")
    src = tmp_path / "in.log"
    write_lines(src, 0, 10)
    pipe = unique("fast")
    ca.push(files_pipe(pipe, src, str(tmp_path / "out-{{agent.id}}.ndjson")))
    dep_id = ca.deploy(pipe, labels=[label])["id"]
    deployed = time.monotonic()
    reached: dict[str, float] = {}

    def started() -> bool:
        for s in ca.deployment(dep_id)["status"]:
            if s["state"] in ("starting", "running") and s["agent_id"] not in reached:
                reached[s["agent_id"]] = time.monotonic() - deployed
        return len(reached) == 2

    wait_until(started, 10, "both agents to report the pipe", lambda: brief(ca, dep_id), 0.005)
    print(f"deploy through a reached agents held by b and c in {reached}")
    assert max(reached.values()) < 1.0, reached

    # both are online wherever one asks: each process writes its agents' last check-in every
    # second and reads the others' every second, so a view may lag by a second or two
    def views() -> dict[str, list[tuple[str, str]]]:
        return {
            srv.url: [(x["state"], x["last_seen"]) for x in (client(srv).agent(i) for i in ids)]
            for srv in (a, b, c)
        }

    wait_until(
        lambda: all([st for st, _ in v] == ["online", "online"] for v in views().values()),
        5,
        "every process to show both agents online",
        lambda: f"a={a.url} b={b.url} c={c.url} now={time.time()}: {views()}",
    )


def test_settings_and_removal_through_one_process_reach_a_check_in_held_by_another(
    fleet: Fleet,
) -> None:
    a, b = fleet(2)
    ca = client(a)
    label = unique("set")
    aid, _, key = hand_agent(ca, label)
    # new settings for its label through a: the check-in b holds is answered with them
    held = held_on(b, aid, key)
    ca.set_agent_settings({"metrics-every": "5s"}, labels=[label])
    held.thread.join(10)
    assert held.answer is not None and held.answer.status_code == 200, held.answer
    got = held.answer.json()
    assert got["settings"] == {"metrics-every": "5s"}, got
    # what the agent says it applied, told to b, is what a shows
    applied = {"version": got["settings_version"], "refused": {}, "bounds": {"x": 1}}
    r = checkin(b, key, aid, seq=2, full=False, desired_hash=got["desired_hash"], settings=applied)
    assert r.status_code == 200, r.text
    shown = ca.agent_settings(aid)
    assert (shown["applied_version"], shown["bounds"]) == (got["settings_version"], {"x": 1})
    # the agent removed through a: the check-in b holds is answered 401 agent_removed
    held = Held(b, key, aid, 3, got["desired_hash"])
    ca.remove_agent(aid)
    held.thread.join(10)
    assert held.answer is not None and held.answer.status_code == 401, held.answer.text
    assert held.answer.json()["error"]["code"] == "agent_removed"
    # and the settings' own rows stay the scopes an admin set
    assert [x["scope"] for x in ca.agent_settings()["scopes"]] == [f"label:{label}"]


# ------------------------------------------------------------------------------ background jobs


def one_instance_on_two_agents(
    co: Client, proc: ServerProcess, agents: Agents, tmp_path: Path, prefix: str
) -> tuple[dict[str, Any], str, str, str]:
    """Two agents held by ``proc``, and a deployment of one instance with failover running on
    one of them: (the agents by id, the deployment's id, the agent running it, the other)."""
    label = unique(prefix)
    pool = {}
    for name in (f"{prefix}-1", f"{prefix}-2"):
        ag = agents(proc.url, name, [label])
        pool[ag.wait_enrolled()] = ag
    for aid in pool:
        wait_until(lambda aid=aid: online(co, aid), 20, f"{aid} online")
    src = tmp_path / "in.log"
    write_lines(src, 0, 20)
    pipe = unique("single")
    co.push(files_pipe(pipe, src, str(tmp_path / "out-{{agent.id}}.ndjson")))
    dep_id = co.deploy(pipe, labels=[label], instances=1, failover=True)["id"]
    first = wait_until(
        lambda: next((aid for aid in pool if running(co, dep_id, aid)), None),
        20,
        "one running instance",
        lambda: brief(co, dep_id),
    )
    (second,) = [aid for aid in pool if aid != first]
    return pool, dep_id, first, second


def test_sigkill_the_process_running_the_jobs_and_failover_still_happens(
    fleet: Fleet, agents: Agents, tmp_path: Path
) -> None:
    procs = fleet(2)
    leader = wait_until(lambda: next((p for p in procs if jobs(p)), None), 10, "a leader")
    (other,) = [p for p in procs if p is not leader]
    assert not jobs(other)  # exactly one
    co = client(other)
    pool, dep_id, first, second = one_instance_on_two_agents(co, other, agents, tmp_path, "ha")

    leader.kill()  # SIGKILL: its lock goes with its database connection
    killed = time.monotonic()
    wait_until(lambda: jobs(other), 10, "the other process to take the jobs over")
    print(f"the jobs moved to the other process in {time.monotonic() - killed:.1f} s")
    pool[first].kill()
    gone = time.monotonic()

    def moved() -> bool:
        st = co.deployment(dep_id)["status"]
        return [s["agent_id"] for s in st] == [second] and running(co, dep_id, second)

    # offline after 3 poll intervals, then the leader's 1 s tick, the worker's start
    wait_until(moved, 3 * POLL + 2 + 10, "the instance to move", lambda: brief(co, dep_id))
    print(f"failover after the agent's death: {time.monotonic() - gone:.1f} s")


def test_an_agent_leaving_through_one_process_hands_over_through_the_one_running_the_jobs(
    fleet: Fleet, agents: Agents, tmp_path: Path
) -> None:
    """SIGTERM: the agent says it leaves to the process that holds it; the process running the
    jobs (another) moves its instance at once, not after 3 silent poll intervals."""
    poll = 5.0  # offline after 15 s of silence (+2 s across processes)
    procs = fleet(2, poll=poll)
    leader = wait_until(lambda: next((p for p in procs if jobs(p)), None), 10, "a leader")
    (other,) = [p for p in procs if p is not leader]
    co = client(other)
    pool, dep_id, first, second = one_instance_on_two_agents(co, other, agents, tmp_path, "bye")
    assert pool[first].terminate() == 0
    left = time.monotonic()
    wait_until(
        lambda: [s["agent_id"] for s in co.deployment(dep_id)["status"]] == [second],
        3 * poll,  # sooner than silence alone would move it
        "the instance to move",
        lambda: brief(co, dep_id),
    )
    print(f"handed over {time.monotonic() - left:.1f} s after the agent left")
    assert co.agent(first)["state"] == "offline"


# ------------------------------------------------------------------------------ agent failover


def _carry_on(
    a: ServerProcess,
    agent: AgentProcess,
    kill: Callable[[], None],
    tmp: Path,
    moved: Callable[[int], bool],
) -> None:
    """The agent runs a files -> file pipe deployed through ``a``; ``kill`` ends the process it
    is held by; it carries on through another (``moved(cut)``: the agent's log past ``cut``, or
    the balancer's, says so), with every line in the output once (up to a batch again), and
    changes made through ``a`` still reach it."""
    ca = client(a)
    aid = agent.wait_enrolled()
    wait_until(lambda: online(ca, aid), 20, "the agent online")
    src, out = tmp / "in.log", tmp / f"out-{aid}.ndjson"
    lines = write_lines(src, 0, 100)
    pipe = unique("carry")
    ca.push(files_pipe(pipe, src, str(tmp / "out-{{agent.id}}.ndjson")))
    dep_id = ca.deploy(pipe, agents=[aid], instances=1, failover=True)["id"]
    wait_until(lambda: set(lines) <= set(raws(out)), 20, "output", lambda: brief(ca, dep_id))
    cut = len(agent.log_text())
    kill()
    killed = time.monotonic()
    lines += write_lines(src, 100, 100)
    # the agent checks in through another process within a few seconds
    wait_until(lambda: moved(cut), 15, "a check-in through another process", agent.log_text)
    print(f"the agent checked in through another process {time.monotonic() - killed:.2f} s later")
    # and its pipe never stopped
    wait_until(lambda: set(lines) <= set(raws(out)), 20, "output after the kill")
    wait_until(lambda: running(ca, dep_id, aid) and online(ca, aid), 15, "running and online")
    # still one instance, on the same agent: no failover was needed
    assert [s["agent_id"] for s in ca.deployment(dep_id)["status"]] == [aid]
    # a change made through a reaches it: a stop
    ca.stop(dep_id)
    wait_until(lambda: not agent.worker_pids(), 20, "the worker to stop", lambda: brief(ca, dep_id))
    values = raws(out)
    assert set(values) == set(lines)
    again = sum(n - 1 for n in collections.Counter(values).values() if n > 1)
    assert again <= BATCH, f"{again} lines written twice"
    assert agent.alive()


def test_sigkill_the_process_an_agent_is_held_by_and_it_moves_to_the_next_url(
    fleet: Fleet, agents: Agents, tmp_path: Path
) -> None:
    a, b = fleet(2)
    agent = agents(f"{b.url},{a.url}", "two-urls", [unique("m")], token_url=a.url)
    aid = agent.wait_enrolled()
    wait_until(lambda: online(client(b), aid), 20, "online through b")
    # b first: the order given (the agent logs it once it has the answer)
    wait_until(lambda: "connected to " + b.url in agent.log_text(), 20, "connected to b")
    _carry_on(
        a, agent, b.kill, tmp_path, lambda cut: "checked in with " + a.url in agent.log_text()[cut:]
    )
    assert f"server {b.url} does not answer" in agent.log_text()


def test_behind_nginx_sigkill_the_process_an_agent_is_held_by_and_it_carries_on(
    fleet: Fleet, agents: Agents, nginx_ok: None, tmp_path: Path
) -> None:
    a, b, c = fleet(3)
    # b takes every agent while it lives, c only then: so the test knows who holds the agent
    lb = NginxProcess(tmp_path / "nginx", [f"127.0.0.1:{b.port}"], [f"127.0.0.1:{c.port}"])
    with lb:
        try:
            agent = agents(lb.url, "behind-lb", [unique("lb")], token_url=a.url)
            aid = agent.wait_enrolled()
            wait_until(lambda: online(client(b), aid), 20, "online")
            to_c = f"127.0.0.1:{c.port}"
            assert lb.answered_by(to_c) == 0  # the backup: nothing while b lives
            # the check-in held by b is cut (nginx answers 502, the agent asks again), or b
            # died between two check-ins (nginx tries c at once): either way c answers next
            _carry_on(a, agent, b.kill, tmp_path, lambda cut: lb.answered_by(to_c) > 0)
        finally:
            print(lb.log_text())


def test_behind_nginx_agents_spread_over_processes_all_hear_a_deploy(
    fleet: Fleet, agents: Agents, nginx_ok: None, tmp_path: Path
) -> None:
    a, b, c = fleet(3)
    lb = NginxProcess(tmp_path / "nginx", [f"127.0.0.1:{b.port}", f"127.0.0.1:{c.port}"])
    with lb:
        ca = client(a)
        label = unique("rr")
        ids = [agents(lb.url, f"rr-{i}", [label]).wait_enrolled() for i in range(3)]
        for aid in ids:
            wait_until(lambda aid=aid: online(ca, aid), 20, f"{aid} online")
        src = tmp_path / "in.log"
        write_lines(src, 0, 10)
        pipe = unique("rr")
        ca.push(files_pipe(pipe, src, str(tmp_path / "out-{{agent.id}}.ndjson")))
        dep_id = ca.deploy(pipe, labels=[label])["id"]
        deployed = time.monotonic()
        wait_until(
            lambda: all(
                s["state"] in ("starting", "running") for s in ca.deployment(dep_id)["status"]
            ),
            10,
            "every agent to report the pipe",
            lambda: brief(ca, dep_id),
            0.005,
        )
        took = time.monotonic() - deployed
        print(f"deploy through a reached 3 agents behind nginx in {took * 1000:.0f} ms")
        assert took < 1.0
        # the check-ins really were spread: both processes answered some
        assert lb.answered_by(f"127.0.0.1:{b.port}") > 0
        assert lb.answered_by(f"127.0.0.1:{c.port}") > 0


def test_a_graceful_stop_hands_held_agents_to_the_other_process(
    fleet: Fleet, agents: Agents, tmp_path: Path
) -> None:
    a, b = fleet(2)
    agent = agents(f"{b.url},{a.url}", "graceful", [unique("g")], token_url=a.url)
    aid = agent.wait_enrolled()
    wait_until(lambda: online(client(b), aid), 20, "online through b")
    b.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    cut = len(agent.log_text())
    wait_until(lambda: "checked in with " + a.url in agent.log_text()[cut:], 15, "moved to a")
    assert online(client(a), aid)


# ------------------------------------------------------------------------------ teams on JupyterHub

JUPYTER_CONFIG = '''
import os
from jupyter_server.auth.identity import IdentityProvider, User

TOKEN = {token!r}


class HubUser(IdentityProvider):
    """Stands in for JupyterHub's OAuth: a request with the hub's token is this server's user,
    or the user an ``X-Hub-User`` header names (another person the hub lets in)."""

    def get_user(self, handler):
        scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or value != TOKEN:
            return None
        return User(username=handler.request.headers.get("X-Hub-User") or os.environ["JUPYTERHUB_USER"])


c = get_config()  # noqa: F821
c.ServerApp.jpserver_extensions = {{
    "pipenb.jupyter_ext": True,
    "jupyter_server_terminals": False,
    "jupyterlab": False,
    "jupyter_lsp": False,
    "notebook_shim": False,
}}
c.ServerApp.allow_root = True  # the tests may run as root (CI does)
c.ServerApp.identity_provider_class = HubUser
c.ServerApp.disable_check_xsrf = True
c.ServerApp.open_browser = False
c.ServerApp.port = {port}
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.root_dir = {root!r}
c.PipenbExtension.db_url = {db_url!r}
c.PipenbExtension.secret_key_file = {key!r}
c.PipenbExtension.enroll_key = {enroll!r}
c.PipenbExtension.poll_interval = {poll}
'''


def test_the_jupyterhub_example_sets_the_extensions_traitlets() -> None:
    """examples/jupyterhub_config.py: what it gives every user's server is what the extension
    reads (one database, one key, one role map)."""
    from traitlets.config import Config

    from pipenb.jupyter_ext.app import PipenbExtension

    path = REPO_ROOT / "examples" / "jupyterhub_config.py"
    ns: dict[str, Any] = {"get_config": Config, "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    ext = PipenbExtension()
    ext.parse_command_line(list(ns["c"].Spawner.args))
    assert ext.db_url.startswith("postgresql://")
    assert ext.secret_key_file and ext.roles and ext.default_role == "viewer"
    assert set(ext.roles.values()) <= {"viewer", "editor", "admin"}


class JupyterProcess:
    """A real Jupyter server with the pipenb extension, as JupyterHub spawns one per user."""

    def __init__(self, home: Path, user: str, db_url: str, key: Path):
        self.home = Path(home)
        self.user = user
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url, self.key = db_url, key
        self.log = self.home / "jupyter.log"
        self.proc: Any = None

    def start(self, timeout: float = 60.0) -> JupyterProcess:
        import subprocess
        import sys

        self.home.mkdir(parents=True, exist_ok=True)
        conf = self.home / "jupyter_server_config.py"
        conf.write_text(
            JUPYTER_CONFIG.format(
                token=self.token, port=self.port, root=str(self.home), db_url=self.db_url,
                key=str(self.key), enroll=ENROLL_KEY, poll=POLL,
            )
        )  # fmt: skip
        env = {k: v for k, v in clean_env().items() if not k.startswith("JUPYTER")}
        env.update(
            JUPYTERHUB_USER=self.user,
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
            JUPYTER_DATA_DIR=str(self.home / "data"),
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", f"--config={conf}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.home,
            )
        wait_until_up(
            self.proc,
            self.url + "/pipenb/api/v1/health",
            "jupyter",
            lambda: self.log.read_text()[-3000:],
            timeout,
        )
        return self

    def client(self) -> Client:
        return Client(self.url, self.token, timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 20)
        self.proc = None


def test_two_jupyter_servers_on_one_database_share_one_fleet(
    pg_url: str, agents: Agents, tmp_path: Path
) -> None:
    key = tmp_path / "secret.key"
    ana = JupyterProcess(tmp_path / "ana", "ana", pg_url, key)
    bo = JupyterProcess(tmp_path / "bo", "bo", pg_url, key)
    try:
        ana.start()
        bo.start()
        ca, cb = ana.client(), bo.client()
        assert ca.request("GET", "/whoami")["name"] == "ana"
        assert cb.request("GET", "/whoami")["name"] == "bo"
        # an agent enrolled through ana's server is in bo's fleet too
        agent = agents(ana.url, "shared", [])
        aid = agent.wait_enrolled()
        wait_until(lambda: online(cb, aid), 20, "the agent online through bo's server")
        src = tmp_path / "in.log"
        lines = write_lines(src, 0, 20)
        pipe = unique("team")
        ca.push(files_pipe(pipe, src, str(tmp_path / "out-{{agent.id}}.ndjson")))
        dep_id = ca.deploy(pipe, agents=[aid])["id"]
        out = tmp_path / f"out-{aid}.ndjson"
        wait_until(lambda: set(lines) <= set(raws(out)), 20, "the pipe's output")
        # bo sees ana's deployment, made by ana, and stops it: the agent ana's server holds
        # hears it
        mine = cb.deployment(dep_id)
        assert (mine["created_by"], mine["state"]) == ("ana", "running")
        cb.stop(dep_id)
        wait_until(lambda: not agent.worker_pids(), 10, "the worker to stop")
        assert ca.deployment(dep_id)["updated_by"] == "bo"
        # one audit trail, with each person's name, whichever server is asked (a record is
        # written after its answer, by the process that answered: another may see it a moment
        # later)
        expected = [
            ("ana", "POST", "/pipes", 201, "jupyter"),
            ("ana", "POST", "/deployments", 201, "jupyter"),
            ("bo", "POST", "/deployments/{dep_id}/stop", 200, "jupyter"),
        ]
        for c in (ca, cb):

            def trail(c: Any = c) -> list[tuple[Any, ...]]:
                return [
                    (e["user"], e["method"], e["route"], e["status"], e["via"])
                    for e in c.audit()["entries"]
                ]

            wait_until(lambda: trail() == expected, 10, "the whole audit trail", trail)
        # exactly one of the two runs the fleet's background jobs
        jobs_of = [
            requests.get(j.url + "/pipenb/api/v1/health", timeout=5).json()["jobs"]
            for j in (ana, bo)
        ]
        assert sorted(jobs_of) == [False, True], jobs_of
    finally:
        ana.stop()
        bo.stop()
        for j in (ana, bo):
            if j.log.exists():
                print(f"==== {j.log}\n{j.log.read_text(errors='replace')[-3000:]}")


# ------------------------------------------------------------------------------ lost connections


def _backends(pg_url: str, name: str) -> list[int]:
    """Backend pids of the coordination connections named ``name`` (application_name)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            (name, make_url(pg_url).database),
        ).fetchall()
    return [r[0] for r in rows]


def _terminate(pg_url: str, pids: list[int]) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_process_that_lost_its_listening_connection_catches_up(
    fleet: Fleet, pg_url: str, tmp_path: Path
) -> None:
    """Messages sent while a process does not listen are lost: back, it answers every check-in
    it holds (the agents ask again and get what changed) and forgets its caches."""
    a, b = fleet(2)
    ca = client(a)
    label = unique("lost")
    aid, _, key = hand_agent(ca, label)
    pipe = unique("p")
    ca.push(files_pipe(pipe, tmp_path / "in.log", str(tmp_path / "out.ndjson")))
    wait_until(lambda: len(_backends(pg_url, "pipenb-bus")) == 2, 10, "both listening")
    held = held_on(b, aid, key)
    before = set(_backends(pg_url, "pipenb-bus"))
    # cut every listening connection, then deploy at once: b may not hear it
    _terminate(pg_url, sorted(before))
    ca.deploy(pipe, labels=[label])
    held.thread.join(15)
    assert held.answer is not None and held.answer.status_code == 200, held.answer
    # the answer (by the message, or by b catching up) leads to the new desired set
    again = checkin(b, key, aid, seq=2, full=True)
    assert [d["pipe"] for d in again.json()["desired"]] == [pipe]
    wait_until(
        lambda: len(set(_backends(pg_url, "pipenb-bus")) - before) == 2, 10, "listening again"
    )
    assert "listening to the other server processes again" in b.log.read_text()


def test_a_process_that_lost_the_jobs_lock_with_its_connection_stops_running_them(
    fleet: Fleet, pg_url: str
) -> None:
    procs = fleet(2)
    wait_until(lambda: sum(jobs(p) for p in procs) == 1, 10, "one process with the jobs")
    pid = wait_until(lambda: _lock_holder(pg_url), 10, "the lock's holder")
    assert pid in _backends(pg_url, "pipenb-jobs")  # a connection of its own
    _terminate(pg_url, [pid])
    # whoever takes it next (the same process, on a new connection, or the other), never two
    wait_until(
        lambda: pid not in _backends(pg_url, "pipenb-jobs") and _lock_holder(pg_url) is not None,
        10,
        "the lock taken again",
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # sample for a while: never two at once
        now = [jobs(p) for p in procs]
        assert sum(now) <= 1, now
    wait_until(lambda: sum(jobs(p) for p in procs) == 1, 10, "one process with the jobs again")


def _lock_holder(pg_url: str) -> int | None:
    import psycopg

    from pipenb.server.leader import LOCK_KEY

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (LOCK_KEY,),
        ).fetchone()
    return row[0] if row else None
