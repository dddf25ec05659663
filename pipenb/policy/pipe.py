"""What a rendered pipe asks of the host, and the one check of it against a policy.

``check_pipe`` is shared: the server runs it at deploy time against the policy the target agent
reported (and marks the instance ``refused`` with the message), and the worker runs it before it
starts a pipe against its own policy (the server is not trusted). Both see the same message,
e.g. ``files path /etc/shadow is outside this agent's read policy: /var/log/**``.

A check here is on the pipe as written. What only the host can tell (where a symlink leads,
which address a name resolves to, which file ``df`` is on the PATH) is checked again where the
file or socket is opened (``guard.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipenb.policy.model import Policy
from pipenb.policy.rules import (
    SECRET_GLOBS,
    absolute,
    code_env,
    command_argv,
    endpoint_allowed,
    glob_matches,
    has_wildcards,
    program_allowed,
    show_address,
    under,
)


@dataclass(frozen=True)
class Access:
    """One thing a pipe asks for: ``rule`` (read, write, connect, listen, exec, scripts), the
    ``target`` (a path, a ``host:port``, a command) and ``what`` asks (``files path``)."""

    rule: str
    what: str
    target: Any


def _files(o: Any) -> list[Access]:
    return [Access("read", "files path", g) for g in o.globs]


def _dataset(o: Any) -> list[Access]:
    """A local path is read whole (``PATH/**``); a URL (``s3://``) is
    fetched by its file system's package: a connection, checked as one."""
    path = str(o.path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) and not path.startswith("file://"):
        return [Access("connect", "dataset url", path)]
    local = path[len("file://") :] if path.startswith("file://") else path
    # checked where the pipe is placed, not on the agent's host: whatever is under the path
    # (the worker checks each file it opens, symlinks resolved)
    return [Access("read", "dataset path", local.rstrip("/") + "/**")]


def _file(o: Any) -> list[Access]:
    return [Access("write", "file path", o.path)]


def _url(name: str) -> Callable[[Any], list[Access]]:
    return lambda o: [Access("connect", f"{name} url", o.url)]


def _remote(name: str) -> Callable[[Any], list[Access]]:
    return lambda o: [Access("connect", f"{name} address", o.address)]


def _listen(name: str) -> Callable[[Any], list[Access]]:
    return lambda o: [Access("listen", f"{name} address", o.address)]


def _exec(o: Any) -> list[Access]:
    return [Access("exec", "exec command", (o.command, dict(o.env or {})))]


def _script(o: Any) -> list[Access]:
    out = [Access("scripts", "script action", None)]
    if getattr(o, "file", None):
        out.append(Access("read", "script file", o.file))
    return out


def _with_tls(check: Callable[[Any], list[Access]], name: str) -> Callable[[Any], list[Access]]:
    """``check``, plus reading the files of the component's ``tls:`` options."""

    def both(o: Any) -> list[Access]:
        out = check(o)
        tls = getattr(o, "tls", None)
        for key in ("cert", "key", "client_ca", "ca_file"):
            path = getattr(tls, key, None) if tls is not None else None
            if path:
                out.append(Access("read", f"{name} tls {key.replace('_', '-')}", path))
        return out

    return both


#: (kind, name) -> what that component asks of the host. Components not listed touch nothing
#: on the host (tests/agent/test_policy.py holds the list of those, so a new one is not forgotten).
COMPONENTS: dict[tuple[str, str], Callable[[Any], list[Access]]] = {
    ("input", "files"): _files,
    ("input", "dataset"): _dataset,
    ("input", "exec"): _exec,
    ("input", "http-poll"): _with_tls(_url("http-poll"), "http-poll"),
    ("input", "http-server"): _with_tls(_listen("http-server"), "http-server"),
    ("input", "tcp"): _with_tls(_listen("tcp"), "tcp"),
    ("input", "udp"): _listen("udp"),
    ("output", "file"): _file,
    ("output", "http-post"): _with_tls(_url("http-post"), "http-post"),
    ("output", "tcp"): _with_tls(_remote("tcp"), "tcp"),
    ("output", "syslog"): _with_tls(_remote("syslog"), "syslog"),
    ("output", "udp"): _remote("udp"),
    ("action", "script"): _script,
}


def accesses(spec: Any) -> list[Access]:
    """Everything ``spec`` (a rendered PipeSpec) asks of the host, in pipe order."""
    parts = [("input", spec.input), *(("action", a) for a in spec.actions)]
    for route in getattr(spec, "routes", None) or ():  # outputs: each output's own actions
        parts.extend(("action", a) for a in route.actions)
    parts.extend(("output", o) for o in getattr(spec, "all_outputs", None) or [spec.output])
    if spec.errors is not None:
        parts.append(("output", spec.errors))
    out: list[Access] = []
    for kind, c in parts:
        fn = COMPONENTS.get((kind, c.name))
        if fn is not None:
            out.extend(fn(c.options))
    return out


def check_pipe(spec: Any, policy: Policy) -> list[str]:
    """Why ``policy`` refuses ``spec``: one message per refused access (empty: allowed)."""
    return [m for a in accesses(spec) if (m := check_access(a, policy)) is not None]


def check_access(a: Access, policy: Policy) -> str | None:
    return _CHECKS[a.rule](a, policy)


# ------------------------------------------------------------------------------ the rules


def protected_reason(
    path: str, policy: Policy, verb: str, pattern: str | None = None
) -> str | None:
    """The message when ``path`` (absolute, normalised or real) is a path no pipe may touch;
    ``pattern``: the glob ``path`` is the fixed start of (at deploy time)."""
    if any(under(path, h) for h in policy.holes):
        return None
    roots = list(policy.protected.items())
    if verb == "write":
        roots += policy.unwritable.items()
    for root, what in roots:
        if under(path, root):
            return f"is inside {what} ({root}), which no pipe may {verb} whatever the policy says"
    for secret in SECRET_GLOBS:
        if glob_matches(secret, pattern or path, static=True):
            return (
                f"matches {secret} (processes' secrets and keys), which no pipe may {verb} "
                "whatever the policy says"
            )
    return None


def read_reason(path: str, policy: Policy, static: bool = False) -> str | None:
    if static:
        why = protected_reason(_literal_dir(path), policy, "read", pattern=path)
    else:
        why = protected_reason(path, policy, "read")
    if why is not None:
        return why
    if not any(glob_matches(g, path, static) for g in policy.read):
        return f"is outside this agent's read policy: {policy.rule_text('read')}"
    return None


def write_reason(path: str, policy: Policy) -> str | None:
    why = protected_reason(path, policy, "write")
    if why is not None:
        return why
    if not any(under(path, d) for d in policy.write):
        return f"is outside this agent's write policy: {policy.rule_text('write')}"
    return None


def _literal_dir(pattern: str) -> str:
    """The longest leading part of a glob without wildcards (``/var/log/app`` of ``.../*.log``)."""
    if not has_wildcards(pattern):
        return pattern
    head = []
    for part in pattern.split("/"):
        if has_wildcards(part):
            break
        head.append(part)
    return "/".join(head) or "/"


def _read(a: Access, policy: Policy) -> str | None:
    path = absolute(a.target)
    if not path.startswith("/"):
        return f"{a.what} {a.target} must be an absolute path on an agent"
    why = read_reason(path, policy, static=True)
    return None if why is None else f"{a.what} {path} {why}"


def _write(a: Access, policy: Policy) -> str | None:
    from pipenb.lang.templates import FIELD_REF

    # ${field} parts become one path segment each (their values cannot hold a '/')
    path = absolute(FIELD_REF.sub("_", a.target))
    if not path.startswith("/"):
        return f"{a.what} {a.target} must be an absolute path on an agent"
    why = write_reason(path, policy)
    return None if why is None else f"{a.what} {a.target} {why}"


def split_url(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return (u.hostname or ""), port


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port) if port.isdigit() else 0


def _connect(a: Access, policy: Policy) -> str | None:
    if a.what.endswith(" url"):
        host, port = split_url(a.target)
    else:
        host, port = split_address(a.target)
    if endpoint_allowed(policy.connect, host, port) is False:
        return connect_message(a.what, a.target, host, port, None, policy)
    return None


def connect_message(
    what: str, target: str, host: str, port: int, ip: str | None, policy: Policy
) -> str:
    via = f" (address {ip})" if ip is not None and ip != host else ""
    return (
        f"{what} {target} connects to {show_address(host, port)}{via}, outside this agent's "
        f"connect policy: {policy.rule_text('connect')}"
    )


def listen_host(host: str) -> str:
    return host or "0.0.0.0"


def _listen_check(a: Access, policy: Policy) -> str | None:
    host, port = split_address(a.target)
    host = listen_host(host)
    if endpoint_allowed(policy.listen, host, port or None) is False:
        return listen_message(a.what, host, port or None, policy)
    return None


def listen_message(what: str, host: str, port: int | None, policy: Policy) -> str:
    return (
        f"{what} {show_address(host, port)} is outside this agent's listen policy: "
        f"{policy.rule_text('listen')}"
    )


def _exec_check(a: Access, policy: Policy) -> str | None:
    command, env = a.target
    shown = command if isinstance(command, str) else " ".join(command)
    if policy.exec == "off":
        return (
            f"{a.what} {shown!r} is refused: this agent's exec policy is off "
            "(exec: in its --policy file, or --allow-exec)"
        )
    if policy.exec == "any":
        return None
    argv = command_argv(command)
    allowed = policy.rule_text("exec")
    if argv is None:
        return (
            f"{a.what} {shown!r} is a shell command line, which this agent's exec policy "
            f"({allowed}) does not allow; give the command as a list: [program, args...]"
        )
    if not program_allowed(tuple(policy.exec), argv[0]):
        return f"{a.what} {argv[0]!r} is not in this agent's exec policy: {allowed}"
    bad = code_env(env)
    if bad:
        return (
            f"{a.what} {shown!r} sets {', '.join(bad)}, which would change the program that "
            f"runs; this agent's exec policy ({allowed}) does not allow that"
        )
    return None


def _scripts(a: Access, policy: Policy) -> str | None:
    if policy.scripts:
        return None
    return (
        f"the {a.what} is refused: this agent's scripts policy is off "
        "(scripts: true in its --policy file, or --allow-scripts)"
    )


_CHECKS: dict[str, Callable[[Access, Policy], str | None]] = {
    "read": _read,
    "write": _write,
    "connect": _connect,
    "listen": _listen_check,
    "exec": _exec_check,
    "scripts": _scripts,
}
