"""``exec``: run a command once, every ``interval`` or by ``cron``; events from its output.

Capability ``exec``: agents refuse it unless their policy allows it (``exec: any`` or a list of
programs; ``--allow-exec``), and check each command against that policy before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

from pydantic import field_validator, model_validator

from pipenb.engine.base import Batch, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk, reject
from pipenb.engine.schedule import Cron, parse_cron
from pipenb.errors import PipeRuntimeError
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Duration
from pipenb.policy.guard import clean_environ


class ExecOptions(Options):
    """Options of ``exec``.

    ``command``: a string (run by ``/bin/sh -c``) or a list (run directly). ``interval`` runs it
    again that long after each run started. ``cron`` runs it on a five-field schedule
    (``*/5 * * * *``: every five minutes; ``0 3 * * mon-fri``: 03:00 on weekdays) in the host's
    local time, first at the next matching minute; a run still going when the next one is due
    makes that one skipped. ``interval`` and ``cron`` exclude each other; with neither the command
    runs once. ``events``:
    ``per-line`` (default; ``format: lines|json`` as for files) or ``per-run`` (one event per run:
    ``{"_raw": stdout, "_exit_code": N, "_stderr": "..."}``). ``timeout`` kills a run that takes
    longer. A non-zero exit is reported in the event (per-run) or logged (per-line). No checkpoint.
    """

    command: str | list[str]
    interval: Duration | None = None
    cron: str | None = None
    events: Literal["per-line", "per-run"] = "per-line"
    format: Literal["lines", "json"] = "lines"
    timeout: Duration | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None

    @field_validator("command")
    @classmethod
    def _nonempty(cls, v: str | list[str]) -> str | list[str]:
        if not v or (isinstance(v, list) and not all(isinstance(x, str) and x for x in v)):
            raise ValueError("command must be a non-empty string or list of strings")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            parse_cron(v)
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> ExecOptions:
        if self.interval is not None and self.cron is not None:
            raise ValueError("give either interval or cron, not both")
        return self


class ExecInput(Input):
    def __init__(self, options: ExecOptions, ctx: RunContext):
        super().__init__(options, ctx)
        # a preview runs the command once, now, rather than wait for the schedule
        cron = options.cron if not ctx.preview else None
        self.schedule: Cron | None = parse_cron(cron) if cron else None
        self.finite = options.interval is None and self.schedule is None

    async def _run_once(self) -> tuple[bytes, bytes, int]:
        o = self.options
        if self.ctx.guard is not None:  # checked at each run: PATH may change under us
            self.ctx.guard.exec("exec command", o.command, o.env)
            env = clean_environ(o.env)
        else:
            env = {**os.environ, **(o.env or {})}
        if isinstance(o.command, str):
            proc = await asyncio.create_subprocess_shell(
                o.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=o.cwd,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        else:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *o.command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.DEVNULL,
                    cwd=o.cwd,
                    env=env,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise PipeRuntimeError(
                    f"exec: command not found: {o.command[0]!r}; check the path or PATH"
                ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), o.timeout)
        except asyncio.TimeoutError:
            _kill_group(proc)
            out, err = await proc.communicate()
            err += f"\n(killed after timeout of {o.timeout}s)".encode()
        except asyncio.CancelledError:
            _kill_group(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            raise
        return out, err, proc.returncode or 0

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        while True:
            if self.schedule is not None:
                await wait_until(self.schedule.next_after(datetime.now()))
            started = time.monotonic()
            out, err, code = await self._run_once()
            if o.events == "per-run":
                yield Batch(
                    [
                        {
                            "_raw": out.decode("utf-8", "replace"),
                            "_exit_code": code,
                            "_stderr": err.decode("utf-8", "replace"),
                        }
                    ],
                    None,
                    len(out),
                )
            else:
                events, rejects = decode_chunk(out, o.format)
                if code != 0:
                    rejects.append(reject(err, f"command exited with status {code}", stage="input"))
                yield Batch(events, None, len(out), rejects)
            if o.interval is not None:
                await asyncio.sleep(max(0.0, o.interval - (time.monotonic() - started)))
            elif self.schedule is None:
                return


async def wait_until(when: datetime) -> None:
    """Sleep until the naive local time ``when``, by the wall clock.

    Sleeps in slices of at most 30 s and looks at the clock again after each, so a host that
    was suspended or had its clock set does not run a schedule late by that much.
    """
    while (delay := when.timestamp() - time.time()) > 0:
        await asyncio.sleep(min(delay, 30.0))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and everything it started (a shell's children hold our pipes open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        # no group (or not ours): the process alone. Never both: a second kill can reap the
        # child before asyncio does, which then reports exit code 255 instead of -9.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


@registry.register("input", "exec", ExecOptions, capability="exec")
def exec_input(opts: ExecOptions, ctx: RunContext) -> ExecInput:
    """Run a command once, every interval or on a cron schedule; events from its output."""
    if ctx.guard is not None:
        ctx.guard.exec("exec command", opts.command, opts.env)
    if "exec" not in ctx.allow:
        raise PipeRuntimeError(
            "the exec input is disabled here; an agent allows it with --allow-exec "
            "(or exec: in its --policy file)"
        )
    return ExecInput(opts, ctx)
