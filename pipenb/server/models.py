"""What crosses the HTTP API, as pydantic models. Storage rows (``db_tables.py``) become these
models in ``convert.py``; the services add what a row does not hold (presence, expiry, the
status of a deployment's instances).

These models are also the OpenAPI document's schemas, so the document cannot drift from what
the handlers accept and return.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

#: The largest integer any request may carry where it is stored (a PostgreSQL ``integer``);
#: a larger one is a 400, never an overflow in the database (a 500).
MAX_INT32 = 2**31 - 1
#: An agent's check-in counter lives in memory only: a signed 64-bit range.
MAX_INT64 = 2**63 - 1

# What one check-in may carry. An agent sends at most MAX_CHECKIN_LOGS lines at a time.
MAX_CHECKIN_PIPES = 1000
MAX_CHECKIN_LOGS = 1000
MAX_CHECKIN_CAPTURES = 100
MAX_CHECKIN_ACKS = 1000
MAX_CAPTURE_EVENTS = 10_000
MAX_LOG_MESSAGE = 10_000  # characters kept of a log line or an error; the rest is cut


def _utc(value: datetime) -> datetime:
    # SQLite gives times back without their zone; every time pipenb stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


#: A UTC time, written as ISO 8601 with ``Z``.
Timestamp = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(
        lambda v: v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"), return_type=str
    ),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; SQLite can. Store the same thing on both.
    return value.replace("\x00", "\ufffd")


def _cut(limit: int) -> Any:
    def cut(value: Any) -> Any:
        return value[:limit] if isinstance(value, str) else value

    return cut


#: Text that is stored: no NUL characters, whatever the database.
Text = Annotated[str, AfterValidator(_no_nul)]
#: Reported text (log lines, errors): cut at MAX_LOG_MESSAGE characters rather than refused, so
#: an agent with a long traceback to report is not locked out of its check-ins.
Reported = Annotated[str, BeforeValidator(_cut(MAX_LOG_MESSAGE)), AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
DepId = Annotated[str, Field(min_length=1, max_length=40)]
Label = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Labels = Annotated[list[Label], Field(max_length=100)]
Instances = Annotated[int, Field(ge=1, le=MAX_INT32)] | Literal["all"]
Version = Annotated[int, Field(ge=1, le=MAX_INT32)] | Literal["latest"]


# ---------------------------------------------------------------------------- errors
class ErrorDetail(Model):
    code: str
    message: str
    details: list[Any] = []


class ErrorBody(Model):
    error: ErrorDetail


# ---------------------------------------------------------------------------- pipes
class PipePush(Model):
    yaml: Text = Field(description="the pipe document (its size is bounded by the body limit)")
    message: Text = Field(default="", max_length=10_000)
    files: dict[str, str] = Field(
        default_factory=dict,
        description="lookup table files the pipe names (file name -> content), stored with the "
        "version and written next to the pipe on agents",
    )


class PipeVersion(Model):
    pipe: str
    version: int
    hash: str
    message: str
    created_at: Timestamp
    yaml: str | None = None
    author: str | None = Field(default=None, description="who pushed it")
    files: list[str] = Field(default_factory=list, description="table files pushed with it")


class PipePushResult(Model):
    pipe: str
    version: int
    created: bool = Field(description="false when identical content already was the newest version")


class PipeSummary(Model):
    name: str
    latest_version: int
    versions: int
    description: str = ""
    labels: list[str] = []
    deployments: int = 0
    updated_at: Timestamp
    author: str | None = Field(default=None, description="who pushed the newest version")


class PipeList(Model):
    pipes: list[PipeSummary]


class PipeVersionList(Model):
    pipe: str
    versions: list[PipeVersion]


class PipeDiff(Model):
    pipe: str
    from_version: int
    to_version: int
    diff: str


# ---------------------------------------------------------------------------- agents
AgentState = Literal["online", "degraded", "offline", "new", "left"]


class AgentCreate(Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", max_length=200)
    name: Name | None = None
    labels: Labels = []


class AgentUpdate(Model):
    name: Name | None = None
    labels: Labels | None = None


class Agent(Model):
    id: str
    name: str
    labels: list[str]
    attributes: dict[str, Any]
    state: AgentState
    enrolled: bool
    created_at: Timestamp
    last_seen: Timestamp | None
    pipes: int = 0
    refused: int = Field(default=0, description="instances placed here that its policy refuses")


class AgentList(Model):
    agents: list[Agent]


#: Seconds from now until something expires: a bounded integer (ten years at most).
ExpiresIn = Annotated[int, Field(ge=1, le=10 * 366 * 86400)]


class ApiKeyCreate(Model):
    expires_in: ExpiresIn | None = Field(
        default=None, description="seconds until the key expires (default: never)"
    )
    expires_at: Timestamp | None = Field(default=None, description="when the key expires")


class ApiKey(Model):
    key_id: str
    agent_id: str
    created_at: Timestamp
    revoked_at: Timestamp | None = None
    expires_at: Timestamp | None = None


class ApiKeyCreated(Model):
    key_id: str
    agent_id: str
    api_key: str = Field(description="shown once; only its hash is stored")
    expires_at: Timestamp | None = None


class ApiKeyList(Model):
    keys: list[ApiKey]


# ---------------------------------------------------------------------------- enrollment
class EnrollTokenCreate(Model):
    name: Name | None = Field(default=None, description="what the token is for")
    labels: list[Label] = Field(default=[], description="labels every agent it enrolls gets")
    uses: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="how many agents it may enroll (default: no limit)"
    )
    expires_in: ExpiresIn | None = Field(
        default=None, description="seconds until the token expires (default: never)"
    )
    expires_at: Timestamp | None = Field(default=None, description="when the token expires")


class EnrollToken(Model):
    id: str
    name: str
    labels: list[str]
    uses: int = Field(description="agents enrolled with it so far")
    max_uses: int | None
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    state: Literal["active", "expired", "used_up", "revoked"]


class EnrollTokenCreated(EnrollToken):
    token: str = Field(description="shown once; only its hash is stored")


class EnrollTokenList(Model):
    tokens: list[EnrollToken]


class EnrollRequest(Model):
    enroll_key: str = Field(
        max_length=1000,
        description="an enrollment token (pipenb enroll-tokens create), or the server's "
        "bootstrap key (--enroll-key)",
    )
    name: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None,
        description="a display name; control characters are removed and it is cut to "
        "100 characters. The server assigns the id; labels come from the token",
    )
    attributes: dict[str, Any] = {}


class EnrollResult(Model):
    agent_id: str
    key_id: str
    api_key: str
    name: str
    labels: list[str]


# ---------------------------------------------------------------------------- deployments
class DeploymentCreate(Model):
    pipe: Name
    name: Name | None = Field(
        default=None,
        description="deploying again with the same name changes that deployment (version, "
        "params, target) instead of making another; default: a new one named after the pipe",
    )
    new: bool = Field(default=False, description="always a new deployment, even if name exists")
    version: Version = "latest"
    params: dict[str, Any] = {}
    agents: list[Name] = Field(
        default=[], max_length=10_000, description="agent ids; none: every agent"
    )
    labels: Labels | None = Field(
        default=None,
        description="an agent must carry all of them; default: the pipe's labels; "
        "with neither agents nor labels, every agent is eligible",
    )
    instances: Instances = "all"
    failover: bool = False
    start: bool = True


class DeploymentUpgrade(Model):
    version: Version = "latest"
    params: dict[str, Any] | None = None


class InstanceStatus(Model):
    agent_id: str
    agent_state: AgentState
    state: str = Field(
        description="pending, starting, running, failed, stopped, finished, or refused (the "
        "agent's policy refuses the pipe: error names the rule)"
    )
    error: str | None = None
    hash: str | None = None
    in_sync: bool
    metrics: dict[str, Any] | None = None
    checkpoint: Any = None
    updated_at: Timestamp | None = None


class Deployment(Model):
    id: str
    name: str = Field(default="", description="what a repeated deploy refers to")
    pipe: str
    version: int | Literal["latest"]
    resolved_version: int
    params: dict[str, Any]
    agents: list[str]
    labels: list[str]
    instances: int | Literal["all"]
    failover: bool
    running: bool
    state: str = Field(description="running, degraded, pending, stopped")
    created_at: Timestamp
    updated_at: Timestamp
    created_by: str | None = None
    updated_by: str | None = None
    status: list[InstanceStatus] = []


class DeploymentList(Model):
    deployments: list[Deployment]


# ---------------------------------------------------------------------------- commands
CommandType = Literal["restart", "reset-checkpoint", "capture", "preview"]


class CommandCreate(Model):
    type: CommandType
    agent: str | None = Field(
        default=None, max_length=200, description="default: every agent running it"
    )
    stage: str | None = Field(
        default=None,
        max_length=200,
        description="capture: input, an action index or label, or output",
    )
    limit: int = Field(default=10, ge=1, le=MAX_CAPTURE_EVENTS)


class Command(Model):
    id: str
    agent_id: str
    deployment_id: str
    type: CommandType
    args: dict[str, Any]
    created_at: Timestamp
    acked_at: Timestamp | None
    result: dict[str, Any] | None = None
    issuer: str | None = Field(default=None, description="who sent it")
    expires_at: Timestamp | None = Field(
        default=None,
        description="when the server forgets it, acknowledged or not (an expiry per type: "
        "`pipenb commands expiry`)",
    )


class CommandList(Model):
    commands: list[Command]


class PreviewCreate(Model):
    """A preview on an agent's real data: the pipe's text, run there under its policy."""

    yaml: str = Field(max_length=1_000_000, description="the pipe, as text (not a deployment)")
    params: dict[str, Any] = {}
    limit: int = Field(default=100, ge=1, le=MAX_CAPTURE_EVENTS, description="events at most")
    timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds the input is read at most (the agent bounds both)",
    )


class Preview(Model):
    id: str
    agent_id: str
    state: Literal["pending", "done", "failed", "expired"]
    error: str | None = None
    result: dict[str, Any] | None = Field(
        default=None, description="stages (events and counts), errors, limit, more, total"
    )
    created_at: Timestamp
    expires_at: Timestamp


class CommandExpiry(Model):
    type: CommandType
    pending_seconds: float = Field(description="an unacknowledged command is dropped after")
    kept_seconds: float = Field(description="an acknowledged one (and its result) is kept for")


class CommandExpiryList(Model):
    expiry: list[CommandExpiry]


# ---------------------------------------------------------------------------- metrics and logs
class MetricPoint(Model):
    agent_id: str
    deployment_id: str
    time: Timestamp
    data: dict[str, Any]


class MetricList(Model):
    metrics: list[MetricPoint]


class LogLine(Model):
    agent_id: str
    deployment_id: str | None
    time: Timestamp
    level: str
    message: str


class LogList(Model):
    logs: list[LogLine]


# ---------------------------------------------------------------------------- check-in
class PipeReport(Model):
    deployment_id: DepId
    hash: str = Field(default="", max_length=64)
    state: Literal["starting", "running", "failed", "stopped", "finished", "refused"]
    error: Reported | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: Any = None


class Capture(Model):
    command_id: str = Field(max_length=40)
    events: list[Any] = Field(default=[], max_length=MAX_CAPTURE_EVENTS)
    error: Reported | None = None
    result: dict[str, Any] | None = Field(
        default=None, description="a preview's answer: its stages, events, counts and errors"
    )


class AgentLog(Model):
    time: Timestamp | None = Field(
        default=None,
        description="clamped to the server's clock (no future, no older than the retention)",
    )
    level: str = Field(default="info", max_length=10)
    deployment_id: DepId | None = None
    message: Reported = Field(description=f"cut at {MAX_LOG_MESSAGE} characters")


class SettingsApplied(Model):
    """What an agent applied of the settings the server gave it."""

    version: str | None = Field(default=None, max_length=64)
    refused: dict[str, Annotated[str, Field(max_length=500)]] = Field(
        default={}, max_length=50, description="key -> why this agent's bounds refused it"
    )
    bounds: dict[str, Any] = Field(
        default={}, max_length=50, description="the agent's own bounds (its command line)"
    )


class AgentSettingsSet(Model):
    labels: list[Annotated[str, Field(max_length=200)]] = Field(default=[], max_length=100)
    agent: str | None = Field(default=None, max_length=200)
    values: dict[str, str | float | int | None] = Field(
        max_length=50, description="key -> value; null removes the key (docs/agent.md#settings)"
    )


class AgentSettingsScope(Model):
    scope: str = Field(description="label:NAME or agent:ID")
    values: dict[str, Any]
    updated_at: Timestamp
    updated_by: str | None = None


class AgentSettingsScopeList(Model):
    scopes: list[AgentSettingsScope]


class AgentSettingsView(Model):
    agent_id: str
    values: dict[str, Any] = Field(description="its labels' settings, its own on top")
    version: str
    applied_version: str | None = Field(description="what the agent last said it applied")
    refused: dict[str, str] = Field(description="keys the agent's bounds refused, and why")
    bounds: dict[str, Any] = {}


class CheckinRequest(Model):
    agent_id: str = Field(max_length=200)
    seq: int = Field(
        ge=0, le=MAX_INT64, description="grows by one with each check-in of one agent process"
    )
    full: bool = Field(default=True, description="pipes lists every pipe (else: only changes)")
    attributes: dict[str, Any] | None = None
    pipes: list[PipeReport] = Field(
        default=[],
        max_length=MAX_CHECKIN_PIPES,
        description="reports on deployments not assigned to this agent are ignored",
    )
    acks: list[Annotated[str, Field(max_length=40)]] = Field(
        default=[], max_length=MAX_CHECKIN_ACKS, description="ids of commands carried out"
    )
    captures: list[Capture] = Field(default=[], max_length=MAX_CHECKIN_CAPTURES)
    logs: list[AgentLog] = Field(
        default=[],
        max_length=MAX_CHECKIN_LOGS,
        description="lines of deployments not assigned to this agent are dropped",
    )
    desired_hash: str | None = Field(
        default=None, max_length=128, description="hash of the desired set the agent runs"
    )
    wait: float = Field(
        default=0, ge=0, le=120, description="seconds the server may hold the request"
    )
    leaving: bool = Field(default=False, description="the agent is shutting down")
    settings: SettingsApplied | None = Field(
        default=None, description="the server's settings this agent applied (when they changed)"
    )


class DesiredPipe(Model):
    deployment_id: str
    pipe: str
    version: int
    yaml: str
    params: dict[str, Any]
    builtins: dict[str, Any]
    hash: str
    checkpoint: Any = Field(default=None, description="start from this (failover, reset)")
    checkpoint_seq: int = 0
    files: dict[str, str] = Field(default_factory=dict, description="lookup table files")


class AgentCommand(Model):
    id: str
    type: CommandType
    deployment_id: str
    args: dict[str, Any]


class CheckinResponse(Model):
    seq: int
    desired: list[DesiredPipe]
    desired_hash: str
    commands: list[AgentCommand]
    poll_interval: float
    full_report: bool = Field(default=False, description="send a full report next time")
    labels: list[str] | None = Field(
        default=None, description="the agent's labels (answering a full report)"
    )
    gone: list[str] = Field(
        default=[],
        description="reported deployments that were deleted: the agent may remove their files",
    )
    settings: dict[str, Any] | None = Field(
        default=None, description="the server's settings for this agent (when they changed)"
    )
    settings_version: str | None = Field(default=None, description="their version")


class Health(Model):
    status: Literal["ok"]
    version: str


# ---------------------------------------------------------------------------- users and audit
Role = Literal["viewer", "editor", "admin"]
UserName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")]


class UserCreate(Model):
    name: UserName
    role: Role


class User(Model):
    name: str
    role: Role
    created_at: Timestamp
    tokens: int = Field(default=0, description="tokens neither revoked nor expired")


class UserList(Model):
    users: list[User]


class UserTokenCreate(Model):
    expires_in: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="seconds until it expires"
    )


class UserToken(Model):
    token_id: str
    user: str
    created_at: Timestamp
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None


class UserTokenCreated(Model):
    token_id: str
    user: str
    expires_at: Timestamp | None = None
    token: str = Field(description="shown once; only its hash is stored")


class UserTokenList(Model):
    tokens: list[UserToken]


class WhoAmI(Model):
    name: str
    role: Role
    via: str = Field(description="token, user-token, jupyter or kernel")


class AuditEntry(Model):
    time: Timestamp
    user: str
    role: str
    via: str
    address: str
    method: str
    route: str
    path: str
    object: str | None = None
    status: int


class AuditList(Model):
    entries: list[AuditEntry]


# ---------------------------------------------------------------------------- agent install
class AgentWheel(Model):
    filename: str = Field(description="the wheel's file name, as served at /agent/wheel")
    sha256: str = Field(description="hex SHA-256 the install script checks the download against")
    size: int
    version: str


class AgentInstallInfo(Model):
    """What ``pipenb agents install-command`` builds its line from."""

    version: str = Field(description="this server's pipenb version")
    wheel: AgentWheel | None = Field(description="the served wheel; null: none (--wheel FILE)")
    tls_pin: str | None = Field(
        default=None,
        description="sha256//BASE64 of the server's TLS public key (curl --pinnedpubkey), "
        "when the server serves TLS itself",
    )
