"""The ``Guard``: the policy checked where a file or socket is opened, in the worker.

An agent's worker puts a Guard in the pipe's ``RunContext`` (``ctx.guard``); components that touch
the host call it just before (and, for files, just after) they open something. ``pipenb run`` and
previews have no guard (``ctx.guard is None``): there the user runs pipes on their own machine.

Paths are checked after every symlink is resolved, and an opened file is checked again by the
path its descriptor really has (``/proc/self/fd``), so a symlink swapped in between is caught
too. Addresses are checked after name resolution, and the socket connects to the address that
was checked. A refusal raises ``PolicyError`` naming the rule; the agent reports the pipe
``refused`` with that message.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from pipenb.errors import PolicyError
from pipenb.policy.model import Policy
from pipenb.policy.pipe import (
    Access,
    check_access,
    connect_message,
    listen_message,
    read_reason,
    write_reason,
)
from pipenb.policy.rules import absolute, endpoint_allowed, real, resolve_program


class Guard:
    def __init__(self, policy: Policy):
        protected = dict(policy.protected)
        # memory, environment and command line (keys given as flags) of the agent and worker
        protected.setdefault(real(f"/proc/{os.getppid()}"), "the agent's process")
        protected.setdefault(real(f"/proc/{os.getpid()}"), "this worker's process")
        self.policy = replace(policy, protected=protected)

    # ------------------------------------------------------------------ files
    def read(self, path: str, what: str) -> str:
        """The real path of ``path`` if a pipe may read it; PolicyError if not."""
        rp = real(path)
        why = read_reason(rp, self.policy)
        if why is not None:
            raise PolicyError(f"{what} {_shown(path, rp)} {why}", "read")
        return rp

    def write(self, path: str, what: str) -> str:
        """The real path of ``path`` (it may not exist yet) if a pipe may write it."""
        rp = real(path)
        why = write_reason(rp, self.policy)
        if why is not None:
            raise PolicyError(f"{what} {_shown(path, rp)} {why}", "write")
        return rp

    def opened(self, fh: Any, path: str, what: str, rule: str) -> None:
        """Check the file a descriptor really refers to; close it and raise if refused."""
        try:
            rp = os.readlink(f"/proc/self/fd/{fh.fileno()}")
        except OSError:  # no /proc: the check before opening is what we have
            return
        why = (read_reason if rule == "read" else write_reason)(rp, self.policy)
        if why is not None:
            fh.close()
            raise PolicyError(f"{what} {_shown(path, rp)} {why}", rule)

    # ------------------------------------------------------------------ sockets
    def connect(self, what: str, target: str, host: str, port: int, ip: str) -> None:
        if endpoint_allowed(self.policy.connect, host, port, ip) is not True:
            raise PolicyError(connect_message(what, target, host, port, ip, self.policy), "connect")

    def listen(self, what: str, host: str, port: int | None, ip: str | None = None) -> None:
        """``port=None``: the host alone (port 0, checked again once bound)."""
        if endpoint_allowed(self.policy.listen, host, port, ip) is not True:
            raise PolicyError(listen_message(what, ip or host, port, self.policy), "listen")

    # ------------------------------------------------------------------ code
    def exec(self, what: str, command: str | list[str], env: dict[str, str] | None) -> None:
        """Refuse a command the policy does not allow, and an allowed name that resolves, on
        the PATH the command would run with, to another file than on the agent's own PATH."""
        why = check_access(Access("exec", what, (command, dict(env or {}))), self.policy)
        if why is not None:
            raise PolicyError(why, "exec")
        if self.policy.exec == "any" or not isinstance(self.policy.exec, tuple):
            return
        from pipenb.policy.rules import command_argv

        argv = command_argv(command) or [""]
        program = argv[0]
        path_env = os.environ.get("PATH", os.defpath)
        got = real(program) if "/" in program else resolve_program(program, path_env)
        want = {real(a) if "/" in a else resolve_program(a, path_env) for a in self.policy.exec}
        if got is None or got not in want:
            raise PolicyError(
                f"{what} {program!r} resolves to {got or 'nothing on the PATH'}, not a program "
                f"this agent's exec policy allows: {self.policy.rule_text('exec')}",
                "exec",
            )

    def script(self) -> None:
        why = check_access(Access("scripts", "script action", None), self.policy)
        if why is not None:
            raise PolicyError(why, "scripts")


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for what a pipe runs: ``PIPENB_*`` settings (keys) left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    env.update(extra or {})
    return env


def _shown(path: str, rp: str) -> str:
    """``path``, and where it really leads when a symlink (or ``..``) takes it elsewhere."""
    return path if absolute(path) == rp else f"{path} (resolves to {rp})"
