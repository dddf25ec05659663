"""Agent settings, one dataclass; ``pipenb agent`` fills it from flags and PIPENB_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipenb.tls import TlsOptions

#: Capabilities a pipe may need and an agent may refuse.
CAPABILITIES = ("exec", "script")


@dataclass
class AgentSettings:
    server: str
    data_dir: str
    agent_id: str | None = None
    api_key: str | None = None
    enroll_key: str | None = None
    name: str | None = None  # a display name sent at enrollment (the server assigns the id)
    allow_scripts: bool = False
    disable: list[str] = field(default_factory=list)
    long_poll: float = 30.0  # seconds the agent lets the server hold a check-in
    metrics_every: float = 15.0  # seconds between metric/checkpoint reports of a pipe
    drain_timeout: float = 20.0  # seconds a stopping worker may take before it is killed
    max_backoff: float = 30.0  # seconds between check-ins at most while the server is away
    buffer_logs: int = 1000  # log lines kept while the server is unreachable
    auth_tries: int = 3  # check-ins answered 401 in a row before the agent gives up and exits
    # TLS (pipenb.tls): whom to trust, what to show, and whether plain HTTP off this host is ok
    ca_file: str | None = None
    ca_fingerprint: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure_http: bool = False

    def tls_options(self) -> TlsOptions:
        return TlsOptions(self.ca_file, self.ca_fingerprint, self.cert, self.key)

    @property
    def allow(self) -> list[str]:
        """The capabilities this agent grants its pipes."""
        allowed = {"exec"} - set(self.disable)
        if self.allow_scripts and "script" not in self.disable:
            allowed.add("script")
        return sorted(allowed)
