"""The matching behind a policy: path globs, directories, ``host:port`` patterns, commands.

Pure functions on strings (the server calls them without touching the host) plus
``protected_paths``, which asks the running interpreter where it lives.

Globs: ``**`` matches anything (``/`` included), ``*`` anything within one path segment, ``?``
one character, ``[abc]`` / ``[!abc]`` a class. ``static=True`` is for matching a *pipe's* glob
(``/var/log/app/*.log``) at deploy time, where the pipe's wildcards are characters: a policy
``?`` or class never matches one, so ``/var/log/?.log`` does not cover ``/var/log/*.log``.

Endpoints: ``host:port``; host is ``*``, an IP (``[::1]`` for IPv6), a network
(``10.0.0.0/8``, ``[fd00::]/8``) or a host name glob (``*.example.com``); port is ``*``, ``N``
or ``N-M``. A connection matches by the host name as the pipe wrote it, or by the address it
actually reached.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

_META = "*?["


# ------------------------------------------------------------------------------ paths


@lru_cache(maxsize=512)
def glob_regex(pattern: str, static: bool = False) -> re.Pattern[str]:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/*?\\[\\]]" if static else "[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                neg = body.startswith("!")
                body = body[1:] if neg else body
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                if neg:
                    out.append(f"[^/{body}" + ("*?\\[\\]" if static else "") + "]")
                else:
                    out.append(f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_matches(pattern: str, path: str, static: bool = False) -> bool:
    return glob_regex(pattern, static).match(path) is not None


def has_wildcards(path: str) -> bool:
    return any(c in path for c in _META)


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute, normalised)."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root.rstrip("/") + "/")


def absolute(path: str) -> str:
    """Normalised absolute form of a path as written (``..`` folded, no symlinks resolved)."""
    return os.path.normpath(os.path.join("/", path)) if path.startswith("/") else path


def real(path: str) -> str:
    """The path with every symlink resolved (what the kernel would open)."""
    return os.path.realpath(path)


#: the host's own credential stores: a policy that allows ``/**`` still does not reach them
HOST_SECRETS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/root/.ssh",
    "/proc/kcore",
)

#: what any process keeps secret (keys given as flags or variables), wherever it runs
SECRET_GLOBS = (
    "/proc/*/environ",
    "/proc/*/cmdline",
    "/proc/*/mem",
    "/proc/*/task/*/environ",
    "/proc/*/task/*/cmdline",
    "/proc/*/task/*/mem",
    "/home/*/.ssh/**",
)


def protected_paths(
    data_dir: str, policy_file: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Paths no pipe may read or write, and paths no pipe may write, whatever the policy says,
    each with what it is.

    The agent's data dir holds its key (``identity.json``), desired pipes and checkpoints; the
    Python installation holds the code the next worker runs (a ``.pth`` written to site-packages
    runs as the agent's user at the next start); the host's credential stores (``/etc/shadow``, SSH keys) are no pipe's
    business. The other directories on ``sys.path`` (``PYTHONPATH``, an editable install's
    source tree) may be read where the policy allows, never written: a ``sitecustomize.py`` or
    a module of a shadowing name there would run too.
    """
    import site
    import sysconfig

    out: dict[str, str] = {}
    code: dict[str, str] = {}

    def add(path: str | None, what: str, into: dict[str, str] = out) -> None:
        if path:
            rp = real(path)
            if rp != "/" and rp not in out:
                into.setdefault(rp, what)

    add(data_dir, "the agent's own data dir")
    if policy_file:
        add(policy_file, "the agent's policy file")
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        add(p, "the Python installation")
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        add(sysconfig.get_paths().get(name), "the Python installation")
    try:
        for p in site.getsitepackages():
            add(p, "the Python installation's site-packages")
        add(site.getusersitepackages(), "the user's site-packages")
    except AttributeError:  # pragma: no cover - a virtualenv's old site.py
        pass
    import pipenb

    add(os.path.dirname(pipenb.__file__), "the pipenb package")
    paths = list(sys.path)
    # sys.flags.safe_path (-P) is Python 3.11's: on 3.10 workers start without -P (see
    # pipenb.agent.supervisor) and the attribute does not exist
    safe_path = getattr(sys.flags, "safe_path", False)
    if paths and paths[0] in ("", os.getcwd()) and not safe_path:
        paths = paths[1:]  # the agent's working directory: workers start without it (-P)
    paths += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    import glob

    for p in (*HOST_SECRETS, os.path.expanduser("~/.ssh"), *glob.glob("/home/*/.ssh")):
        add(p, "the host's credentials")
    for p in paths:
        if p and os.path.exists(p):
            add(p, "a directory Python imports code from", code)
    return out, code


