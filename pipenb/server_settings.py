"""Server settings, one dataclass; the CLI flags and the Jupyter traitlets are generated from it.

Each field is declared once with ``pipenb.setting.setting``: its default, its help text and how
the command line parses it. ``pipenb server`` gets a flag per field (``pipenb.cli.server``), the
Jupyter extension a traitlet (``pipenb.jupyter_ext.app``), except where ``no_cli`` /
``no_jupyter`` says why the setting means nothing there.

It lives outside the ``pipenb.server`` package because the ``pipenb`` command builds every
sub-command's flags, ``pipenb agent`` included, and an agent process must not load the server
package (tests/test_agent_e2e.py); ``pipenb.server.settings`` re-exports it for the server.
Standard library only.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from pipenb.setting import setting

UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20}
UNITS["MIB"] = 1 << 20


def byte_size(text: str | int) -> int:
    """``1048576``, ``1MiB``, ``512KiB``: a size in bytes (binary units), at least 1."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    digits, unit = (m.group(1), m.group(2).upper()) if m else ("", "?")
    if not digits or unit not in UNITS or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 512KiB or 1MiB)")
    return int(digits) * UNITS[unit]


#: why the standalone server's listener settings have no traitlet
_JUPYTER_LISTENS = "Jupyter's own HTTP server serves the requests inside Jupyter"


@dataclass
class ServerSettings:
    db_url: str = setting(
        "sqlite:///pipenb.db",
        shown=None,  # pipenb server: a SQLite file in --data-dir; Jupyter: in its data dir
        help="database URL: sqlite:///FILE or postgresql://... (default: a SQLite file in the "
        "data dir)",
    )
    token: str | None = setting(
        None,
        help="the user token for management requests (default: a new random one, printed)",
        no_jupyter="Jupyter authenticates users itself (its token, cookie or identity provider)",
    )
    enroll_key: str | None = setting(
        None, help="allow agents to enroll with this key (default: enrollment off)"
    )
    poll_interval: float = setting(5.0, help="seconds between agents' check-ins at the least")
    long_poll: float = setting(30.0, help="seconds a check-in with nothing new is held")
    offline_after: float | None = setting(
        None, help="seconds of silence before an agent is offline (default: 3 poll intervals)"
    )
    retention: float = setting(7 * 86400.0, help="seconds metrics and logs are kept")
    metrics_interval: float = setting(
        60.0, help="seconds between stored metrics points of a pipe, at the least"
    )
    max_body: int = setting(
        256 * 1024,
        parse=byte_size,
        shown="256KiB",
        help="largest body of any other request, in bytes (or with KiB/MiB); larger get 413",
    )
    max_checkin_body: int = setting(
        1024 * 1024,
        parse=byte_size,
        shown="1MiB",
        help="largest agent check-in body, in bytes (or with KiB/MiB); larger get 413",
    )
    max_pipe_body: int = setting(
        1024 * 1024,
        parse=byte_size,
        shown="1MiB",
        help="largest pipe push body, in bytes (or with KiB/MiB); larger get 413",
    )
    max_connections: int = setting(
        1024,
        help="open connections served at once; more are answered 503 with Retry-After "
        "(lowered to fit the process's open-file limit)",
        no_jupyter=_JUPYTER_LISTENS,
    )
    log_repeats: int = setting(
        20,
        help="the same log message is written at most this often per --log-window seconds",
        no_jupyter="Jupyter's logging is Jupyter's (--log-level and its logging config)",
    )
    log_window: float = setting(
        10.0,
        help="seconds over which --log-repeats counts",
        no_jupyter="Jupyter's logging is Jupyter's (--log-level and its logging config)",
    )
    clock_skew: float = setting(60.0, help="seconds an agent's clock may run ahead of the server's")
    enroll_rate: float = setting(10.0, help="successful enrollments per second (burst the same)")
    enroll_fail_rate: float = setting(1.0, help="failed enrollments per second per client address")
    enroll_fail_burst: int = setting(
        10, help="failed enrollments a client address may make at once"
    )
    header_timeout: float = setting(
        60.0,
        help="seconds a client may take to send a request's headers (slow clients are cut off)",
        no_jupyter=_JUPYTER_LISTENS,
    )
    # the key that seals secret params (None: secret.key beside a SQLite file; see secrets.py)
    secret_key_file: str | None = setting(
        None,
        help="the key that encrypts secret params (default: secret.key beside a SQLite "
        "database; with PostgreSQL give one, the same file for every server process)",
    )
    wheel: str | None = setting(
        None,
        help="the pipenb wheel to serve to agent installs (`make dist` builds dist/*.whl; "
        "pipenb agents install-command prints the line that installs it)",
    )
    # HTTPS (pipenb server only; inside Jupyter, Jupyter's --certfile/--keyfile): the
    # certificate chain and key files, and the CA that client certificates must come from
    tls_cert: str | None = setting(
        None,
        help="serve HTTPS with this certificate chain (PEM)",
        no_jupyter="Jupyter serves HTTPS itself: --ServerApp.certfile",
    )
    tls_key: str | None = setting(
        None,
        help="the private key of --tls-cert (PEM), if not in the same file",
        no_jupyter="Jupyter serves HTTPS itself: --ServerApp.keyfile",
    )
    tls_client_ca: str | None = setting(
        None,
        help="mutual TLS: require a client certificate issued by the CA in this PEM file",
        no_jupyter="Jupyter serves HTTPS itself: --ServerApp.client_ca",
    )

    @property
    def offline_seconds(self) -> float:
        return self.offline_after if self.offline_after is not None else 3 * self.poll_interval
