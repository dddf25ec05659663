"""One deployed pipe in its own process: ``python -m pipenb.agent.worker_main`` (see protocol.py).

A file lock per deployment in the data dir makes sure a worker started after a crash of the
agent waits for the old one to finish draining, so two never write the same output at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from typing import Any

import orjson

from pipenb.agent.protocol import EXIT_REFUSED

STATUS_EVERY = 2.0  # seconds between metric reports (at most; the agent may ask for less)
#: Warnings a worker sends its agent (and so the server) per LOG_WINDOW seconds at most: a pipe
#: that fails every event warns at every batch.
LOG_BURST = 10
LOG_WINDOW = 10.0


class _ToAgent(logging.Handler):
    """The pipe's warnings and errors (``5 event(s) failed (first: ...)``) to the agent, which
    ships them to the server's logs of the deployment; rate-limited, with a count of the rest."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.window_start = 0.0
        self.sent = 0
        self.suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self.window_start >= LOG_WINDOW:
            if self.suppressed:
                _say(
                    {
                        "type": "log",
                        "level": "warning",
                        "message": f"{self.suppressed} more warning(s) not sent",
                    }
                )
            self.window_start, self.sent, self.suppressed = now, 0, 0
        if self.sent >= LOG_BURST:
            self.suppressed += 1
            return
        self.sent += 1
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not stop the pipe
            message = str(record.msg)
        _say({"type": "log", "level": record.levelname.lower(), "message": message})


_agent_gone = False
#: the agent's two pipes, moved off standard input and output (``_own_channels``)
_from_agent: Any = None
_to_agent: Any = None


def _own_channels() -> None:
    """Keep the agent's pipes to this worker away from the pipe it runs.

    They arrive as standard input and output, which a pipe can also reach: a ``stdin`` input
    reads fd 0, a ``print`` output writes fd 1. Left there, a pipe would read the agent's
    commands and could write lines the agent takes for this worker's own (a status with any
    state, error or checkpoint, a preview's events). So they move to descriptors of their own
    (not inherited by what the pipe starts), standard input becomes ``/dev/null`` (a ``stdin``
    input ends at once) and standard output the worker's log (what ``print`` prints is kept
    there, where an operator can read it)."""
    global _from_agent, _to_agent
    _from_agent = os.fdopen(os.dup(0), "rb", buffering=0)
    _to_agent = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fds 0 and 1 stay open
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115


def _say(msg: dict[str, Any]) -> None:
    """Tell the agent; if it is gone, say nothing more and let the drain finish."""
    global _agent_gone
    if _agent_gone:
        return
    try:
        _to_agent.write(orjson.dumps(msg, default=str) + b"\n")
        _to_agent.flush()
    except (BrokenPipeError, ConnectionResetError, ValueError, OSError):
        _agent_gone = True


def _lock(data_dir: str, dep_id: str, timeout: float = 60.0) -> Any:
    path = os.path.join(data_dir, "locks", f"{dep_id}.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {dep_id} is still held by another worker") from None
            time.sleep(0.05)  # poll: the previous worker is draining


async def _serve(job: dict[str, Any], reader: asyncio.StreamReader) -> int:
    from pipenb.engine.base import RunContext
    from pipenb.engine.checkpoints import FileCheckpointStore, checkpoint_path
    from pipenb.engine.runtime import Engine
    from pipenb.errors import PipenbError, PipeSyntaxError, PolicyError
    from pipenb.lang.validate import load_pipe
    from pipenb.policy import Policy, check_pipe
    from pipenb.policy.guard import Guard

    dep_id = job["deployment_id"]
    data_dir = job["data_dir"]
    try:
        from pipenb.lang.tablefiles import provided

        files_dir = _write_table_files(data_dir, dep_id, job.get("files") or {})
        with provided(job.get("files") or {}):  # lookup tables that came with the pipe
            spec = load_pipe(
                job["yaml"],
                f"<{dep_id}>",
                job.get("params") or {},
                job.get("builtins"),
                require_params=True,
            )
        guard = None
        if job.get("policy") is not None:
            # the agent's own check: whatever the server decided, this host's policy holds
            guard = Guard(Policy(write=()).merged(job["policy"], "the agent's policy"))
            refused = check_pipe(spec, guard.policy)
            if refused:
                _say({"type": "status", "state": "refused", "error": refused[0]})
                return EXIT_REFUSED
        if job.get("run_as"):
            # before anything of the pipe runs (a script's top level runs when it is built);
            # every component is imported first: the new user may not read the installation
            from pipenb.lang.registry import registry

            registry.all()
            _become(job["run_as"])
        ctx = RunContext(
            pipe=spec.name,
            data_dir=data_dir,
            allow=frozenset(job.get("allow") or ()),
            values=spec.values,
            guard=guard,
            files_dir=files_dir,
        )
        store = FileCheckpointStore(checkpoint_path(data_dir, dep_id))
        if job.get("checkpoint_reset"):  # the server hands a checkpoint (failover, reset)
            if job.get("checkpoint") is None:
                store.reset()
            else:
                store.save(job["checkpoint"])
        from pipenb.engine.chunks import bounded_workers

        workers = bounded_workers(spec.workers, job.get("max_workers", 1))
        engine = Engine(spec, ctx, checkpoints=store, workers=workers)
    except PolicyError as exc:
        _say({"type": "status", "state": "refused", "error": str(exc)})
        return EXIT_REFUSED
    except (PipeSyntaxError, PipenbError) as exc:
        _say({"type": "status", "state": "failed", "error": str(exc)})
        return EXIT_REFUSED
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, engine.stop)
    run = asyncio.create_task(engine.run())
    commands = asyncio.create_task(_commands(engine, loop, reader))
    _say({"type": "status", "state": "running", "metrics": None, "checkpoint": None})
    every = min(STATUS_EVERY, max(0.2, float(job.get("status_every") or STATUS_EVERY)))
    try:
        while not run.done():
            await asyncio.wait({run}, timeout=every)
            snap = engine.snapshot()
            _say(
                {
                    "type": "status",
                    "state": "running",
                    "metrics": _metrics(snap),
                    "checkpoint": snap["position"],
                }
            )
        await run
    except Exception as exc:
        snap = engine.snapshot()
        outside = isinstance(exc, PolicyError)  # a symlink led outside: restarting cannot help
        _say(
            {
                "type": "status",
                "state": "refused" if outside else "failed",
                "error": str(exc) or type(exc).__name__,
                "metrics": _metrics(snap),
                "checkpoint": snap["position"],
            }
        )
        return EXIT_REFUSED if outside else 1
    finally:
        commands.cancel()
    snap = engine.snapshot()
    state = "finished" if engine.state == "finished" else "stopped"
    _say(
        {
            "type": "status",
            "state": state,
            "metrics": _metrics(snap),
            "checkpoint": snap["position"],
        }
    )
    return 0


