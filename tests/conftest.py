"""Shared helpers for the pipenb test suite.

Synchronisation is always by polling a condition with a deadline (``wait_until`` and
``async_wait_until``), never by sleeping a fixed time and hoping.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.lang.validate import load_pipe

REPO_ROOT = Path(pipenb.__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ pipes


def actions_pipe(actions: str, *, input: str = "{echo: {events: [{}]}}") -> str:
    """A valid pipe document around an ``actions:`` block written as YAML list items."""
    body = textwrap.indent(textwrap.dedent(actions).strip("\n") + "\n", "  ")
    return f"name: t\ninput: {input}\noutput: {{discard: {{}}}}\nactions:\n{body}"


def run_actions(
    actions: str, events: list[dict[str, Any]], *, fuse: bool = True
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[dict[str, Any]]]:
    """Run an action list as users write it on ``events``.

    Returns the events out, the failures as ``(stage label, message)`` and per-stage counts.
    """
    spec = load_pipe(actions_pipe(actions))
    chain = compile_chain(spec, RunContext(pipe=spec.name), fuse=fuse)
    out, failures = chain.run([dict(e) for e in events])
    names = chain.names
    return (
        out,
        [(names[f.stage], str(f.error)) for f in failures],
        [c.as_dict() for c in chain.counts],
    )


def run_pipe_actions(yaml_text: str, events: list[dict[str, Any]]) -> tuple[list, list]:
    """A whole pipe document's actions over ``events``: (events out, failures)."""
    from pipenb.engine.base import RunContext
    from pipenb.engine.steps import build_chain
    from pipenb.lang.validate import load_pipe

    spec = load_pipe(yaml_text)
    ctx = RunContext(pipe=spec.name)
    steps = [a.component.factory(a.options, ctx) for a in spec.actions]
    chain = build_chain([a.label for a in spec.actions], steps)
    return chain.run([dict(e) for e in events])


ACTION_DOC_HEAD = """\
name: t
input: {echo: {events: [{}]}}
output: {discard: {}}
actions:
"""
FIRST_ACTION_LINE = 5  # the line of the first action in action_doc()


def action_doc(actions: str) -> str:
    """A whole pipe around a YAML list of actions."""
    return ACTION_DOC_HEAD + textwrap.indent(textwrap.dedent(actions).strip("\n") + "\n", "  ")


def run_action_doc(actions: str, events: list[dict[str, Any]]) -> tuple[list, list]:
    return run_pipe_actions(action_doc(actions), events)


def action_problems(actions: str) -> list[pipenb.Problem]:
    from pipenb.lang.validate import load_pipe

    with pytest.raises(pipenb.PipeSyntaxError) as info:
        load_pipe(action_doc(actions))
    return info.value.problems


def write_pipe(directory: Path, text: str, name: str = "pipe.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(text: str, **kwargs: Any) -> list[pipenb.Problem]:
    """The problems a pipe document is rejected with (fails the test if it is accepted)."""
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        pipenb.Pipe.from_yaml(text, **kwargs)
    return info.value.problems


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the ``occurrence``-th ``needle`` in ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column


# ------------------------------------------------------------------------------ files


def read_ndjson(path: Path | str) -> list[dict[str, Any]]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def read_complete_lines(path: Path | str) -> list[str]:
    """The complete (newline-terminated) lines of a file that may still be written."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    cut = data.rfind(b"\n")
    if cut < 0:
        return []
    return data[:cut].decode().split("\n")


def raw_values(path: Path | str) -> list[str]:
    """``_raw`` of every event of an NDJSON file (only complete lines)."""
    return [orjson.loads(line)["_raw"] for line in read_complete_lines(path) if line]


# ------------------------------------------------------------------------------ waiting


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "a condition",
    info: Callable[[], Any] | None = None,
    interval: float = 0.01,
) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds, with
    ``info()`` (the state worth seeing) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{info()}" if info is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)  # poll


async def async_wait_until(
    pred: Callable[[], Any], timeout: float = 20.0, what: str = "a condition"
) -> Any:
    """``wait_until`` for code running inside the event loop (lets the engine work meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # poll


async def stop_engine(engine: pipenb.Engine, task: asyncio.Task, timeout: float = 20.0) -> Any:
    """Ask a running engine to stop and wait (with a deadline) until ``run()`` returned."""
    engine.stop()
    return await asyncio.wait_for(task, timeout)


# ------------------------------------------------------------------------------ processes


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def remote_cli(url: str, token: str, cwd: Path | str) -> Callable[..., tuple[int, str, str]]:
    """``pipenb ARGS`` in a subprocess against the server at ``url``, with only that server's
    ``PIPENB_URL``/``PIPENB_TOKEN`` (the tests' own ``PIPENB_*`` removed; ``NAME=None`` in
    ``env`` removes one more): ``run(*args, **env) -> (exit code, stdout, stderr)``."""

    def run(*args: str, **env: str | None) -> tuple[int, str, str]:
        base: dict[str, str | None] = {
            k: v for k, v in cli_env().items() if not k.startswith("PIPENB_")
        }
        base.update({"PIPENB_URL": url, "PIPENB_TOKEN": token})
        base.update(env)
        proc = subprocess.run(
            [sys.executable, "-m", "pipenb", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={k: v for k, v in base.items() if v is not None},
            timeout=60,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


def run_cli(
    *args: str | os.PathLike,
    input: bytes | str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess:
    """``python -m pipenb ARGS`` in a subprocess; stdout and stderr as text."""
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(
        [sys.executable, "-m", "pipenb", *map(str, args)],
        input=input,
        capture_output=True,
        cwd=cwd,
        env=cli_env(),
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    """A private checkpoint directory, so no test reads or writes ~/.local/state."""
    d = tmp_path / "data"
    d.mkdir()
    return str(d)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """JupyterLab as ``make run`` starts it, with its agent ``local`` online: one per session,
    shared by the notebook, lab and browser tests."""
    from labproc import LabProcess

    proc = LabProcess(tmp_path_factory.mktemp("lab"))
    try:
        yield proc.start()
    finally:
        proc.kill()
