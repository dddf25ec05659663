"""Fault injection for the end-to-end reliability tests (``test_faults.py``).

Real processes only: a real ``pipenb server`` (``support.serverproc``), real agents
(``support.agentproc``) and their worker processes, real files. What this module adds is the faults and the bookkeeping:

- ``Producer``: appends ``{"n": i}`` lines to the input file at a steady pace from a thread, so a
  fault can land at a random point of a 100k-event run (``wait_written``), whatever the speed of
  the machine.
- ``tally_file`` / ``Tally``: every ``n`` of the output counted; lost, duplicated and torn lines.
- ``RefusingSink``: a loopback HTTP receiver that answers 503 or hangs up until told otherwise.
- ``SqliteLocker``: another process holding ``BEGIN EXCLUSIVE`` on the server's database.
- ``ReadOnly``: a directory made read-only for real, even for root (a read-only bind mount, or
  the immutable attribute), and writable again.
- ``record``: one JSON line per test in ``tests/artifacts/faults.jsonl`` (test, seed, events_in,
  unique_out, duplicates, seconds from the start of the input flow to the end of the run, and
  the fault's own figures) and one ``faults: ...`` line on stdout.
- ``Rig``: one test's world (server, agent, input, deployed pipe) and its clean-up.

Every wait polls a condition with a deadline (``wait_for``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from support import ARTIFACTS
from support.agentproc import AgentProcess, tmp_policy
from support.serverproc import ServerProcess
from support.waiting import wait_until as wait_for

FAULTS_LOG = ARTIFACTS / "faults.jsonl"


# ------------------------------------------------------------------------------ waiting


# ------------------------------------------------------------------------------ seeds


def seed_for() -> int:
    """``PIPENB_FAULT_SEED`` when set (to replay a run), else a fresh random seed."""
    given = os.environ.get("PIPENB_FAULT_SEED")
    return int(given) if given else secrets.randbits(32)


# ------------------------------------------------------------------------------ input


def numbered(start: int, stop: int) -> bytes:
    return "".join(f'{{"n": {i}}}\n' for i in range(start, stop)).encode()


class Producer:
    """Appends ``{"n": i}`` lines for i in ``[0, total)`` to ``path``: some at once
    (``write_first``), the rest from a thread (``start``) in bursts over about ``seconds``."""

    def __init__(self, path: Path, total: int = 100_000, seconds: float = 3.0, burst: int = 1000):
        self.path = path
        self.total = total
        self.seconds = seconds
        self.burst = burst
        self.written = 0
        self.size = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _append(self, count: int) -> None:
        end = min(self.total, self.written + count)
        data = numbered(self.written, end)
        with open(self.path, "ab") as fh:
            fh.write(data)
        self.size += len(data)
        self.written = end

    def write_first(self, count: int) -> None:
        self._append(count)

    def start(self) -> Producer:
        bursts = max(1, -(-(self.total - self.written) // self.burst))
        pause = self.seconds / bursts

        def run() -> None:
            try:
                while self.written < self.total and not self._stop.is_set():
                    self._append(self.burst)
                    self._stop.wait(pause)  # paces the writer; nothing waits on this
            except BaseException as exc:  # seen by the test through .error
                self.error = exc

        self._thread = threading.Thread(target=run, name="fault-producer", daemon=True)
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.written >= self.total

    def wait_written(self, count: int, timeout: float = 60.0) -> None:
        wait_for(lambda: self.written >= count or self.error, timeout, f"{count} lines written")
        if self.error is not None:
            raise self.error

    def finish(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.done or self.error, timeout, "the producer to finish")
        if self.error is not None:
            raise self.error
        self.join()

    def join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


# ------------------------------------------------------------------------------ output


@dataclass
class Tally:
    """What arrived, against the ``expected`` numbers 0 .. expected-1."""

    expected: int
    counts: Counter = field(default_factory=Counter)
    torn: int = 0  # lines cut short by a SIGKILL (their events are replayed, not lost)

    def add(self, values: Iterable[Any]) -> None:
        self.counts.update(values)

    @property
    def events_out(self) -> int:
        return sum(self.counts.values())

    @property
    def unique(self) -> int:
        return sum(1 for n in range(self.expected) if n in self.counts)

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.counts.values() if c > 1)

    @property
    def missing(self) -> list[int]:
        return [n for n in range(self.expected) if n not in self.counts]

    @property
    def strangers(self) -> list[Any]:
        """Values that were never in the input."""
        return [n for n in self.counts if not (isinstance(n, int) and 0 <= n < self.expected)]

    def summary(self) -> str:
        missing = self.missing
        lost = f"lost={len(missing)} (first {missing[:10]})" if missing else "lost=0"
        return (
            f"events_in={self.expected} events_out={self.events_out} unique_out={self.unique} "
            f"duplicates={self.duplicates} torn={self.torn} {lost}"
        )


def tally_file(path: Path, expected: int) -> Tally:
    """Count every ``n`` of an NDJSON output file (only complete lines; torn ones counted)."""
    t = Tally(expected)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return t
    cut = data.rfind(b"\n")
    values = []
    for line in data[: cut + 1].split(b"\n"):
        if not line.strip():
            continue
        try:
            values.append(orjson.loads(line)["n"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            t.torn += 1
    t.add(values)
    return t


def line_count(path: Path) -> int:
    """Newlines in a file that may be growing: cheap enough to poll."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------ HTTP sink


