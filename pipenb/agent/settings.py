"""Agent settings, one dataclass; ``pipenb agent`` fills it from flags and PIPENB_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pipenb.policy.model import Policy
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
    allow_scripts: bool = False  # shorthand of the policy's scripts: true
    disable: list[str] = field(default_factory=list)  # shorthand: exec off, scripts off
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
    metrics_address: str | None = None  # host:port of GET /metrics (Prometheus); None: off

    def tls_options(self) -> TlsOptions:
        return TlsOptions(self.ca_file, self.ca_fingerprint, self.cert, self.key)

    #: what the server may change (pipenb.agent.remote_settings): --max-log-level and
    #: --settings-bounds KEY=LOW..HIGH,...
    max_log_level: str = "debug"
    settings_bounds: str | None = None
    capture_limit: int = 10_000  # events a tap or a preview brings back at most

    @cached_property
    def bounds(self) -> Any:
        from pipenb.agent.remote_settings import Bounds

        return Bounds.parse(self.max_log_level, self.settings_bounds)

    #: policy values from --policy FILE and the --allow-* flags (flags win), over the defaults
    policy_values: dict[str, Any] = field(default_factory=dict)
    policy_file: str | None = None
    run_as: str | None = None  # workers run as this user (the agent must be root)

    @cached_property
    def policy(self) -> Policy:
        """This host's policy: what its pipes may touch (see pipenb/policy)."""
        values = dict(self.policy_values)
        if self.allow_scripts:
            values["scripts"] = True
        if "exec" in self.disable:
            values["exec"] = "off"
        if "script" in self.disable:
            values["scripts"] = False
        return Policy.for_agent(self.data_dir, values, policy_file=self.policy_file)

    @property
    def allow(self) -> list[str]:
        """The capabilities this agent grants its pipes."""
        p = self.policy
        allowed = {"exec"} if p.exec != "off" else set()
        if p.scripts:
            allowed.add("script")
        return sorted(allowed)
