"""Preview and test a pipe text in a child process with a time and a memory limit.

A pipe written in an editor may loop forever (``script``), read a huge file or build a huge
event: run inside the Jupyter server it would freeze every user's notebook. So the server hands
the job to ``python -m pipenb.server.sandbox``, which lowers its own CPU and address-space limits
(``resource.setrlimit``) before it imports the engine, and the server waits for it without
blocking its loop and kills it at the wall-clock deadline. ``script`` and ``exec`` are allowed
there inside Jupyter: whoever can call these endpoints can already run code in a kernel. On a
standalone ``pipenb server`` (``job["standalone"]``) an editor cannot otherwise run code on the
control plane's host, so there a pipe needing ``exec`` or ``script`` is refused, and a preview
reads only the sample lines it is sent, never the pipe's own input (the server's files and
sockets).

The child reads one JSON job on stdin and writes one JSON answer on stdout.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from typing import Any

import orjson

#: at most this many sandboxes at once: a burst of previews queues instead of forking without end
MAX_CONCURRENT = 2
_slots: asyncio.Semaphore | None = None


class SandboxFailed(Exception):
    """The child did not answer: killed at a limit, or crashed. The message says which."""


async def run_job(
    job: dict[str, Any], *, timeout: float, memory_mb: int, cwd: str | None = None
) -> dict[str, Any]:
    """Run ``job`` in a child process; its answer, or SandboxFailed naming the limit hit."""
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(MAX_CONCURRENT)
    async with _slots:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipenb.server.sandbox",
            str(timeout),
            str(memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C to the server's terminal is not for it
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(orjson.dumps(job, default=str)), timeout + 5
            )
        except (TimeoutError, asyncio.TimeoutError):
            proc.kill()
            await proc.wait()
            raise SandboxFailed(
                f"stopped after {timeout:g} s (the time limit): does an action loop forever, "
                "or does the input wait for data? Try a sample, or a longer timeout"
            ) from None
    if proc.returncode != 0 or not out:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        if proc.returncode in (-9, -24, 152, 137) or "MemoryError" in " ".join(tail):
            reason = (
                f"stopped at a limit ({timeout:g} s of CPU or {memory_mb} MiB of memory): "
                "does an action loop forever or build huge events?"
            )
        else:
            reason = f"the preview process failed (exit {proc.returncode}): " + " | ".join(tail)
        raise SandboxFailed(reason)
    return orjson.loads(out)


# ---------------------------------------------------------------------------- the child
def _limit(timeout: float, memory_mb: int) -> None:
    import resource

    cpu = math.ceil(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    size = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def _problems(exc: Any) -> list[dict[str, Any]]:
    return [p.to_dict() for p in exc.problems]


def _jsonable(events: list[Any], limit: int) -> tuple[list[Any], bool]:
    return events[:limit], len(events) > limit


def refusal(job: dict[str, Any], spec: Any, *, reads_input: bool) -> str | None:
    """Why a standalone server will not run this job (None: it will)."""
    if not job.get("standalone"):
        return None
    code = sorted(spec.capabilities)
    if code:
        return (
            f"this pipe needs {' and '.join(code)}, which runs code: a pipenb server does not "
            "run code for its users (inside Jupyter, where you can run code anyway, it does)"
        )
    if reads_input:
        return (
            "send sample lines: a pipenb server does not read a pipe's own input (its files "
            "and sockets would be the server's)"
        )
    return None


def do_preview(job: dict[str, Any]) -> dict[str, Any]:
    from pipenb.engine.preview import preview
    from pipenb.errors import PipenbError, PipeSyntaxError
    from pipenb.lang.validate import load_pipe

    limit = int(job.get("limit") or 200)
    try:
        spec = load_pipe(job["text"], job.get("file") or "<pipe>", job.get("params") or {})
        refused = refusal(job, spec, reads_input=job.get("lines") is None)
        if refused:
            return {"ok": False, "problems": [], "error": refused, "stages": [], "errors": []}
        sample: Any = job.get("lines")
        if sample is None and job.get("path"):
            sample = job["path"]
        result = preview(spec, sample, limit=limit, timeout=min(float(job["timeout"]) / 2, 5.0))
    except PipeSyntaxError as exc:
        return {"ok": False, "problems": _problems(exc), "stages": [], "errors": []}
    except PipenbError as exc:
        return {"ok": False, "problems": [], "error": str(exc), "stages": [], "errors": []}
    stages = []
    for s in result.stages:
        events, truncated = _jsonable(s.events, limit)
        stages.append(
            {
                "stage": s.name,
                "events_in": s.events_in,
                "events_out": s.events_out,
                "dropped": s.dropped,
                "errors": s.errors,
                "events": events,
                "truncated": truncated,
            }
        )
    dead = [
        {
            "stage": (e.get("_error") or {}).get("stage") or "",
            "message": (e.get("_error") or {}).get("message") or "",
            "event": {k: v for k, v in e.items() if k != "_error"},
        }
        for e in result.errors[:limit]
    ]
    outputs = {}
    for name, evs in result.outputs.items():  # outputs: each output's events apart
        events, truncated = _jsonable(evs, limit)
        outputs[name] = {"events": events, "truncated": truncated}
    return {
        "ok": True,
        "problems": [],
        "stages": stages,
        "errors": dead,
        "outputs": outputs,
        "unrouted": result.unrouted,
    }


def do_test(job: dict[str, Any]) -> dict[str, Any]:
    from pipenb.engine.pipetests import run_tests
    from pipenb.errors import PipenbError, PipeSyntaxError
    from pipenb.lang.validate import load_pipe

    try:
        spec = load_pipe(job["text"], job.get("file") or "<pipe>", job.get("params") or {})
        refused = refusal(job, spec, reads_input=False)
        if refused:
            return {"ok": False, "problems": [], "error": refused, "passed": False, "results": []}
        report = run_tests(spec)
    except PipeSyntaxError as exc:
        return {"ok": False, "problems": _problems(exc), "passed": False, "results": []}
    except PipenbError as exc:
        return {"ok": False, "problems": [], "error": str(exc), "passed": False, "results": []}
    return {
        "ok": True,
        "problems": [],
        "passed": report.passed,
        "results": [r.as_dict() for r in report.results],
    }


def main(argv: list[str]) -> int:
    timeout, memory_mb = float(argv[0]), int(argv[1])
    _limit(timeout, memory_mb)
    job = orjson.loads(sys.stdin.buffer.read())
    answer = do_preview(job) if job.get("kind") == "preview" else do_test(job)
    sys.stdout.buffer.write(orjson.dumps(answer, default=str, option=orjson.OPT_NON_STR_KEYS))
    sys.stdout.flush()
    os._exit(0)  # don't wait for threads an input may have left behind


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
