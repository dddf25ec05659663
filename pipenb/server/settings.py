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
    enroll_rate: float = 10.0  # enrollments per second allowed (burst the same)
    header_timeout: float = 60.0  # seconds a client may take to send a request's headers

    @property
    def offline_seconds(self) -> float:
        return self.offline_after if self.offline_after is not None else 3 * self.poll_interval
