"""The agent's parts on their own: settings, the data-dir store, and one worker process spoken to
over its stdin/stdout protocol (pipenb/agent/protocol.py) with no agent and no server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.agent.protocol import EXIT_REFUSED
from pipenb.agent.settings import AgentSettings
from pipenb.agent.store import AgentStore

from support.processes import clean_env
from support.waiting import wait_until

# ------------------------------------------------------------------------------ settings and store


@pytest.mark.parametrize(
    ("policy", "allow_scripts", "disable", "allowed"),
    [
        ({}, False, [], []),  # exec and scripts are off by default
        ({}, True, [], ["script"]),
        ({"exec": "any"}, False, [], ["exec"]),
        ({"exec": ["df"]}, True, [], ["exec", "script"]),
        ({"exec": "any"}, False, ["exec"], []),  # --disable wins over the policy
        ({"exec": "any"}, True, ["exec"], ["script"]),
        ({"exec": "any", "scripts": True}, False, ["script"], ["exec"]),
        ({"exec": "any"}, True, ["exec", "script"], []),
    ],
)
def test_capabilities_granted(
    policy: dict[str, Any], allow_scripts: bool, disable: list[str], allowed: list[str]
) -> None:
    s = AgentSettings(
        server="x",
        data_dir="d",
        allow_scripts=allow_scripts,
        disable=disable,
        policy_values=policy,
    )
    assert s.allow == allowed


def test_store_keeps_the_identity_private_and_writes_atomically(tmp_path: Path) -> None:
    store = AgentStore(str(tmp_path / "agent"))
    assert store.identity() is None and store.desired() == [] and store.applied_seqs() == {}
    store.save_identity("a-1", "pnb_secret")
    path = tmp_path / "agent" / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.identity() == {"agent_id": "a-1", "api_key": "pnb_secret"}
    store.save_desired([{"deployment_id": "d"}])
    store.save_applied_seqs({"d": 2})
    assert AgentStore(str(tmp_path / "agent")).desired() == [{"deployment_id": "d"}]
    assert AgentStore(str(tmp_path / "agent")).applied_seqs() == {"d": 2}
    (tmp_path / "agent" / "desired.json").write_bytes(b"{torn")
    assert store.desired() == []  # a damaged file is no desired set, not a crash
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [
        "applied.json",
        "desired.json",
        "identity.json",
    ]  # no temporary files left behind


# ------------------------------------------------------------------------------ one worker


class Worker:
    """``python -m pipenb.agent.worker_main`` with a job; its messages collected by a thread."""

    def __init__(self, job: dict[str, Any], then: list[dict[str, Any]] = ()):  # type: ignore[assignment]
        env = clean_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipenb.agent.worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None
        # the job and any first commands in one write, as a pipe may deliver them
        self.proc.stdin.write(b"".join(orjson.dumps(m) + b"\n" for m in [job, *then]))
        self.proc.stdin.flush()
        self.messages: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.append(orjson.loads(line))

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(msg) + b"\n")
        self.proc.stdin.flush()

    def states(self) -> list[str]:
        return [m["state"] for m in self.messages if m["type"] == "status"]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {timeout}s") from None

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join(5)


@pytest.fixture
def workers() -> Any:
    made: list[Worker] = []

    def start(job: dict[str, Any], then: list[dict[str, Any]] = ()) -> Worker:  # type: ignore[assignment]
        w = Worker(job, then)
        made.append(w)
        return w

    yield start
    for w in made:
        w.kill()


def job(tmp_path: Path, yaml: str, allow: list[str] = ("exec",)) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "deployment_id": "dep-unit",
        "yaml": yaml,
        "params": {},
        "builtins": None,
        "hash": "h1",
        "data_dir": str(tmp_path / "data"),
        "allow": list(allow),
    }


def files_yaml(src: Path, out: Path) -> str:
    return (
        f'name: unit\ninput:\n  files: {{path: "{src}", poll-interval: 50ms}}\n'
        f"actions:\n  - add: {{seen: true}}\n"
        f'output:\n  file: {{path: "{out}", batch: {{timeout: 50ms}}}}\n'
    )


def lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    except FileNotFoundError:
        return []


def test_a_worker_runs_taps_and_stops_with_a_checkpoint(tmp_path: Path, workers: Any) -> None:
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("".join(f"l{i}\n" for i in range(20)))
    w = workers(job(tmp_path, files_yaml(src, out)))
    wait_until(lambda: "running" in w.states(), 20, "running")
    wait_until(lambda: len(lines(out)) == 20, 20, "the output")
    w.send({"type": "capture", "id": "c1", "stage": "input", "limit": 2})
    with open(src, "a") as fh:
        fh.write("l20\nl21\nl22\n")
    cap = wait_until(
        lambda: next((m for m in w.messages if m["type"] == "capture"), None), 20, "capture"
    )
    assert cap["id"] == "c1" and cap["events"] == [{"_raw": "l20"}, {"_raw": "l21"}]
    w.send({"type": "stop"})
    assert w.wait(20) == 0
    w._thread.join(5)
    assert w.states()[-1] == "stopped"
    final = [m for m in w.messages if m["type"] == "status"][-1]
    (pos,) = final["checkpoint"]["files"].values()
    assert pos["offset"] == src.stat().st_size
    saved = orjson.loads((tmp_path / "data" / "checkpoints" / "dep-unit.json").read_bytes())
    assert saved["position"] == final["checkpoint"]
    assert [e["_raw"] for e in lines(out)] == [f"l{i}" for i in range(23)]


def test_a_worker_refuses_a_capability_it_is_not_granted(tmp_path: Path, workers: Any) -> None:
    yaml = "name: unit\ninput: {exec: {command: 'echo hi'}}\noutput: {discard: {}}\n"
    w = workers(job(tmp_path, yaml, allow=[]))
    assert w.wait(20) == EXIT_REFUSED
    w._thread.join(5)
    (msg,) = w.messages
    assert msg["state"] == "failed" and "exec" in msg["error"]


def test_what_a_pipe_prints_or_reads_is_not_the_agents_channel(
    tmp_path: Path, workers: Any
) -> None:
    """A pipe's ``print`` output goes to the worker's log, not to the agent: events shaped
    like a worker's status (any state, error, checkpoint) are never taken for one (the code
    before took every one). A ``stdin`` input reads nothing of the agent's: it ends at once."""
    forged = {"type": "status", "state": "failed", "error": "forged", "checkpoint": {"x": 1}}
    yaml = (
        "name: printer\ninput:\n"
        f"  echo: {{events: [{orjson.dumps(forged).decode()}], count: 5}}\n"
        "output: {print: {}}\n"
    )
    w = workers(job(tmp_path, yaml))
    assert w.wait(20) == 0
    w._thread.join(5)
    assert all(m.get("error") != "forged" for m in w.messages), w.messages
    assert w.states()[-1] == "finished"
    assert w.stderr().count('"error":"forged"') == 5  # printed: into the log

    yaml = "name: reader\ninput: {stdin: {}}\noutput: {print: {}}\n"
    r = workers(job(tmp_path, yaml))
    assert r.wait(20) == 0
    r._thread.join(5)
    assert r.states()[-1] == "finished"


