"""JupyterLab started exactly as ``make run`` starts it (``scripts/run.sh``), for the tests.

The script runs in a process group of its own on a free port, with its state in a temporary
directory and a known Jupyter token; the helper waits until the pipenb API answers and the
script's agent named ``local`` (label ``local``, an id the server assigned) is online. ``interrupt()`` is Ctrl-C, ``kill()`` the cleanup.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import requests

from support import REPO_ROOT
from support.processes import clean_env, free_port, kill_group
from support.waiting import wait_until

PREFIX = "/pipenb/api/v1"


class LabProcess:
    def __init__(self, state: Path):
        self.state = Path(state)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.state / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> LabProcess:
        self.state.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            PIPENB_JUPYTER_PORT=str(self.port),
            PIPENB_STATE=str(self.state),
            PIPENB_JUPYTER_TOKEN=self.token,
            PIPENB_NO_BROWSER="1",
            JUPYTER_CONFIG_DIR=str(self.state / "jupyter-config"),  # not the user's settings
            JUPYTER_RUNTIME_DIR=str(self.state / "jupyter-runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.lab_settings()),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state / "lab-workspaces"),
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["bash", str(REPO_ROOT / "scripts" / "run.sh")],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scripts/run.sh exited:\n{self.log_text()[-3000:]}")
            return self._agent_online()

        try:
            wait_until(
                ready,
                timeout,
                "JupyterLab and its local agent",
                lambda: self.log_text()[-3000:],
                interval=0.2,
                error=RuntimeError,
            )
        except RuntimeError:
            self.kill()
            raise
        return self

    def lab_settings(self) -> Path:
        """JupyterLab settings of the tests' own: no autosave, so a browser that runs a tutorial
        never writes its outputs into the repository's notebooks; no news requests."""
        settings = self.state / "lab-settings"
        docmanager = settings / "@jupyterlab" / "docmanager-extension"
        docmanager.mkdir(parents=True, exist_ok=True)
        (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
        apputils = settings / "@jupyterlab" / "apputils-extension"
        apputils.mkdir(parents=True, exist_ok=True)
        (apputils / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        return settings

    def local_agent(self, timeout: float = 2) -> dict[str, Any] | None:
        """The script's agent: named ``local``, with the label ``local`` (its id is assigned)."""
        try:
            agents = self.get("/agents", timeout=timeout).json()["agents"]
        except (requests.RequestException, ValueError, KeyError):
            return None
        return next((a for a in agents if a["name"] == "local" and "local" in a["labels"]), None)

    def _agent_online(self) -> bool:
        agent = self.local_agent()
        return agent is not None and agent["state"] == "online"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.get(self.url + PREFIX + path, headers=headers, **kwargs)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def interrupt(self) -> None:
        """What Ctrl-C in the terminal does: SIGINT to the whole foreground process group."""
        assert self.proc is not None
        kill_group(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc is None:
            return
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> LabProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
