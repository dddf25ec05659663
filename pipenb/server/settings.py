"""Server settings, one dataclass; the CLI and the Jupyter extension fill it from their options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerSettings:
    db_url: str = "sqlite:///pipenb.db"
    token: str | None = None  # user token; None: user auth is done by the host (Jupyter)
    enroll_key: str | None = None  # None: auto-enrollment is off
    poll_interval: float = 5.0  # how often agents check in at the least
    long_poll: float = 30.0  # how long a check-in with nothing new may be held
    offline_after: float | None = None  # default: 3 poll intervals
    retention: float = 7 * 86400.0  # seconds metrics and logs are kept
    metrics_interval: float = 60.0  # at most one stored metrics point per pipe per this
    max_body: int = (
        256 * 1024
    )  # bytes; larger request bodies get 413 (where no limit below applies)
    max_checkin_body: int = 1024 * 1024  # bytes of one agent check-in
    max_pipe_body: int = 1024 * 1024  # bytes of one pipe push
    max_connections: int = 1024  # open connections (standalone server); more get 503
    log_repeats: int = 20  # the same log message at most this often per log_window seconds
    log_window: float = 10.0
    clock_skew: float = 60.0  # seconds an agent's clock may run ahead of the server's
    enroll_rate: float = 10.0  # successful enrollments per second (burst the same)
    enroll_fail_rate: float = 1.0  # failed enrollments per second per client address
    enroll_fail_burst: int = 10  # failed enrollments an address may make at once
    header_timeout: float = 60.0  # seconds a client may take to send a request's headers
    # the key that seals secret params (None: secret.key beside a SQLite file; see secrets.py)
    secret_key_file: str | None = None
    wheel: str | None = None  # the wheel served to agent installs (--wheel); None: none
    # HTTPS (pipenb server only; inside Jupyter, Jupyter's --certfile/--keyfile): the
    # certificate chain and key files, and the CA that client certificates must come from
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    @property
    def offline_seconds(self) -> float:
        return self.offline_after if self.offline_after is not None else 3 * self.poll_interval
