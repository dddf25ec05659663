"""Short sentences about a deployment for people: why it is pending, what failed lately.

The CLI, the magics and the dashboard all say these the same way, so they live in one place.
"""

from __future__ import annotations

from typing import Any


def no_match(dep: dict[str, Any]) -> str | None:
    """ "no agent matches labels [x]" when a running deployment is placed nowhere, else None.

    A deployment whose target matches no agent is accepted (an agent may come later) but would
    otherwise stay "pending" without a word of why.
    """
    if dep.get("status") or not dep.get("running", True):
        return None
    parts = []
    if dep.get("agents"):
        parts.append("agents [" + ", ".join(dep["agents"]) + "]")
    if dep.get("labels"):
        parts.append("labels [" + ", ".join(dep["labels"]) + "]")
    if not parts:
        return "no agent is known to the server yet"
    return "no agent matches " + " and ".join(parts)


def recent_errors(logs: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """The newest warning and error lines of a deployment's logs, newest last."""
    bad = [x for x in logs if str(x.get("level", "")).lower() in ("warning", "warn", "error")]
    return [f"{x.get('time', '')} {x.get('agent_id', '')}: {x.get('message', '')}" for x in bad][
        -limit:
    ]


def located(detail: dict[str, Any]) -> str:
    """One problem of an error's details as ``file:line:column: message`` (``file: message``
    when the server could not place it: ``:0:0`` says nothing)."""
    where = str(detail.get("file") or "<pipe>")
    line, column = detail.get("line") or 0, detail.get("column") or 0
    if line:
        where += f":{line}:{column}"
    return f"{where}: {detail.get('message', '')}"


def api_problem_lines(message: str, code: str, details: list[Any]) -> list[str]:
    """An API error for people: the message once, then each located problem once.

    The server's message for an invalid pipe repeats its first problem (for clients that show
    only the message); shown above the list of problems, it would say it twice.
    """
    problems = [d for d in details if isinstance(d, dict) and "line" in d and "message" in d]
    if problems and code == "invalid_pipe":
        message = f"the pipe has {len(problems)} problem(s):"
    return [message, *(located(d) for d in problems)]