def _metrics(snap: dict[str, Any]) -> dict[str, Any]:
    keys = ("input", "actions", "output", "dead_letters", "dead_letters_dropped", "uptime_s")
    # a pipe with outputs: also reports each output's counters and its unrouted events
    return {k: snap[k] for k in (*keys, "outputs", "unrouted") if k in snap}


async def _commands(
    engine: Any, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader
) -> None:
    while True:
        line = await reader.readline()
        if not line:  # the agent is gone: stop cleanly (drain, checkpoint)
            engine.stop()
            return
        try:
            cmd = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if cmd.get("type") == "stop":
            engine.stop()
        elif cmd.get("type") == "capture":
            loop.create_task(_capture(engine, cmd))


async def _capture(engine: Any, cmd: dict[str, Any]) -> None:
    from pipenb.errors import PipenbError

    try:
        fut = engine.capture(cmd.get("stage"), int(cmd.get("limit") or 10))
        events = await asyncio.wait_for(fut, float(cmd.get("timeout") or 60))
        _say({"type": "capture", "id": cmd["id"], "events": events})
    except asyncio.TimeoutError:
        _say(
            {
                "type": "capture",
                "id": cmd["id"],
                "events": [],
                "error": "no events reached that stage in time",
            }
        )
    except PipenbError as exc:
        _say({"type": "capture", "id": cmd["id"], "events": [], "error": str(exc)})


def _become(user: str) -> None:
    """Run the rest of this worker as ``user`` (``pipenb agent --run-as``): groups, then group,
    then user, so nothing of root is left; the deployment's lock is already held."""
    import pwd

    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:  # pragma: no cover - paranoia
        raise PermissionError(f"could not become {user}")
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = pw.pw_name


async def _main() -> int:
    # one reader for every line of stdin, the job included: a buffered readline() first could
    # swallow the start of a command sent right after the job
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), _from_agent)
    first = await reader.readline()
    if not first:
        return 2
    job = orjson.loads(first)
    try:
        lock = await asyncio.to_thread(_lock, job["data_dir"], job["deployment_id"])
    except TimeoutError as exc:
        _say({"type": "status", "state": "failed", "error": str(exc)})
        return 1
    try:
        return await _serve(job, reader)
    finally:
        with contextlib.suppress(OSError):
            lock.close()


def _write_table_files(data_dir: str, dep_id: str, files: dict[str, str]) -> str | None:
    """Write the table files pushed with the pipe to ``<data-dir>/files/<deployment>/``.

    Names were checked by the server (plain file names); checked again here all the same."""
    if not files:
        return None
    from pipenb.errors import PipenbError
    from pipenb.lang.tablefiles import check_names

    why = check_names(files)
    if why is not None:
        raise PipenbError(why)
    target = os.path.join(data_dir, "files", dep_id)
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
        for name, content in files.items():
            tmp = os.path.join(target, f".{name}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(target, name))
    except OSError as exc:
        raise PipenbError(f"cannot write the pipe's table files to {target}: {exc}") from None
    return target


def main() -> int:
    _own_channels()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    root = logging.getLogger("pipenb")
    local = logging.StreamHandler(sys.stderr)  # the worker's log file in the agent's data dir
    local.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(local)
    root.addHandler(_ToAgent())
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