class RefusingSink:
    """A loopback HTTP receiver of JSON-array (or NDJSON) batches of ``{"n": ...}`` events.

    While refusing (``refuse()`` .. ``accept()``) it alternates between answering ``503`` with
    ``Retry-After: 1`` and hanging up without an answer (the body unread), and keeps nothing.
    Accepting, it records every event and answers 200."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.refused = 0  # requests turned away
        self.accepted = 0  # requests answered 200
        self.refusing = False
        self.refused_at: float | None = None
        self.accepted_at: float | None = None
        self.first_after: float | None = None  # when the first request after refusing arrived
        self._lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with sink._lock:
                    refusing = sink.refusing
                    if refusing:
                        sink.refused += 1
                        turn = sink.refused
                if refusing:
                    if turn % 2:
                        self.send_response(503, "Service Unavailable")
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Length", "0")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.close_connection = True
                    else:  # hang up: the client gets no answer at all
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(2)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if body.lstrip().startswith(b"["):
                    events = orjson.loads(body)
                else:
                    events = [orjson.loads(x) for x in body.splitlines() if x.strip()]
                with sink._lock:
                    sink.values.extend(e.get("n") for e in events)
                    sink.accepted += 1
                    if sink.first_after is None and sink.accepted_at is not None:
                        sink.first_after = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/ingest"

    def refuse(self) -> None:
        with self._lock:
            self.refusing = True
            self.refused_at = time.monotonic()

    def accept(self) -> None:
        with self._lock:
            self.refusing = False
            self.accepted_at = time.monotonic()

    def tally(self, expected: int) -> Tally:
        with self._lock:
            values = list(self.values)
        t = Tally(expected)
        t.add(values)
        return t

    def unique_count(self) -> int:
        with self._lock:
            return len(set(self.values))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


# ------------------------------------------------------------------------------ SQLite lock

_LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print("ready", flush=True)
sys.stdin.readline()  # go
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))  # the fault: hold the lock this long
db.execute("COMMIT")
print("released", flush=True)
"""


