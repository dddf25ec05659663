"""Who is calling, and what their role lets them do: one place for both.

Three roles, each allowed what the one before it is:

- ``viewer`` reads everything (pipes, agents, deployments, metrics, logs, the audit trail);
  secret parameters are never returned to anyone;
- ``editor`` also pushes pipes, deploys, starts, stops, upgrades, sends commands (taps, restarts);
- ``admin`` also manages agents, their keys, enrollment tokens and users.

An operation's required role is declared with ``@api(role=...)``; without it, reads need
``viewer`` and writes ``editor``. The auth matrix test walks the route table with this rule, so
a new route cannot escape it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

ROLES = ("viewer", "editor", "admin")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """A caller of user endpoints: a name for the audit trail, a role, and how they signed in
    (``token`` for the server's own admin token, ``user-token`` for a user's token,
    ``jupyter`` for a Jupyter identity, ``kernel`` for a Jupyter kernel's scoped token)."""

    name: str
    role: str
    via: str = "token"


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def allows(role: str, needed: str) -> bool:
    return rank(role) >= rank(needed) >= 0


def needed_role(method: str, declared: str | None) -> str:
    return declared or ("viewer" if method.upper() in READ_METHODS else "editor")


#: The caller of the request being served, for services that record an author (pipe versions,
#: deployments, commands). Set by the base handler once the caller is known; tornado runs
#: ``prepare`` and the handler method in one task, so the value is the request's own.
current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "pipenb_principal", default=None
)


def current_name() -> str | None:
    p = current.get()
    return p.name if p is not None else None
