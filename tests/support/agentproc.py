"""A real ``pipenb agent`` in a subprocess, for end-to-end tests (the agent's twin of serverproc.py).

Import it from a test module (``from support.agentproc import AgentProcess``). Agents cannot choose their
labels or their id: given ``labels``, the helper first creates an enrollment token carrying them
(through the user API, with ``token``) and enrolls the agent with it; the id the server assigned
is what ``wait_enrolled()`` returns. The agent runs as
``python -m pipenb -v agent ...`` in a session of its own, with its stdout and stderr appended to
``agent.log`` in its data dir. Its workers inherit that process group, so ``cleanup()`` can end the
agent and every worker it started, even workers left behind by an agent killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from support.processes import clean_env, kill_group, terminate
from support.waiting import wait_until


class AgentProcess:
    def __init__(
        self,
        server: str,
        data_dir: Path | str,
        *,
        enroll_key: str | None = None,
        agent_id: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        labels: list[str] | tuple[str, ...] = (),
        long_poll: float | None = 5.0,
        allow_scripts: bool = False,
        disable: list[str] | tuple[str, ...] = (),
        python_flags: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        token: str = "test-token",
        env: dict[str, str] | None = None,
    ):
        self.server = server
        self.data_dir = Path(data_dir)
        self.enroll_key = enroll_key
        self.agent_id = agent_id
        self.api_key = api_key
        self.name = name
        self.labels = list(labels)
        self.long_poll = long_poll
        self.allow_scripts = allow_scripts
        self.disable = list(disable)
        self.python_flags = python_flags
        self.extra = extra
        self.token = token  # the user token, to create an enrollment token for ``labels``
        self.enroll_token: dict[str, Any] | None = None  # the one created, if any
        self.env = dict(env or {})  # added to the environment (PIPENB_* of the tests' own removed)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "agent.log"
        self.groups: list[int] = []  # every process group this helper started (for cleanup)

    # ------------------------------------------------------------------ arguments
    def args(self) -> list[str]:
        args = [sys.executable, *self.python_flags, "-m", "pipenb", "-v", "agent"]
        args += ["--server", self.server, "--data-dir", str(self.data_dir)]
        if self.agent_id and self.api_key:  # an agent added by hand (enrolled ones get an id)
            args += ["--id", self.agent_id]
        if self.api_key:
            args += ["--api-key", self.api_key]
        if self.enroll_key:
            key = self.enroll_token["token"] if self.enroll_token else self.enroll_key
            args += ["--enroll-key", key]
        if self.name:
            args += ["--name", self.name]
        if self.allow_scripts:
            args.append("--allow-scripts")
        if self.disable:
            args += ["--disable", ",".join(self.disable)]
        if self.long_poll is not None:
            args += ["--long-poll", str(self.long_poll)]
        return args + list(self.extra)

    def create_enroll_token(self) -> dict[str, Any]:
        """An enrollment token with this agent's labels, made through the server's user API."""
        import requests

        base = self.server.rstrip("/")
        if not base.endswith("/pipenb/api/v1"):
            base += "/pipenb/api/v1"
        # the harness (not the agent) talks to an https server with the agent's own CA file,
        # or, where the agent pins a fingerprint, without checking: the token is a test's
        extra = list(self.extra)
        verify: bool | str = not base.startswith("https:")
        if "--ca-file" in extra:
            verify = extra[extra.index("--ca-file") + 1]
        r = requests.post(
            base + "/enroll-tokens",
            json={"labels": self.labels, "name": f"test agent {self.name or ''}".strip()},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            verify=verify,
        )
        assert r.status_code == 201, (
            f"could not create an enrollment token: {r.status_code} {r.text}"
        )
        return r.json()

    # ------------------------------------------------------------------ life
    def start(self) -> AgentProcess:
        """Start the agent (it enrolls, if it has to, after this returns: ``wait_enrolled``)."""
        assert self.proc is None or self.proc.poll() is not None, "the agent is running already"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.enroll_key and self.labels and self.enroll_token is None and not self.identity():
            self.enroll_token = self.create_enroll_token()
        env = clean_env(**self.env)
        with open(self.log, "ab") as log:
            log.write(f"--- {' '.join(self.args())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # its own process group, shared with its workers
            )
        self.groups.append(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL and fail if it does not come)."""
        assert self.proc is not None
        if not terminate(self.proc, timeout):
            raise AssertionError(
                f"the agent did not exit within {timeout}s of SIGTERM\n{self.log_text()}"
            )
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the agent process only: its workers see their stdin close and drain."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def kill_group(self) -> None:
        """SIGKILL the agent and the workers of its current run (a host crash, as it were)."""
        if self.proc is not None:
            kill_group(self.proc.pid)
            self.proc.wait()

    def cleanup(self) -> None:
        """End the agent and every worker any of its runs left: for test finalizers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pgid in self.groups:
            kill_group(pgid)
        self.groups.clear()

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ looking inside
    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def identity(self) -> dict[str, Any] | None:
        try:
            return orjson.loads((self.data_dir / "identity.json").read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def wait_enrolled(self, timeout: float = 20.0) -> str:
        """The agent id, once the agent saved its identity (fails early if the agent died)."""

        def enrolled() -> str | None:
            ident = self.identity()
            if ident:
                return str(ident["agent_id"])
            if not self.alive():
                raise AssertionError(f"the agent exited before enrolling:\n{self.log_text()}")
            return None

        self.agent_id = wait_until(
            enrolled, timeout, "the agent to enroll", self.log_text, interval=0.02
        )
        return self.agent_id

    def worker_pids(self) -> list[int]:
        """The agent's live child processes (its workers)."""
        if not self.alive():
            return []
        pids: list[int] = []
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def maps(self) -> str:
        """/proc/PID/maps of the agent process: the shared objects it has loaded."""
        return Path(f"/proc/{self.pid}/maps").read_text()

    def checkpoint(self, dep_id: str) -> Any:
        """The checkpoint a worker saved for a deployment in this agent's data dir."""
        path = self.data_dir / "checkpoints" / f"{dep_id}.json"
        try:
            return orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None


def tmp_policy(*more: str) -> tuple[str, ...]:
    """Policy flags for test agents whose pipes read and write under the temp dir (where
    pytest's tmp_path lives): the default policy (read /var/log/**, write DATA_DIR/out) would
    refuse them. ``more`` adds flags, e.g. ``"--allow-exec", "any"``."""
    import tempfile

    tmp = os.path.realpath(tempfile.gettempdir())
    return ("--allow-read", f"{tmp}/**", "--allow-write", tmp, *more)


def end_all(agents: list[AgentProcess], *, worker_logs: bool = False) -> None:
    """For an agent factory fixture's finalizer: end every agent and worker, then print each
    agent's log (and, with ``worker_logs``, the tail of each worker's log); pytest shows them
    when the test failed."""
    for agent in agents:
        agent.cleanup()
    for agent in agents:
        print(f"==== {agent.log}\n{agent.log_text()}")
        logs = agent.data_dir / "logs"
        for f in sorted(logs.iterdir()) if worker_logs and logs.is_dir() else ():
            print(f"==== {f}\n{f.read_text(errors='replace')[-3000:]}")
