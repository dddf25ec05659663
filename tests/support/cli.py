"""``pipenb`` as a subprocess: a user at a terminal, local or against a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from support import REPO_ROOT
from support.processes import clean_env


def cli_env(**extra: str) -> dict[str, str]:
    """The tests' environment with this checkout first on ``PYTHONPATH``, so a ``pipenb``
    subprocess runs the code under test (not another editable install), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def remote_cli(url: str, token: str, cwd: Path | str) -> Callable[..., tuple[int, str, str]]:
    """``pipenb ARGS`` in a subprocess against the server at ``url``, with only that server's
    ``PIPENB_URL``/``PIPENB_TOKEN`` (the tests' own ``PIPENB_*`` removed; ``NAME=None`` in
    ``env`` removes one more): ``run(*args, **env) -> (exit code, stdout, stderr)``."""

    def run(*args: str, **env: str | None) -> tuple[int, str, str]:
        base: dict[str, str | None] = dict(clean_env(PYTHONPATH=cli_env()["PYTHONPATH"]))
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


def sigkill_mid_run(pipe: Path, data_dir: Path, ready: Callable[[], object]) -> None:
    """``pipenb run PIPE`` in a subprocess, killed with SIGKILL once ``ready()`` holds: a crash
    in the middle of a run. Fails if the pipe ended before it could be killed."""
    from support.waiting import wait_until

    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(data_dir), "-q"]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc.poll() is not None or ready(), 60, "some output")
        assert proc.poll() is None, f"the pipe ended before the kill: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