# ------------------------------------------------------------------------------ endpoints


@dataclass(frozen=True)
class Endpoint:
    """One ``host:port`` pattern of a connect or listen rule."""

    text: str
    host: str  # "*", a name glob, or "" when ``net`` is set
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    lo: int
    hi: int

    def port_ok(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def host_ok(self, host: str, ip: str | None) -> bool | None:
        """True or False; None when only the address the name resolves to can tell."""
        if self.host == "*":
            return True
        if self.net is not None:
            addr = ip if ip is not None else (host if is_ip(host) else None)
            if addr is None:
                return None
            try:
                return ipaddress.ip_address(addr.split("%", 1)[0]) in self.net
            except ValueError:
                return False
        return fnmatch.fnmatchcase(host.lower(), self.host)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def parse_endpoint(text: str) -> Endpoint:
    """``host:port`` as in the module docstring; ValueError says what is wrong and how to write it."""
    s = text.strip()
    if s in ("*", "any"):
        return Endpoint(s, "*", None, 0, 65535)
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ValueError(
            f"{text!r} is not host:port (write 127.0.0.1:8080, *.example.com:443, 10.0.0.0/8:*, "
            "[::1]:*, *:1024-65535)"
        )
    net = None
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host = inner + rest  # [fd00::]/8 -> fd00::/8
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [{host}]:port")
    if host != "*":
        try:
            net = ipaddress.ip_network(host, strict=False)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*?.\-_]+", host):
                raise ValueError(
                    f"{text!r}: {host!r} is not a host name, an address or a network"
                ) from None
    if port == "*":
        lo, hi = 0, 65535
    else:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", port)
        if not m:
            raise ValueError(f"{text!r}: the port must be *, a number or a range like 8000-8999")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if hi > 65535 or lo > hi:
            raise ValueError(f"{text!r}: ports go from 0 to 65535, low to high")
    return Endpoint(s, "" if net is not None else host.lower(), net, lo, hi)


def endpoint_allowed(
    patterns: tuple[str, ...], host: str, port: int | None, ip: str | None = None
) -> bool | None:
    """Whether ``host:port`` (reaching ``ip``, when known) matches one of ``patterns``.

    ``port=None`` checks the host alone (a listener on port 0, whose port is known once bound).
    None: no pattern matches by name and only the resolved address can tell (deploy time).
    """
    unknown = False
    for text in patterns:
        e = parse_endpoint(text)
        if port is not None and not e.port_ok(port):
            continue
        ok = e.host_ok(host, ip)
        if ok:
            return True
        if ok is None:
            unknown = True
    return None if unknown else False


def show_address(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{h}:{'*' if port is None else port}"


# ------------------------------------------------------------------------------ commands

#: shell syntax that could run more than the one program the policy allows
_SHELL = re.compile(r"[;&|`$<>(){}\\\n*?\[\]~!#'\"]")
#: environment variables that change which code a program runs
_CODE_ENV = re.compile(r"^(LD_\w*|PATH|PYTHON\w*|PERL5?\w*|RUBY\w*|NODE_\w*|BASH_ENV|ENV|IFS)$")


def command_argv(command: str | list[str]) -> list[str] | None:
    """The argv a command runs, or None when a shell string does more than run one program."""
    if isinstance(command, list):
        return list(command)
    if _SHELL.search(command):
        return None
    return command.split()


def program_allowed(allowed: tuple[str, ...], program: str) -> bool:
    """``program`` (argv[0] as written) is one of ``allowed``: by name for a bare name, by path
    for a path. Which file a name resolves to is checked at run time (``resolve_program``)."""
    if "/" in program:
        return os.path.normpath(program) in {os.path.normpath(a) for a in allowed if "/" in a}
    return program in allowed


def resolve_program(program: str, path_env: str | None) -> str | None:
    import shutil

    found = shutil.which(program, path=path_env)
    return real(found) if found else None


def code_env(env: dict[str, str] | None) -> list[str]:
    """Names in ``env`` that would change which code an allowed program runs."""
    return sorted(k for k in (env or {}) if _CODE_ENV.match(k))