class SqliteLocker:
    """Another process that takes ``BEGIN EXCLUSIVE`` on a SQLite file when told (``lock``),
    holds it ``seconds`` and lets go. It is started beforehand (``start``), so the lock is taken
    at once when the moment comes; ``close`` ends it whatever happened."""

    def __init__(self, db_path: Path, seconds: float):
        self.db_path = db_path
        self.seconds = seconds
        self.proc: subprocess.Popen[str] | None = None

    def _expect(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the locker answers at once (or dies)
        if line.strip() != word:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the locker said {line!r}, not {word!r}: {err}")

    def start(self) -> SqliteLocker:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(self.db_path), str(self.seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._expect("ready")
        return self

    def lock(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._expect("locked")

    def wait_released(self) -> None:
        self._expect("released")

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


# ------------------------------------------------------------------------------ read-only dir


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def _writes_fail(directory: Path) -> bool:
    probe = directory / f".probe-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return True
    probe.unlink()
    return False


class ReadOnly:
    """Makes a directory read-only for real, root included, and writable again.

    A plain ``chmod`` does not stop root, so: first a read-only bind mount of the directory over
    itself (new opens for writing fail with EROFS; files already open keep working, as on a
    filesystem remounted read-only under a running program), else the immutable attribute on
    the directory and everything in it (``chattr -R +i``: EPERM). ``method`` says which worked;
    None means neither did (``why`` says why)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.method: str | None = None
        self.why = ""

    def on(self) -> str | None:
        if shutil.which("mount") and shutil.which("umount") and self._bind_read_only():
            return self.method
        if shutil.which("chattr"):
            imm = _run("chattr", "-R", "+i", str(self.dir))
            if imm.returncode == 0 and _writes_fail(self.dir):
                self.method = "chattr+i"
                return self.method
            _run("chattr", "-R", "-i", str(self.dir))
            self.why += f"chattr +i: {(imm.stderr or 'writes still work').strip()}; "
        else:
            self.why += "no chattr; "
        return None

    def _bind_read_only(self) -> bool:
        """A read-only bind mount of the directory, made read-only aside and then moved over it
        in one step (remounting it in place races with the agent's own writes: EBUSY)."""
        d = str(self.dir)
        stage = tempfile.mkdtemp(prefix=".ro-", dir=self.dir.parent)
        try:
            step = _run("mount", "--bind", d, stage)
            if step.returncode != 0:
                self.why += f"bind mount: {step.stderr.strip()}; "
                return False
            step = _run("mount", "-o", "remount,bind,ro", stage)
            if step.returncode == 0:
                step = _run("mount", "--move", stage, d)
            if step.returncode != 0:
                _run("umount", stage)
                self.why += f"read-only bind mount: {step.stderr.strip()}; "
                return False
            self.method = "bind-mount-ro"
            if _writes_fail(self.dir):
                return True
            self.off()
            self.why += "read-only bind mount: writes still work; "
            return False
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(stage)

    def off(self) -> None:
        method, self.method = self.method, None
        if method == "bind-mount-ro":
            done = _run("umount", str(self.dir))
            if done.returncode != 0:  # busy: detach it lazily, it must not outlive the test
                _run("umount", "-l", str(self.dir))
        elif method == "chattr+i":
            _run("chattr", "-R", "-i", str(self.dir))


# ------------------------------------------------------------------------------ figures


def record(test: str, seed: int, tally: Tally, seconds: float, **detail: Any) -> dict[str, Any]:
    """Print the test's figures and append them to ``tests/artifacts/faults.jsonl``."""
    row = {
        "test": test,
        "seed": seed,
        "events_in": tally.expected,
        "unique_out": tally.unique,
        "duplicates": tally.duplicates,
        "seconds": round(seconds, 2),
        "torn": tally.torn,
        "lost": len(tally.missing),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in detail.items()},
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(FAULTS_LOG, "ab") as fh:
        fh.write(orjson.dumps(row) + b"\n")
    print(f"faults: {test} seed={seed} {tally.summary()} seconds={seconds:.1f} {detail}")
    return row


# ------------------------------------------------------------------------------ one test's world

ENROLL_KEY = "ek-faults"
TOTAL = 100_000  # events in every run
FIRST = 1_000  # written before the deploy: the pipe is known to run before the fault
BATCH = 500  # output batch size: duplicates are bounded by a couple of these
READ_BYTES = "4KB"  # input read size (about 300 events): the other part of a batch in flight
PRODUCE_SECONDS = 3.0  # the rest of the input is appended over about this long


class Rig:
    """A server, an agent (restarted on the same data dir as needed), the input, the pipe.

    ``begin`` deploys a ``files`` -> OUTPUT pipe and starts appending the input; ``fault_point``
    waits until a random (seeded) share of the input is written; ``wait_complete`` waits until
    every event was delivered, the agent's checkpoint is at the end of the input and the server
    heard so; ``conclude`` records the figures and asserts nothing was lost. ``close`` ends every
    process and undoes every fault, whatever happened."""

    def __init__(self, tmp: Path, test: str):
        from pipenb.client import Client

        self._client_cls = Client
        self.tmp = tmp
        self.test = test
        self.seed = seed_for()
        self.rng = random.Random(self.seed)
        self.label = f"faults{secrets.token_hex(3)}"
        self.pipe = f"faults-{secrets.token_hex(3)}"
        self.src = tmp / "in.ndjson"
        self.out = tmp / "out.ndjson"
        self.producer = Producer(self.src, TOTAL, PRODUCE_SECONDS)
        self.server: Any = None
        self.client: Any = None
        self.agents: list[Any] = []
        self.undo: list[Callable[[], None]] = []
        self.dep_id = ""
        self.delivered: Callable[[], int] = lambda: line_count(self.out)
        self.began = time.monotonic()

    # ------------------------------------------------------------------ processes
    def start_server(self, port: int = 0) -> Any:
        if self.server is None:
            self.server = ServerProcess(self.tmp / "server", enroll_key=ENROLL_KEY)
        self.server.start(port=port)
        self.client = self._client_cls(self.server.url, self.server.token, timeout=30)
        return self.server

    @property
    def db_path(self) -> Path:
        return self.server.data_dir / "server.db"

    @property
    def agent(self) -> Any:
        return self.agents[-1]

    def start_agent(self, enroll: bool = True) -> Any:
        """An agent on the rig's data dir: enrolled the first time, its saved identity after."""
        agent = AgentProcess(
            self.server.url,
            self.tmp / "agent",
            enroll_key=ENROLL_KEY if enroll else None,
            name="victim" if enroll else None,
            labels=[self.label] if enroll else (),
            long_poll=2.0,
            extra=("--metrics-every", "1", *tmp_policy()),  # its pipes read and write in tmp
        )
        self.agents.append(agent)
        agent.start()
        agent.wait_enrolled()
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.cleanup()
        if self.server is not None:
            self.server.kill()
        self.producer.join()
        for undo in reversed(self.undo):
            with contextlib.suppress(Exception):
                undo()
        self.undo.clear()

    def dump_logs(self) -> None:
        """Logs of every process, printed (pytest shows them when the test failed)."""
        logs = [a.log for a in self.agents[-1:]]
        logs += sorted((self.tmp / "agent" / "logs").glob("*.log"))
        if self.server is not None:
            logs.append(self.server.log)
        for path in logs:
            with contextlib.suppress(OSError):
                print(f"==== {path}\n{path.read_text(errors='replace')[-4000:]}")

    # ------------------------------------------------------------------ the pipe
    def file_output(self) -> str:
        return f'file: {{path: "{self.out}", batch: {{size: {BATCH}, timeout: 50ms}}}}'

    def http_output(self, url: str) -> str:
        return f'http-post: {{url: "{url}", timeout: 5s, batch: {{size: {BATCH}, timeout: 50ms}}}}'

    def pipe_yaml(self, output: str) -> str:
        return (
            f"name: {self.pipe}\n"
            "input:\n"
            f'  files: {{path: "{self.src}", format: json, poll-interval: 20ms, '
            f"read-bytes: {READ_BYTES}}}\n"
            "output:\n"
            f"  {output}\n"
        )

    def begin(self, output: str | None = None, delivered: Callable[[], int] | None = None) -> None:
        """Server, agent, deploy; once the first events are through, the rest of the input
        starts to flow."""
        if delivered is not None:
            self.delivered = delivered
        self.start_server()
        self.start_agent()
        self.producer.write_first(FIRST)
        self.client.push(self.pipe_yaml(output or self.file_output()))
        self.dep_id = self.client.deploy(self.pipe, labels=[self.label])["id"]
        wait_for(lambda: self.delivered() >= FIRST, 30, "the first events delivered", self.info)
        self.began = time.monotonic()
        self.producer.start()

    def fault_point(self) -> int:
        """Wait until a random share (15-85 %) of the input is written: when the fault lands."""
        at = self.rng.randint(TOTAL * 15 // 100, TOTAL * 85 // 100)
        self.producer.wait_written(at)
        return at

    # ------------------------------------------------------------------ state
    def checkpoint_offset(self) -> int | None:
        """The input offset of the agent's saved checkpoint (None before the first one)."""
        saved = self.agent.checkpoint(self.dep_id) if self.agents else None
        files = ((saved or {}).get("position") or {}).get("files") or {}
        offsets = [f.get("offset") for f in files.values()]
        return offsets[0] if len(offsets) == 1 else None

    def instance(self) -> dict[str, Any] | None:
        st = self.client.deployment(self.dep_id)["status"]
        return st[0] if len(st) == 1 else None

    def info(self) -> str:
        try:
            inst = self.instance()
            seen = {k: inst.get(k) for k in ("state", "in_sync", "agent_state", "error")}
        except Exception as exc:
            seen = {"server": repr(exc)}
        return (
            f"seed={self.seed} written={self.producer.written} delivered={self.delivered()} "
            f"checkpoint={self.checkpoint_offset()} of {self.producer.size} "
            f"workers={self.agent.worker_pids() if self.agents else []} instance={seen}"
        )

    def wait_complete(self, timeout: float = 60.0) -> float:
        """Every event delivered and checkpointed, and the server told so; returns when."""
        self.producer.finish()

        def done() -> bool:
            return self.checkpoint_offset() == self.producer.size and self.delivered() >= TOTAL

        wait_for(done, timeout, "every event delivered and checkpointed", self.info, 0.05)
        finished = time.monotonic()

        def heard() -> bool:
            inst = self.instance()
            files = ((inst or {}).get("checkpoint") or {}).get("files") or {}
            return bool(
                inst
                and inst["state"] == "running"
                and inst["in_sync"]
                and inst["agent_state"] == "online"
                and [f.get("offset") for f in files.values()] == [self.producer.size]
            )

        wait_for(heard, 20, "the server to hear the pipe caught up", self.info, 0.1)
        return finished

    # ------------------------------------------------------------------ the verdict
    def conclude(self, tally: Tally, bound: int, finished: float, **detail: Any) -> dict[str, Any]:
        """Record the figures, then assert: nothing lost, nothing invented, duplicates bounded."""
        row = record(self.test, self.seed, tally, finished - self.began, **detail)
        msg = f"{self.test}: seed={self.seed} {tally.summary()} (replay: PIPENB_FAULT_SEED)"
        assert tally.missing == [], f"events lost: {msg}"
        assert tally.strangers == [], f"events never written to the input: {msg}"
        assert tally.duplicates <= bound, f"duplicates={tally.duplicates} over {bound}: {msg}"
        return row
