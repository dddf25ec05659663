"""Debian's nginx on 127.0.0.1 in front of several ``pipenb server`` processes, for the tests.

It runs in the foreground with a config file of its own in a temporary prefix (never the
system's: ``-c`` and ``-p``, pid file and logs in the prefix). ``scripts/nginx-test.sh`` installs
it (``make test`` runs it); without it the tests that need it are skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from support.processes import free_port, terminate
from support.waiting import wait_until_up

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PREFIX = "/pipenb/api/v1"


def nginx_missing() -> str | None:
    """Why the nginx tests cannot run (None: they can)."""
    if not Path(NGINX).is_file():
        return "nginx is not installed (scripts/nginx-test.sh installs Debian's nginx-light)"
    return None


class NginxProcess:
    """``upstreams``: ``host:port`` of the server processes; ``backups``: used only when every
    one of ``upstreams`` is down (so a test knows which process holds an agent)."""

    def __init__(self, prefix: Path, upstreams: list[str], backups: list[str] = ()):  # type: ignore[assignment]
        self.prefix = Path(prefix)
        self.upstreams = list(upstreams)
        self.backups = list(backups)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        servers = [f"server {u} max_fails=1 fail_timeout=30s;" for u in self.upstreams]
        servers += [f"server {u} backup;" for u in self.backups]
        p = self.prefix
        return f"""
worker_processes 1;
error_log {p}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$request_method $uri $status upstream=$upstream_addr '
                        'upstream_status=$upstream_status';
    access_log {p}/access.log upstream;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    upstream pipenb {{
        {" ".join(servers)}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        client_max_body_size 4m;
        client_body_buffer_size 4m;
        location / {{
            proxy_pass http://pipenb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            # check-ins are held up to the long poll: longer than nginx's default 60 s is not
            # needed, shorter would cut them
            proxy_read_timeout 90s;
            proxy_connect_timeout 2s;
            # a process that refuses the connection: try the next one (the request was not sent)
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""

    def start(self, timeout: float = 20.0) -> NginxProcess:
        self.prefix.mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        log = open(self.prefix / "nginx.out", "ab")  # noqa: SIM115 - lives as long as nginx
        # its own config and prefix, in the foreground, its pid file in the prefix
        args = [NGINX, "-c", str(conf), "-p", str(self.prefix)]
        args += ["-g", f"daemon off; pid {self.prefix}/nginx.pid;"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_up(self.proc, self.url + PREFIX + "/health", "nginx", self.log_text, timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def answered_by(self, upstream: str, path: str = "/agent/checkin") -> int:
        """How many requests for ``path`` the process at ``upstream`` (host:port) answered 200
        (the last upstream nginx tried is the one that answered)."""
        try:
            lines = (self.prefix / "access.log").read_text().splitlines()
        except FileNotFoundError:
            return 0
        n = 0
        for line in lines:
            m = re.match(r"(\S+) (\S+) (\d+) upstream=(.*) upstream_status=", line)
            # with several tried, $upstream_addr lists them: the last one answered
            if m and m[2].endswith(path) and m[3] == "200" and m[4].split(", ")[-1] == upstream:
                n += 1
        return n

    def log_text(self) -> str:
        out = []
        for name in ("nginx.out", "error.log"):
            f = self.prefix / name
            if f.exists():
                out.append(f"==== {f}\n{f.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)  # SIGTERM: nginx's fast shutdown
        self.proc = None

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