def test_a_stop_sent_with_the_job_ends_the_worker(tmp_path: Path, workers: Any) -> None:
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("a\nb\n")
    w = workers(job(tmp_path, files_yaml(src, out)), then=[{"type": "stop"}])
    assert w.wait(6) == 0


def test_a_worker_whose_agent_is_gone_drains_and_exits_cleanly(tmp_path: Path) -> None:
    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("".join(f"l{i}\n" for i in range(20)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenb.agent.worker_main"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(orjson.dumps(job(tmp_path, files_yaml(src, out))) + b"\n")
        proc.stdin.flush()
        wait_until(lambda: len(lines(out)) == 20, 20, "the output")
        # the agent dies: both ends of its pipes close
        proc.stdin.close()
        proc.stdout.close()
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not exit within 20s") from None
        saved = orjson.loads((tmp_path / "data" / "checkpoints" / "dep-unit.json").read_bytes())
        (pos,) = saved["position"]["files"].values()
        assert pos["offset"] == src.stat().st_size  # the drain itself happened
        err = proc.stderr.read().decode(errors="replace")
        assert "Traceback" not in err, err
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_the_restart_backoff_starts_afresh_after_a_stable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipenb.agent import supervisor as w

    handle = w.WorkerHandle(
        {"deployment_id": "dep-x", "hash": "h"}, {"data_dir": str(tmp_path)}, lambda: None
    )
    now = [1000.0]
    monkeypatch.setattr(w.time, "monotonic", lambda: now[0])
    delays = []
    for _ in range(4):  # quick crashes: the delay doubles
        handle.started_at = now[0]
        handle._failed("crash")
        delays.append(handle.restart_at - now[0])
    assert delays == [0.5, 1.0, 2.0, 4.0]
    handle.started_at = now[0]
    now[0] += w.STABLE_AFTER  # then it ran a while before failing again
    handle._failed("crash")
    assert handle.restart_at - now[0] == 0.5 and handle.failures == 1
