"""A real ``pipenb server`` in a subprocess on 127.0.0.1, for integration tests.

Import it from a test module (``from support.serverproc import ServerProcess``); it picks a free port,
waits until the server answers, and stops it with SIGTERM.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from support.processes import clean_env, terminate
from support.waiting import wait_until_up

PREFIX = "/pipenb/api/v1"


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        token: str = "test-token",
        enroll_key: str | None = None,
        db_url: str | None = None,
        poll_interval: float = 1.0,
        long_poll: float = 30.0,
        extra: tuple[str, ...] = (),
        verify: str | Path | bool = True,
        cert: str | tuple[str, str] | None = None,
        preexec_fn: Any = None,
    ):
        self.data_dir = Path(data_dir)
        self.token = token
        self.enroll_key = enroll_key
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'server.db'}"
        self.poll_interval = poll_interval
        self.long_poll = long_poll
        self.extra = extra
        self.verify = str(verify) if isinstance(verify, Path) else verify  # https: whom to trust
        self.cert = cert  # https with --tls-client-ca: the client certificate and key
        self.banner = ""  # what the server printed when it started
        self.preexec_fn = preexec_fn  # run in the child before the server starts (rlimits)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log = self.data_dir / "server.log"

    @property
    def api(self) -> str:
        return self.url + PREFIX

    def args(self, port: int = 0, *, verbosity: str = "") -> list[str]:
        """The command line: ``verbosity`` is ``"-v"``/``"-vv"`` (before the subcommand)."""
        args = [sys.executable, "-m", "pipenb", *([verbosity] if verbosity else []), "server"]
        args += [
            "--host", "127.0.0.1", "--port", str(port),
            "--db-url", self.db_url, "--token", self.token,
            "--poll-interval", str(self.poll_interval), "--long-poll", str(self.long_poll),
        ]  # fmt: skip
        if self.enroll_key:
            args += ["--enroll-key", self.enroll_key]
        return args + list(self.extra)

    def start(self, port: int = 0, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args(port),
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),  # noqa: SIM115 - lives as long as the process
            text=True,
            env=clean_env(),
            preexec_fn=self.preexec_fn,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = (
            self.proc.stdout.readline()
        )  # "pipenb server listening on http://...": blocks until up
        m = re.search(r"(https?://[\d.]+:\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log.read_text()}")
        self.url = m.group(1)
        self.banner = line
        wait_until_up(
            self.proc,
            self.api + "/health",
            "the server",
            self.log.read_text,
            max(0.0, deadline - time.monotonic()),
            verify=self.verify,
            cert=self.cert,
        )
        return self

    def banner_line(self, text: str) -> str:
        """The next line of the server's start-up banner that contains ``text`` (it reads the
        banner up to there; the banner is printed at once, so this does not wait long)."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"no {text!r} in the server's banner:\n{self.banner}")
            self.banner += line
            if text in line:
                return line.strip()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request(
        self, method: str, path: str, *, token: str | bool | None = True, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token is True:
            headers["Authorization"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        kw.setdefault("verify", self.verify)
        kw.setdefault("cert", self.cert)
        return requests.request(
            method, self.api + path, headers=headers, timeout=kw.pop("timeout", 30), **kw
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        code = self.proc.returncode
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
