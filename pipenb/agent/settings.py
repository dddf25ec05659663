"""Agent settings, one dataclass; ``pipenb agent``'s flags (and PIPENB_* variables) are generated
from its fields (``pipenb.setting``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipenb.setting import setting

if TYPE_CHECKING:  # imported where used: ``pipenb --help`` reads the fields, not these
    from pipenb.policy.model import Policy
    from pipenb.tls import TlsOptions


#: why an agent setting has no traitlet: agents run outside Jupyter
_AGENT = "an agent runs on a worker host, not in Jupyter"


@dataclass
class AgentSettings:
    server: str = setting(help="the server's URL, e.g. https://10.0.0.5:8765", no_jupyter=_AGENT)
    data_dir: str = setting(
        help="where identity, desired pipes, checkpoints and logs live "
        "(default: ~/.local/state/pipenb/agent)",
        no_jupyter=_AGENT,
    )
    agent_id: str | None = setting(
        None,
        flag="--id",
        env="PIPENB_AGENT_ID",
        help="this agent's id, with --api-key (an agent added by hand: pipenb agents add)",
        no_jupyter=_AGENT,
    )
    api_key: str | None = setting(None, help="this agent's API key", no_jupyter=_AGENT)
    enroll_key: str | None = setting(
        None,
        help="enroll with an enrollment token (pipenb enroll-tokens create) or the server's "
        "bootstrap key; the server assigns the id and the token's labels, and the key it returns "
        "is saved in the data dir",
        no_jupyter=_AGENT,
    )
    # a display name sent at enrollment (the server assigns the id)
    name: str | None = setting(None, help="a display name (when enrolling)", no_jupyter=_AGENT)
    # shorthand of the policy's scripts: true
    allow_scripts: bool = setting(
        False,
        help="allow the script action (the policy's scripts: true; refused by default)",
        no_jupyter=_AGENT,
    )
    # shorthand: exec off, scripts off
    disable: list[str] = setting(
        default_factory=list,
        help="refuse exec and/or script whatever the policy says, comma-separated: exec,script",
        no_jupyter=_AGENT,
    )
    long_poll: float = setting(
        30.0, help="seconds a check-in may be held by the server", no_jupyter=_AGENT
    )
    metrics_every: float = setting(
        15.0, help="seconds between a pipe's metrics and checkpoint reports", no_jupyter=_AGENT
    )
    drain_timeout: float = setting(
        20.0,
        help="seconds a stopping worker may take to drain before it is killed",
        no_jupyter=_AGENT,
    )
    max_backoff: float = setting(
        30.0,
        help="seconds between check-ins at most while the server is away",
        no_jupyter=_AGENT,
    )
    buffer_logs: int = setting(
        1000, help="log lines kept while the server is unreachable", no_jupyter=_AGENT
    )
    auth_tries: int = setting(
        3,
        help="check-ins answered 401 in a row before the agent gives up and exits",
        no_jupyter=_AGENT,
    )
    # TLS (pipenb.tls): whom to trust, what to show, and whether plain HTTP off this host is ok
    ca_file: str | None = setting(
        None, help="trust only the CA in this PEM file for an https:// server", no_jupyter=_AGENT
    )
    ca_fingerprint: str | None = setting(
        None,
        help="trust the server's CA if its SHA-256 fingerprint is this (as `pipenb server` "
        "prints it); the CA is then kept in the data dir",
        no_jupyter=_AGENT,
    )
    cert: str | None = setting(
        None,
        help="a client certificate (PEM) for a server that requires mutual TLS",
        no_jupyter=_AGENT,
    )
    key: str | None = setting(
        None, help="the private key of --cert (PEM), if not in the --cert file", no_jupyter=_AGENT
    )
    insecure_http: bool = setting(
        False,
        help="allow an http:// server URL that is not on this host (keys cross the network "
        "in clear: labs only)",
        no_jupyter=_AGENT,
    )
    metrics_address: str | None = setting(
        None,
        help="serve the pipes' metrics for Prometheus at http://HOST:PORT/metrics "
        "(off by default; use a loopback address unless the port is firewalled)",
        no_jupyter=_AGENT,
    )

    def tls_options(self) -> TlsOptions:
        from pipenb.tls import TlsOptions

        return TlsOptions(self.ca_file, self.ca_fingerprint, self.cert, self.key)

    #: what the server may change (pipenb.agent.remote_settings): --max-log-level and
    #: --settings-bounds KEY=LOW..HIGH,...
    max_log_level: str = setting(
        "debug",
        help="the most verbose log level the server may set (log-level, ship-level): "
        "debug, info, warning or error",
        no_jupyter=_AGENT,
    )
    settings_bounds: str | None = setting(
        None,
        help="ranges the server's settings must keep to, e.g. "
        "'metrics-every=5s..60s,long-poll=..30s,capture-limit=..500' (docs/agent.md#settings)",
        no_jupyter=_AGENT,
    )
    capture_limit: int = setting(
        10_000, help="events a tap or a preview brings back at most", no_jupyter=_AGENT
    )

    @cached_property
    def bounds(self) -> Any:
        from pipenb.agent.remote_settings import Bounds

        return Bounds.parse(self.max_log_level, self.settings_bounds)

    #: policy values from --policy FILE and the --allow-* flags (flags win), over the defaults
    policy_values: dict[str, Any] = setting(
        default_factory=dict,
        help="this host's policy values",
        no_cli="filled from --policy FILE and the --allow-* flags (pipenb.cli.agent)",
        no_jupyter=_AGENT,
    )
    policy_file: str | None = setting(
        None,
        flag="--policy",
        help="this host's policy for pipes, a YAML file: read, write, connect, listen, exec, "
        "scripts (see docs/agent.md); the --allow-* flags override its keys",
        no_jupyter=_AGENT,
    )
    # workers run as this user (the agent must be root)
    run_as: str | None = setting(
        None,
        help="run workers (and what they run) as this user; the agent must be started as root",
        no_jupyter=_AGENT,
    )

    @cached_property
    def policy(self) -> Policy:
        """This host's policy: what its pipes may touch (see pipenb/policy)."""
        from pipenb.policy.model import Policy

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
