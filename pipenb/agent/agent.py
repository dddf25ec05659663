"""The agent: check in with the server, run the desired pipes, report, survive faults.

One asyncio loop. Check-ins run in a thread (``http.client``) so the loop stays free to read
workers; a check-in is a long poll, and when a worker has news while one is held, a fresh
check-in goes out at once (the server answers the held one). While the server is unreachable the
agent keeps running the last desired pipes it saved, buffers a bounded number of log lines, and
retries with exponential backoff and jitter (honouring ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import platform
import random
import socket
import time
from collections import deque
from typing import Any

from pipenb.agent.http import post
from pipenb.agent.settings import AgentSettings
from pipenb.agent.store import AgentStore
from pipenb.agent.supervisor import WorkerHandle
from pipenb.agent.trust import Trust
from pipenb.capabilities import CAPABILITIES
from pipenb.errors import AgentError, AgentTurnedAway, ServerError
from pipenb.tls import plain_http_problem

log = logging.getLogger("pipenb.agent")
LOGS_PER_CHECKIN = 500  # log lines sent at once (the server keeps at most this many per check-in)
#: What a person running an agent wants to see without -v: that it is up (where, as whom) and
#: each deployment it starts, changes or stops. INFO here shows at the default WARNING level.
changes = logging.getLogger("pipenb.agent.changes")
changes.setLevel(logging.INFO)


class Agent:
    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.store = AgentStore(settings.data_dir, traversable=bool(settings.run_as))
        if settings.run_as:
            _prepare_run_as(settings.data_dir, settings.run_as)
        self.agent_id: str | None = None
        self.api_key: str | None = None
        self.workers: dict[str, WorkerHandle] = {}
        self.desired: list[dict[str, Any]] = self.store.desired()
        self.desired_hash: str | None = None
        self.applied = self.store.applied_seqs()
        self.seq = 0
        self.full = True
        self.logs: deque[dict[str, Any]] = deque(maxlen=settings.buffer_logs)
        self.acks: list[str] = []
        self.sent_state: dict[str, tuple] = {}
        self.sent_metrics_at: dict[str, float] = {}
        self.connected = False
        self._news = asyncio.Event()
        self._stop = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._tapping: set[str] = set()  # capture commands a worker is working on
        self._previewing: set[str] = set()  # preview commands under way (pipenb.agent.preview)
        self.previews: dict[str, dict[str, Any]] = {}  # command id -> answer to report
        # the server's settings (pipenb.agent.remote_settings) over the command line's
        self.base: dict[str, Any] = {
            "metrics-every": settings.metrics_every,
            "long-poll": settings.long_poll,
            "capture-limit": settings.capture_limit,
            "log-level": None,  # as the command line set it (-v)
            "ship-level": "debug",
            "ship-rate": None,  # no limit
        }
        self.remote: dict[str, Any] = dict(self.base)
        self.settings_version: str | None = None
        self.settings_refused: dict[str, str] = {}
        self._log_level0 = logging.getLogger("pipenb").level
        self._ship_tokens = 0.0
        self._ship_at = time.monotonic()
        self.retired: dict[str, dict[str, Any]] = {}  # final reports of removed workers
        self._tasks: set[asyncio.Task] = set()  # reconciles and restarts under way
        self.refused: ServerError | None = None  # why the server turned this agent away
        self.trust = Trust(settings.server, settings.data_dir, settings.tls_options())
        self._link_problem: str | None = None  # the TLS problem last logged (logged once)
        self._due_sent: set[str] = set()  # pipes whose due report the last check-in carried
        self._announced = False  # the one line saying the agent is up was printed

    # ------------------------------------------------------------------ identity
    def attributes(self) -> dict[str, Any]:
        from pipenb import __version__

        return {
            "hostname": socket.gethostname(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "pipenb": __version__,
            "pid": os.getpid(),
            "capabilities": {
                "allowed": self.settings.allow,
                "disabled": [c for c in CAPABILITIES if c not in self.settings.allow],
            },
            # the server checks deployments against it; the workers enforce it regardless
            "policy": self.settings.policy.to_dict(),
            "run_as": self.settings.run_as,
        }

    async def identify(self) -> None:
        s = self.settings
        saved = self.store.identity()
        if s.agent_id and s.api_key:
            self.agent_id, self.api_key = s.agent_id, s.api_key
            return
        if saved and (not s.agent_id or saved["agent_id"] == s.agent_id):
            self.agent_id, self.api_key = saved["agent_id"], saved["api_key"]
            return
        if not s.enroll_key:
            raise AgentError("pipenb agent: give --id and --api-key, or --enroll-key to enroll")
        delay = 0.5
        while not self._stop.is_set():
            try:
                # the server assigns the id and the labels (the token's): the agent says only
                # what it would like to be called and what it is
                body = {"enroll_key": s.enroll_key, "name": s.name, "attributes": self.attributes()}
                got = await asyncio.to_thread(self._post, "/agent/enroll", body, None, 30)
            except ServerError as exc:
                if exc.status in (400, 401, 403, 409):
                    raise AgentError(f"pipenb agent: enrollment refused: {exc}") from None
                if not self._link_failed(exc, "retrying with backoff"):
                    log.warning("enrollment failed (%s); retrying in %.1fs", exc, delay)
                await self._sleep(exc.retry_after or delay)
                delay = min(delay * 2, self.settings.max_backoff)
                continue
            self.store.save_identity(got["agent_id"], got["api_key"])
            self.agent_id, self.api_key = got["agent_id"], got["api_key"]
            labels = ", ".join(got.get("labels") or []) or "none"
            log.info("enrolled as %s (labels: %s)", self.agent_id, labels)
            return

    # ------------------------------------------------------------------ main
    def stop(self) -> None:
        self._stop.set()
        self._news.set()

    def news(self) -> None:
        self._news.set()

    def _post(self, path: str, body: dict[str, Any], key: str | None, timeout: float) -> Any:
        """One request to the server (blocking: run it in a thread)."""
        context = self.trust.context()
        return post(
            self.settings.server, path, body, key, timeout, context, bool(self.settings.cert)
        )

    def _link_failed(self, exc: ServerError, then: str) -> bool:
        """Log a TLS problem once, as one line (not at every retry); True if it was one."""
        if not exc.tls:
            return False
        if str(exc) != self._link_problem:
            log.error("%s; %s", exc, then)
            self._link_problem = str(exc)
        return True

    def check_link(self) -> None:
        """Refuse plain HTTP to another host unless allowed, and then warn at every start."""
        problem = plain_http_problem(self.settings.server)
        if problem is None:
            return
        if not self.settings.insecure_http:
            raise AgentError(f"pipenb agent: refusing {problem}")
        log.warning("--insecure-http: %s", problem.split(". Use https://")[0])

    async def run(self) -> None:
        log.info("agent starting; server %s", self.settings.server)
        self.check_link()
        await self.identify()
        if self._stop.is_set():
            return
        metrics_server = None
        if self.settings.metrics_address:
            from pipenb.agent.metrics import serve

            metrics_server = await serve(self, self.settings.metrics_address)
        if self.desired:  # the server may be away: run what we last knew
            await self.reconcile(self.desired)
        supervisor = asyncio.create_task(self._supervise())
        try:
            await self._checkin_loop()
        finally:
            supervisor.cancel()
            if metrics_server is not None:
                metrics_server.stop()
            await self._shutdown()
        if self.refused is not None:
            raise AgentTurnedAway(str(self.refused))  # logged already, in one line

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _supervise(self) -> None:
        """Restart crashed workers when their backoff is over."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for w in list(self.workers.values()):
                if w.restart_at is not None and now >= w.restart_at and not w.refused:
                    log.info("restarting pipe %s", w.dep_id)
                    self.logs.append(_logline("info", w.dep_id, f"restarting after: {w.error}"))
                    await w.start()

    # ------------------------------------------------------------------ check-in
    def _due_in(self) -> float | None:
        """Seconds until a pipe's metrics and checkpoint report is due (None: no pipe runs).

        A held check-in must not delay a due report: metrics, last-seen and the checkpoint used
        for failover reach the server every ``--metrics-every`` seconds, not every long poll.
        """
        if not self.workers:
            return None
        now, every = time.monotonic(), self.settings.metrics_every
        return max(0.0, min(self.sent_metrics_at.get(d, 0.0) + every - now for d in self.workers))

    def _report(self, wait: float) -> dict[str, Any]:
        now = time.monotonic()
        pipes = []
        self._due_sent = set()
        every = self.settings.metrics_every
        ages = {d: now - self.sent_metrics_at.get(d, 0.0) for d in self.workers}
        # when one pipe's report is due, pipes half-way there go along: one check-in per period
        # for all of them, not one per pipe at scattered times
        threshold = every / 2 if any(a >= every for a in ages.values()) else every
        for w in self.workers.values():
            key = (w.state, w.hash, w.error)
            due = ages[w.dep_id] >= threshold
            if due:
                self._due_sent.add(w.dep_id)
            if self.full or key != self.sent_state.get(w.dep_id) or due or w.captures:
                report = w.report()
                if not (self.full or due):
                    report["metrics"] = None
                    report["checkpoint"] = None
                pipes.append(report)
        for dep, final in self.retired.items():
            if dep not in self.workers and not self.full:
                pipes.append(final)
        captures = [c for w in self.workers.values() for c in w.captures.values()]
        captures += list(self.previews.values())
        body: dict[str, Any] = {
            "agent_id": self.agent_id,
            "seq": self.seq,
            "full": self.full,
            "pipes": pipes,
            "acks": list(self.acks) + [c["command_id"] for c in captures],
            "captures": captures,
            "logs": list(itertools.islice(self.logs, LOGS_PER_CHECKIN)),
            "desired_hash": self.desired_hash,
            "wait": wait,
            "settings": {
                "version": self.settings_version,
                "refused": self.settings_refused,
                "bounds": self.settings.bounds.to_dict(),
            },
        }
        if self.full:
            body["attributes"] = self.attributes()
        return body

    def _sent(self, body: dict[str, Any]) -> None:
        """The server has this report: forget what it carried."""
        now = time.monotonic()
        for p in body["pipes"]:
            self.retired.pop(p["deployment_id"], None)
            self.sent_state[p["deployment_id"]] = (p["state"], p["hash"], p["error"])
            if p["metrics"] is not None or body["full"] or p["deployment_id"] in self._due_sent:
                self.sent_metrics_at[p["deployment_id"]] = now
        done = set(body["acks"])
        self.acks = [a for a in self.acks if a not in done]
        for w in self.workers.values():
            for cid in list(w.captures):
                if cid in done:
                    del w.captures[cid]
        self._tapping -= done
        for cid in done:
            self.previews.pop(cid, None)
        for _ in range(len(body["logs"])):
            if self.logs:
                self.logs.popleft()

    def _turned_away(self, exc: ServerError, refusals: int) -> bool:
        """Whether a refused check-in ends this agent: at once when it was removed from the
        server, after ``auth_tries`` refusals in a row when its key is refused (revoked,
        expired, unknown), so that a key that will never work again is not retried for ever."""
        if exc.status != 401:
            return False
        if exc.code == "agent_removed":
            log.error(
                "this agent (%s) was removed from the server: stopping its pipes and exiting",
                self.agent_id,
            )
            self.store.save_desired([])  # a restart must not run the pipes of a removed agent
        elif refusals >= self.settings.auth_tries:
            log.error(
                "the server refuses this agent's key %d times in a row (%s): stopping its pipes "
                "and exiting",
                refusals,
                exc,
            )
        else:
            return False
        self.refused = exc
        return True

    async def _checkin_loop(self) -> None:
        delay = 0.5
        refusals = 0  # check-ins answered 401 in a row
        while not self._stop.is_set():
            news = self._news.is_set()
            self._news.clear()
            wait = 0.0 if news or self.full or self.acks or self.logs else self.settings.long_poll
            due_in = self._due_in()
            if due_in is not None:
                # the server answers the held check-in when the next report is due
                wait = min(wait, due_in)
            self.seq += 1
            body = self._report(wait)
            call = asyncio.create_task(
                asyncio.to_thread(self._post, "/agent/checkin", body, self.api_key, wait + 20)
            )
            woken = asyncio.create_task(self._news.wait())
            done, _ = await asyncio.wait({call, woken}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if call not in done:
                # news while the server holds us: check in again now; the server answers the
                # held request at once, and its answer (older than the next) is not needed
                call.add_done_callback(self._superseded)
                continue
            try:
                resp = call.result()
            except ServerError as exc:
                refusals = refusals + 1 if exc.status == 401 else 0
                if self._turned_away(exc, refusals):
                    return
                if exc.status == 413:
                    self._shed(exc)  # else the same report would be refused for ever
                tls = self._link_failed(exc, "retrying with backoff, pipes keep running")
                if self.connected and not tls:
                    log.warning("server unreachable or refusing (%s); pipes keep running", exc)
                self.connected = False
                self.full = True  # what we sent may be lost: resync once back
                if exc.status in (401, 403):
                    log.error("the server refuses this agent's key: %s", exc)
                await self._sleep((exc.retry_after or delay) * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.max_backoff)
                continue
            refusals = 0
            if not self.connected:
                log.info("checked in with %s as %s", self.settings.server, self.agent_id)
                if not self._announced:
                    self._announced = True
                    labels = resp.get("labels")
                    changes.info(
                        "pipenb agent %s connected to %s; labels: %s; running %d pipe(s)",
                        self.agent_id,
                        self.settings.server,
                        ", ".join(labels) if labels else "none",
                        len(resp.get("desired") or []),
                    )
            self.connected = True
            self._link_problem = None
            self._forget(resp.get("gone") or [])
            delay = 0.5
            self._sent(body)
            self.full = bool(resp.get("full_report"))
            if resp.get("desired_hash") != self.desired_hash:
                self.desired = resp.get("desired") or []
                self.desired_hash = resp.get("desired_hash")
                self.store.save_desired(self.desired)
                # in the background: draining a worker can take seconds, and check-ins (our
                # presence) must go on meanwhile
                self._background(self.reconcile_latest())
            if resp.get("settings") is not None:
                self.apply_settings(resp["settings"], resp.get("settings_version"))
            commands = resp.get("commands") or []
            for cmd in commands:
                await self._command(cmd)
            busy = self._tapping | self._previewing
            if commands and all(c["id"] in busy for c in commands) and not self.acks:
                # only taps and previews in progress: the server will not hold us while they
                # are pending, so wait for a worker's news (the captured events, the preview's
                # answer) instead of asking again
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._news.wait(), 1.0)

    def apply_settings(self, values: dict[str, Any], version: str | None) -> None:
        """The server's settings, within this agent's bounds; refused ones keep the command
        line's value and are reported (with why) alongside the version applied."""
        from pipenb.agent.remote_settings import SettingError

        remote = dict(self.base)
        refused: dict[str, str] = {}
        for key, value in values.items():
            try:
                remote[key] = self.settings.bounds.check(key, value)
            except SettingError as exc:
                refused[key] = str(exc)
                self.logs.append(_logline("warning", None, f"setting refused: {exc}"))
                log.warning("the server's setting refused: %s", exc)
        self.remote = remote
        self.settings.metrics_every = float(remote["metrics-every"])
        self.settings.long_poll = float(remote["long-poll"])
        self.settings.capture_limit = int(remote["capture-limit"])
        level = remote["log-level"]
        logging.getLogger("pipenb").setLevel(
            level.upper() if isinstance(level, str) else self._log_level0
        )
        if version != self.settings_version or refused != self.settings_refused:
            changes.info("applied the server's settings %s: %s", version, values or "none")
        self.settings_version = version
        self.settings_refused = refused
        self.news()  # report the version applied now

    def _ship(self, level: str) -> bool:
        """Whether a pipe's log line goes to the server: at ``ship-level`` or above, and no
        more than ``ship-rate`` lines a second (a token bucket of one second's worth)."""
        from pipenb.agent.remote_settings import LEVELS

        floor = str(self.remote.get("ship-level") or "debug")
        if level in LEVELS and LEVELS.index(level) < LEVELS.index(floor):
            return False
        rate = self.remote.get("ship-rate")
        if rate is None:
            return True
        now = time.monotonic()
        self._ship_tokens = min(float(rate), self._ship_tokens + (now - self._ship_at) * rate)
        self._ship_at = now
        if self._ship_tokens < 1:
            return False
        self._ship_tokens -= 1
        return True

    def _shed(self, exc: ServerError) -> None:
        """The server refused a check-in as too large (its ``--max-checkin-body``): drop the
        bulky parts, captured events and buffered log lines, and say so, so the next check-in
        fits."""
        dropped = len(self.logs)
        self.logs.clear()
        for w in self.workers.values():
            for capture in w.captures.values():
                capture["events"] = []
                capture["error"] = "the captured events were too large for a check-in"
        for answer in self.previews.values():
            answer.pop("result", None)
            answer["error"] = "the preview's events were too large for a check-in: ask for fewer"
        log.error("check-in refused as too large (%s): dropped captured events and logs", exc)
        self.logs.append(
            _logline("error", None, f"check-in too large: {dropped} buffered log lines dropped")
        )

    async def _command(self, cmd: dict[str, Any]) -> None:
        w = self.workers.get(cmd["deployment_id"])
        kind = cmd["type"]
        if kind == "preview":
            if cmd["id"] not in self._previewing and cmd["id"] not in self.previews:
                self._previewing.add(cmd["id"])
                self._background(self._preview(cmd))
            return
        if kind == "capture":
            if cmd["id"] in self._tapping or any(
                cmd["id"] in x.captures for x in self.workers.values()
            ):
                return
            if w is None or not w.send(
                {
                    "type": "capture",
                    "id": cmd["id"],
                    "stage": cmd["args"].get("stage"),
                    "limit": min(cmd["args"].get("limit", 10), self.settings.capture_limit),
                }
            ):
                if w is not None:
                    w.captures[cmd["id"]] = {
                        "command_id": cmd["id"],
                        "events": [],
                        "error": "the pipe is not running here",
                    }
                else:
                    self.acks.append(cmd["id"])
                self.news()
                return
            self._tapping.add(cmd["id"])
            return
        if kind == "restart" and w is not None:
            self._background(self._restart(w))
        # reset-checkpoint arrives as a new desired hash with a checkpoint to start from
        self.acks.append(cmd["id"])
        self.news()

    async def _preview(self, cmd: dict[str, Any]) -> None:
        """Run a preview the server asked for in a process of its own (pipenb.agent.preview),
        under this host's policy, and report its answer with the next check-in."""
        from pipenb.agent import preview

        cid = cmd["id"]
        answer: dict[str, Any] = {"command_id": cid, "events": []}
        try:
            why = preview.refusal(self.settings.policy)
            if why is not None:
                answer["error"] = why
                return
            limit, timeout = preview.bounds(cmd.get("args") or {})
            limit = min(limit, self.settings.capture_limit)
            job = {
                "yaml": cmd["args"].get("yaml") or "",
                "params": cmd["args"].get("params") or {},
                "limit": limit,
                "timeout": timeout,
                "policy": self.settings.policy.to_dict(),
                "allow": self.settings.allow,
                "data_dir": self.settings.data_dir,
                "run_as": self.settings.run_as,
            }
            out = await _run_preview(job, timeout + 30)
            if "result" in out:
                answer["result"] = out["result"]
            else:
                answer["error"] = str(out.get("error") or "the preview gave no answer")
        except Exception as exc:  # the user waits for an answer, whatever went wrong
            answer["error"] = f"the preview failed on the agent: {exc}"
        finally:
            self._previewing.discard(cid)
            self.previews[cid] = answer
            changes.info("preview %s: %s", cid, answer.get("error") or "done")
            self.news()

    # ------------------------------------------------------------------ pipes
    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, w: WorkerHandle) -> None:
        async with self._reconcile_lock:
            await w.stop(self.settings.drain_timeout)
            if self.workers.get(w.dep_id) is w:
                await w.start()

    async def reconcile_latest(self) -> None:
        """Reconcile towards the newest desired set (an older queued one is skipped)."""
        await self.reconcile(None)

    async def reconcile(self, desired: list[dict[str, Any]] | None) -> None:
        """Start, stop and replace workers so they match ``desired``."""
        async with self._reconcile_lock:
            if desired is None:
                desired = self.desired
            want = {d["deployment_id"]: d for d in desired}
            stopping = [
                w
                for dep, w in self.workers.items()
                if dep not in want or want[dep]["hash"] != w.hash
            ]
            await asyncio.gather(*(w.stop(self.settings.drain_timeout) for w in stopping))
            for w in stopping:
                del self.workers[w.dep_id]
                self.retired[w.dep_id] = w.report()  # the server hears it stopped
                if w.dep_id not in want:
                    changes.info("stopped %s (pipe %s)", w.dep_id, w.desired.get("pipe"))
            replaced = {w.dep_id for w in stopping}
            for dep, d in want.items():
                if dep not in self.workers:
                    self.retired.pop(dep, None)  # replaced, not gone
                    self.workers[dep] = WorkerHandle(
                        d, self._job(d), self.news, on_log=self._worker_log(dep)
                    )
                    await self.workers[dep].start()
                    changes.info(
                        "%s %s (pipe %s version %s)",
                        "changed" if dep in replaced else "started",
                        dep,
                        d.get("pipe"),
                        d.get("version"),
                    )
            self.news()

    def _superseded(self, task: asyncio.Task) -> None:
        """A held check-in answered after a newer one went out: only its deletions matter."""
        if task.cancelled() or task.exception() is not None:
            return
        self._forget(task.result().get("gone") or [])

    def _worker_log(self, dep_id: str) -> Any:
        """Where a worker's warnings go: the server's logs of that deployment."""

        def say(level: str, message: str) -> None:
            if self._ship(level):
                self.logs.append(_logline(level, dep_id, message))

        return say

    def _forget(self, gone: list[str]) -> None:
        """The server confirmed these deployments are deleted: remove what they left here
        (checkpoint, worker log, lock, applied reset), unless one runs again under that id."""
        from pipenb.engine.checkpoints import checkpoint_path

        running = set(self.workers) | {d["deployment_id"] for d in self.desired}
        for dep in gone:
            if dep in running or "/" in dep or dep.startswith("."):
                continue
            for path in (
                checkpoint_path(self.settings.data_dir, dep),
                os.path.join(self.settings.data_dir, "logs", f"{dep}.log"),
                os.path.join(self.settings.data_dir, "locks", f"{dep}.lock"),
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if self.applied.pop(dep, None) is not None:
                self.store.save_applied_seqs(self.applied)
            self.retired.pop(dep, None)
            changes.info("deleted %s: removed its checkpoint and log", dep)

    def _job(self, d: dict[str, Any]) -> dict[str, Any]:
        job = {
            "deployment_id": d["deployment_id"],
            "yaml": d["yaml"],
            "files": d.get("files") or {},  # lookup tables pushed with the pipe
            "params": d.get("params") or {},
            "builtins": d.get("builtins"),
            "hash": d["hash"],
            "data_dir": self.settings.data_dir,
            "allow": self.settings.allow,
            "policy": self.settings.policy.to_dict(),
            "run_as": self.settings.run_as,
            # a worker tells its metrics at least this often, so a due report carries fresh ones
            "status_every": self.settings.metrics_every,
        }
        seq = int(d.get("checkpoint_seq") or 0)
        if seq > self.applied.get(d["deployment_id"], 0):
            # a checkpoint from the server (failover, reset) wins over ours, once
            job["checkpoint_reset"] = True
            job["checkpoint"] = d.get("checkpoint")
            self.applied[d["deployment_id"]] = seq
            self.store.save_applied_seqs(self.applied)
        return job

    async def _shutdown(self) -> None:
        """Drain every worker, save checkpoints (the workers do), tell the server we leave."""
        async with self._reconcile_lock:  # let a reconcile under way finish first
            await asyncio.gather(
                *(w.stop(self.settings.drain_timeout) for w in self.workers.values())
            )
        if self.agent_id is None or self.refused is not None:
            return  # never enrolled, or turned away: there is no one to say goodbye to
        self.seq += 1
        self.full = True
        body = self._report(0)
        body["leaving"] = True
        with contextlib.suppress(ServerError):
            await asyncio.to_thread(self._post, "/agent/checkin", body, self.api_key, 5)


async def _run_preview(job: dict[str, Any], deadline: float) -> dict[str, Any]:
    """One preview process: the job in, one JSON answer out; killed past ``deadline`` s."""
    import sys

    import orjson

    from pipenb.agent.supervisor import SAFE_PATH, worker_environ

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *SAFE_PATH,
        "-m",
        "pipenb.agent.preview",
        env=worker_environ(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=64 * 1024 * 1024,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(orjson.dumps(job) + b"\n"), deadline)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return {"error": f"the preview took longer than {deadline:.0f} s and was stopped"}
    try:
        return orjson.loads(out.splitlines()[-1]) if out.strip() else {}
    except orjson.JSONDecodeError:
        return {"error": "the preview process gave an answer that is not JSON"}


def _prepare_run_as(data_dir: str, user: str) -> None:
    """Workers running as ``user`` keep their checkpoints, and write the default output dir,
    in directories of the data dir they own; the rest of it (the key) stays the agent's."""
    import pwd

    pw = pwd.getpwnam(user)
    for name in ("checkpoints", "out"):
        path = os.path.join(data_dir, name)
        os.makedirs(path, exist_ok=True)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o700)


def _logline(level: str, dep_id: str | None, message: str) -> dict[str, Any]:
    from datetime import datetime, timezone

    return {
        "time": datetime.now(timezone.utc).isoformat(),
        "level": level,
        "deployment_id": dep_id,
        "message": message,
    }
