"""The agent's side of one worker process: start it, read what it says, stop or restart it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from pipenb.agent.protocol import EXIT_REFUSED

log = logging.getLogger("pipenb.agent")


def worker_environ() -> dict[str, str]:
    """The agent's environment without its ``PIPENB_*`` settings (API and enrollment keys):
    a worker, and every command it runs, never sees them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}


#: no working directory on a worker's sys.path: a module a pipe wrote there is not ours to run
#: (``-P`` is Python 3.11's; 3.10 has no such switch)
SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()

#: Seconds a worker must run before its next failure counts as the first again.
STABLE_AFTER = 60.0


class WorkerHandle:
    """One deployment's worker. ``state`` is what the agent reports for it."""

    def __init__(
        self,
        desired: dict[str, Any],
        job: dict[str, Any],
        on_change: Callable[[], None],
        on_log: Callable[[str, str], None] | None = None,
    ):
        self.desired = desired
        self.on_log = on_log  # (level, message) of the worker's warnings, for the server
        self.job = job
        self.dep_id: str = desired["deployment_id"]
        self.hash: str = desired["hash"]
        self.on_change = on_change
        self.state = "starting"
        self.error: str | None = None
        self.metrics: dict[str, Any] | None = None
        self.checkpoint: Any = None
        self.proc: asyncio.subprocess.Process | None = None
        self.captures: dict[str, dict[str, Any]] = {}  # command id -> result to report
        self.failures = 0
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.refused = False
        self._stopping = False
        self._reader: asyncio.Task | None = None
        self.log_path = os.path.join(job["data_dir"], "logs", f"{self.dep_id}.log")

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        self._stopping = False
        self.restart_at = None
        self.started_at = time.monotonic()
        self.state, self.error = "starting", None
        try:
            os.makedirs(os.path.dirname(self.log_path), mode=0o700, exist_ok=True)
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "ab") as err:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    *SAFE_PATH,
                    "-m",
                    "pipenb.agent.worker_main",
                    env=worker_environ(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                    limit=64 * 1024 * 1024,
                )
        except OSError as exc:  # a read-only or full data dir, no processes left: try again later
            self.proc = None
            self._failed(f"cannot start the worker: {exc}")
            self.on_change()
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(self.job) + b"\n")
        await self.proc.stdin.drain()
        self._reader = asyncio.create_task(self._read(self.proc))
        self.on_change()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if msg.get("type") == "status":
                changed = msg.get("state") != self.state or msg.get("error") != self.error
                self.state = msg.get("state", self.state)
                self.error = msg.get("error")
                if msg.get("metrics") is not None:
                    self.metrics = msg["metrics"]
                if msg.get("checkpoint") is not None:
                    self.checkpoint = msg["checkpoint"]
                if changed:
                    self.on_change()
            elif msg.get("type") == "log":
                if self.on_log is not None:
                    self.on_log(str(msg.get("level") or "warning"), str(msg.get("message") or ""))
            elif msg.get("type") == "capture":
                self.captures[msg["id"]] = {
                    "command_id": msg["id"],
                    "events": msg.get("events") or [],
                    "error": msg.get("error"),
                }
                self.on_change()
        code = await proc.wait()
        if self._stopping:
            if self.state not in ("finished", "failed"):
                self.state = "stopped"
        elif code == EXIT_REFUSED:
            self.refused = True
            if self.state != "refused":  # refused by this host's policy: it said so
                self.state = "failed"
            self.error = self.error or "the worker refused the pipe"
        elif code == 0 and self.state == "finished":
            pass
        else:
            self._failed(self.error or f"worker exited with status {code}: {self._tail()}")
        self.on_change()

    def _failed(self, error: str) -> None:
        """Failed: report it, and restart after a backoff (0.5 s doubling to 60 s). A worker that
        had run for STABLE_AFTER seconds starts the backoff afresh: an old fault should not make
        today's restart slow."""
        if time.monotonic() - self.started_at >= STABLE_AFTER:
            self.failures = 0
        self.failures += 1
        delay = min(60.0, 0.5 * 2 ** min(self.failures - 1, 7))
        self.state = "failed"
        self.error = error
        self.restart_at = time.monotonic() + delay
        log.warning("pipe %s failed (%s); restarting in %.1fs", self.dep_id, self.error, delay)

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 2000))
                lines = fh.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else "no output"
        except OSError:
            return "no output"

    def send(self, msg: dict[str, Any]) -> bool:
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            return False
        try:
            self.proc.stdin.write(orjson.dumps(msg) + b"\n")
        except (ConnectionResetError, BrokenPipeError, RuntimeError):
            return False
        return True

    async def stop(self, timeout: float) -> None:
        """Ask the worker to drain and exit; terminate it if it takes longer than ``timeout``."""
        self._stopping = True
        self.restart_at = None
        proc = self.proc
        if proc is None or proc.returncode is not None:
            if self.state not in ("failed", "finished"):
                self.state = "stopped"
            return
        self.send({"type": "stop"})
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    def report(self) -> dict[str, Any]:
        return {
            "deployment_id": self.dep_id,
            "hash": self.hash,
            "state": self.state,
            "error": self.error,
            "metrics": self.metrics,
            "checkpoint": self.checkpoint,
        }
