"""What crosses the HTTP API, as pydantic models. Storage rows are converted in ``convert.py``.

These models are also the OpenAPI document's schemas, so the document cannot drift from what
the handlers accept and return.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer


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


#: Text that is stored: no NUL characters, whatever the database.
Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
DepId = Annotated[str, Field(min_length=1, max_length=40)]
Label = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Instances = Annotated[int, Field(ge=1)] | Literal["all"]


# ---------------------------------------------------------------------------- errors
class ErrorDetail(Model):
    code: str
    message: str
    details: list[Any] = []


class ErrorBody(Model):
    error: ErrorDetail


# ---------------------------------------------------------------------------- pipes
class PipePush(Model):
    yaml: Text = Field(description="the pipe document")
    message: Text = ""


class PipeVersion(Model):
    pipe: str
    version: int
    hash: str
    message: str
    created_at: Timestamp
    yaml: str | None = None


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
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
    name: Name | None = None
    labels: list[Label] = []


class AgentUpdate(Model):
    name: Name | None = None
    labels: list[Label] | None = None


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


class AgentList(Model):
    agents: list[Agent]


class ApiKey(Model):
    key_id: str
    agent_id: str
    created_at: Timestamp
    revoked_at: Timestamp | None = None


class ApiKeyCreated(Model):
    key_id: str
    agent_id: str
    api_key: str = Field(description="shown once; only its hash is stored")


class ApiKeyList(Model):
    keys: list[ApiKey]


class EnrollRequest(Model):
    enroll_key: str
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
    name: Name | None = None
    labels: list[Label] = []
    attributes: dict[str, Any] = {}


class EnrollResult(Model):
    agent_id: str
    key_id: str
    api_key: str


# ---------------------------------------------------------------------------- deployments
class DeploymentCreate(Model):
    pipe: Name
    name: Name | None = Field(
        default=None,
        description="deploying again with the same name changes that deployment (version, "
        "params, target) instead of making another; default: a new one named after the pipe",
    )
    new: bool = Field(default=False, description="always a new deployment, even if name exists")
    version: Annotated[int, Field(ge=1)] | Literal["latest"] = "latest"
    params: dict[str, Any] = {}
    agents: list[Name] = Field(default=[], description="agent ids; none: every agent")
    labels: list[Label] | None = Field(
        default=None,
        description="an agent must carry all of them; default: the pipe's labels; "
        "with neither agents nor labels, every agent is eligible",
    )
    instances: Instances = "all"
    failover: bool = False
    start: bool = True


class DeploymentUpgrade(Model):
    version: Annotated[int, Field(ge=1)] | Literal["latest"] = "latest"
    params: dict[str, Any] | None = None


class InstanceStatus(Model):
    agent_id: str
    agent_state: AgentState
    state: str = Field(description="pending, starting, running, failed, stopped, finished")
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
    status: list[InstanceStatus] = []


class DeploymentList(Model):
    deployments: list[Deployment]


# ---------------------------------------------------------------------------- commands
CommandType = Literal["restart", "reset-checkpoint", "capture"]


class CommandCreate(Model):
    type: CommandType
    agent: str | None = Field(default=None, description="default: every agent running it")
    stage: str | None = Field(
        default=None, description="capture: input, an action index or label, or output"
    )
    limit: int = Field(default=10, ge=1, le=10000)


class Command(Model):
    id: str
    agent_id: str
    deployment_id: str
    type: CommandType
    args: dict[str, Any]
    created_at: Timestamp
    acked_at: Timestamp | None
    result: dict[str, Any] | None = None


class CommandList(Model):
    commands: list[Command]


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
    state: Literal["starting", "running", "failed", "stopped", "finished"]
    error: Text | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: Any = None


class Capture(Model):
    command_id: str = Field(max_length=40)
    events: list[Any] = []
    error: Text | None = None


class AgentLog(Model):
    time: Timestamp | None = None
    level: str = Field(default="info", max_length=10)
    deployment_id: DepId | None = None
    message: Text


class CheckinRequest(Model):
    agent_id: str
    seq: int = Field(ge=0, description="grows by one with each check-in of one agent process")
    full: bool = Field(default=True, description="pipes lists every pipe (else: only changes)")
    attributes: dict[str, Any] | None = None
    pipes: list[PipeReport] = []
    acks: list[str] = Field(default=[], description="ids of commands carried out")
    captures: list[Capture] = []
    logs: list[AgentLog] = []
    desired_hash: str | None = Field(
        default=None, description="hash of the desired set the agent runs"
    )
    wait: float = Field(
        default=0, ge=0, le=120, description="seconds the server may hold the request"
    )
    leaving: bool = Field(default=False, description="the agent is shutting down")


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


class Health(Model):
    status: Literal["ok"]
    version: str
