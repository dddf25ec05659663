"""The check-in messages between an agent and the server: their fields, states and limits.

Why a module of its own, with nothing but the standard library: the agent builds these messages
and the server checks them, and the agent must not load pydantic or anything of the server's
(its module tree stays small: ``tests/agent/test_agent_e2e.py`` checks that). So the shapes are
declared here once, as ``TypedDict``s that mypy checks on the agent's side, with the pipe states
and the limits both sides use. The server's pydantic models (``pipenb/server/models.py``) import
the states and the limits from here and add validation (lengths, clamping, descriptions for the
OpenAPI document); ``tests/test_guards.py`` fails when a model and its shape name different
fields or disagree on which are required, and validates bodies built by the agent's own code
against the server's models.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# -- limits of one check-in (the server answers 400 past them; the agent sends no more)
MAX_CHECKIN_PIPES = 1000
MAX_CHECKIN_LOGS = 1000
MAX_CHECKIN_CAPTURES = 100
MAX_CHECKIN_ACKS = 1000
MAX_CAPTURE_EVENTS = 10_000
MAX_LOG_MESSAGE = 10_000  # characters kept of a log line or an error; the rest is cut

#: What a worker's pipe can be doing, as the agent reports it.
PipeState = Literal["starting", "running", "failed", "stopped", "finished", "refused"]


class PipeReportBody(TypedDict):
    """One deployed pipe on this agent."""

    deployment_id: str
    hash: str
    state: PipeState
    error: str | None
    metrics: dict[str, Any] | None  # None in an incremental report: nothing new
    checkpoint: Any


class _CaptureKey(TypedDict):
    command_id: str


class CaptureBody(_CaptureKey, total=False):
    """The answer to a tap or a preview command."""

    events: list[Any]
    error: str | None
    result: dict[str, Any] | None  # a preview's stages, events, counts and errors


class _LogMessage(TypedDict):
    message: str


class LogBody(_LogMessage, total=False):
    """One line of the agent's or a pipe's log."""

    time: str | None  # ISO 8601; the server clamps it to its own clock
    level: str
    deployment_id: str | None


class SettingsAppliedBody(TypedDict, total=False):
    """What the agent applied of the settings the server gave it."""

    version: str | None
    refused: dict[str, str]  # key -> why this agent's own bounds refused it
    bounds: dict[str, Any]  # the agent's bounds (its command line)


class _CheckinKeys(TypedDict):
    agent_id: str
    seq: int  # grows by one with each check-in of one agent process


class CheckinBody(_CheckinKeys, total=False):
    """What an agent sends with each check-in (``POST /agent/checkin``)."""

    full: bool  # pipes lists every pipe (else only what changed)
    attributes: dict[str, Any] | None
    pipes: list[PipeReportBody]
    acks: list[str]  # ids of commands carried out
    captures: list[CaptureBody]
    logs: list[LogBody]
    desired_hash: str | None
    wait: float  # seconds the server may hold the request
    leaving: bool  # the agent is shutting down
    settings: SettingsAppliedBody | None


class _DesiredKeys(TypedDict):
    deployment_id: str
    pipe: str
    version: int
    yaml: str
    params: dict[str, Any]
    builtins: dict[str, Any]
    hash: str


class DesiredPipeBody(_DesiredKeys, total=False):
    """One pipe the server wants this agent to run."""

    checkpoint: Any  # start from this (failover, reset)
    checkpoint_seq: int
    files: dict[str, str]  # lookup table files


class AgentCommandBody(TypedDict):
    """Something the server asks the agent to do once (tap, preview, reset...)."""

    id: str
    type: str
    deployment_id: str
    args: dict[str, Any]


class _AnswerKeys(TypedDict):
    seq: int
    desired: list[DesiredPipeBody]
    desired_hash: str
    commands: list[AgentCommandBody]
    poll_interval: float


class CheckinAnswer(_AnswerKeys, total=False):
    """The server's answer to a check-in."""

    full_report: bool  # send a full report next time
    labels: list[str] | None  # the agent's labels (answering a full report)
    gone: list[str]  # reported deployments that were deleted
    settings: dict[str, Any] | None  # the server's settings for this agent, when they changed
    settings_version: str | None


#: Each shape and the name of the server's model that checks it (``pipenb.server.models``).
SHAPES: dict[str, type] = {
    "CheckinRequest": CheckinBody,
    "PipeReport": PipeReportBody,
    "Capture": CaptureBody,
    "AgentLog": LogBody,
    "SettingsApplied": SettingsAppliedBody,
    "CheckinResponse": CheckinAnswer,
    "DesiredPipe": DesiredPipeBody,
    "AgentCommand": AgentCommandBody,
}
