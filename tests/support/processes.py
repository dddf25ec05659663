"""What every helper that starts a real process needs: a clean environment, a free loopback
port, and a stop that never leaves a process behind.

``serverproc``, ``agentproc``, ``labproc``, ``faultkit`` and ``cli`` all build on these, so a
process started by a test sees the same environment whichever helper started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The tests' environment without their own ``PIPENB_*`` (a developer's ``PIPENB_URL`` must
    not reach a process under test), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot take 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc: subprocess.Popen, timeout: float = 15.0) -> bool:
    """SIGTERM, then wait; SIGKILL if it does not exit in time. Whether it exited on SIGTERM."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group (a process started with ``start_new_session`` and every child
    it left); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
