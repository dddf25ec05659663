"""The pipenb exception tree, in one place so callers can catch exactly what they mean.

PipenbError                 root of everything pipenb raises on purpose
├── PipeSyntaxError         a pipe document is invalid; ``.problems`` lists every located one
├── PipeRuntimeError        a pipe could not start or run (an input could not open, ...)
│   ├── PolicyError         the agent's policy refuses what the pipe asks (a path, a socket)
│   └── RetryableOutputError  an output failed in a way that may pass; the engine retries
├── EventError              one event failed one action; it goes to ``errors:``, never fatal
├── PipeTestFailure         a pipe's ``tests:`` section did not pass
├── ApiError                the server answered with an error (status, code, message, details)
│   ├── AuthError           401/403: missing, wrong or out-of-scope credentials
│   └── ServerError         an agent's request failed: an error answer, or none (status 0)
├── AgentError              the agent cannot go on (how it was started, enrollment refused)
│   └── AgentTurnedAway     the server removed the agent or revoked its key
└── UsageError              a command line or API call was used wrongly

The agent's errors carry the exit code ``pipenb agent`` ends with (``exit_code``): library code
raises them, and only the command line turns them into an exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PipenbError(Exception):
    """Root of every error pipenb raises deliberately."""


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem in a pipe document: where it is, what is wrong, how to fix it."""

    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str
    path: tuple[Any, ...] = field(default=(), compare=False)
    file: str = field(default="<pipe>", compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": ".".join(str(p) for p in self.path),
            "message": self.message,
        }


class PipeSyntaxError(PipenbError):
    """A pipe document is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid pipe")


class PipeRuntimeError(PipenbError):
    """A pipe could not start or keep running (an input could not open, an output failed)."""


class RetryableOutputError(PipeRuntimeError):
    """An output failed in a way worth retrying (connection refused, 503, disk full): the
    engine writes the same batch again, with backoff, and holds the input back meanwhile."""


class PolicyError(PipeRuntimeError):
    """The worker host's policy refuses what a pipe asks for. ``rule`` names the rule
    (``read``, ``write``, ``connect``, ``listen``, ``exec``, ``scripts``, ``protected``); the
    agent reports the pipe ``refused`` with the message and never restarts it."""

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


class EventError(PipenbError):
    """One event failed one action. The engine sends it to ``errors:`` and goes on."""


class PipeTestFailure(PipenbError):
    """A pipe's own ``tests:`` did not pass."""


class UsageError(PipenbError):
    """A command or API was called with arguments that cannot work."""


class ApiError(PipenbError):
    """The server answered with an error body ``{"error": {code, message, details}}``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(f"{status} {code}: {message}")


class AuthError(ApiError):
    """Credentials were missing, wrong, or do not reach the data asked for."""


class ServerError(ApiError):
    """An agent's request to the server failed: an error answer, or none (``status`` 0).

    ``code``: the API's error code (``agent_removed``, ``key_revoked``, ...). ``tls``: the link
    itself is wrong (certificate, pin, http/https mismatch), which waiting alone will not mend;
    the agent still retries, since the server's side may be fixed. ``retry_after``: the seconds
    the server asked for (429, 503), if any.
    """

    def __init__(
        self,
        status: int,
        message: str,
        retry_after: float | None = None,
        code: str = "",
        *,
        tls: bool = False,
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after
        self.tls = tls
        # the agent logs these as one line: "503: message", or the message alone when unreached
        self.args = (f"{status}: {message}" if status else message,)


class AgentError(PipenbError):
    """The agent cannot go on: the message says why and what to do. ``pipenb agent`` prints it
    and exits with ``exit_code``."""

    exit_code = 1


class AgentTurnedAway(AgentError):
    """The server turned this agent away for good (removed, or its key revoked). The reason
    is in the agent's log already; ``pipenb agent`` exits 3, so a supervisor need not restart
    it."""

    exit_code = 3
