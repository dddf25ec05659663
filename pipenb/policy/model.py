"""The ``Policy``: what pipes on this worker host may touch, from a file, flags, or a report.

Set on the worker host (``pipenb agent --policy FILE`` or ``--allow-*`` flags and their
``PIPENB_ALLOW_*`` variables), reported to the server in the agent's check-in so it can refuse a
deployment early, and enforced by the agent's workers whatever the server says.

The file is YAML (or JSON)::

    read: [/var/log/**]          # globs files inputs may open
    write: [/var/lib/pipenb/out] # directories file outputs may write in
    connect: ["*:*"]             # host:port patterns for http-poll, http-post, tcp/udp outputs
    listen: ["*:1024-65535"]     # host:port patterns for http-server, tcp, udp inputs
    exec: off                    # off, any, or a list of programs: [df, /usr/bin/uptime]
    scripts: false               # the script action
    preview: false               # previews users ask the server for (pipenb.agent.preview)
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pipenb.policy.rules import parse_endpoint

KEYS = ("read", "write", "connect", "listen", "exec", "scripts", "preview")
DEFAULT_READ = ("/var/log/**",)
DEFAULT_CONNECT = ("*:*",)
DEFAULT_LISTEN = ("*:1024-65535",)
#: what the agent adds about its host (not settable in a policy file)
_HOST_KEYS = ("protected", "unwritable", "holes")


class PolicyFileError(ValueError):
    """A policy (file, flag or report) that cannot be understood: says where and how to fix it."""


@dataclass(frozen=True)
class Policy:
    read: tuple[str, ...] = DEFAULT_READ
    write: tuple[str, ...] = ()  # the agent fills in <data-dir>/out
    connect: tuple[str, ...] = DEFAULT_CONNECT
    listen: tuple[str, ...] = DEFAULT_LISTEN
    exec: str | tuple[str, ...] = "off"  # "off", "any", or allowed programs
    scripts: bool = False
    preview: bool = False
    #: path -> what it is: never readable or writable by a pipe (filled in by the agent)
    protected: dict[str, str] = field(default_factory=dict)
    #: path -> what it is: never writable by a pipe (other directories Python imports from)
    unwritable: dict[str, str] = field(default_factory=dict)
    #: paths inside a protected one that stay usable (the default output dir in the data dir)
    holes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ building
    @classmethod
    def for_agent(
        cls,
        data_dir: str,
        values: dict[str, Any] | None = None,
        *,
        policy_file: str | None = None,
        where: str = "the policy",
    ) -> Policy:
        """The policy of an agent with this data dir: ``values`` over the defaults, the
        protected paths of this host and interpreter added."""
        from pipenb.policy.rules import protected_paths, real

        out_dir = os.path.join(os.path.abspath(data_dir), "out")
        base = cls(write=(out_dir,))
        p = base.merged(values or {}, where)
        protected, unwritable = protected_paths(data_dir, policy_file)
        return replace(
            p,
            # as written (what a pipe's paths are checked against at deploy time) and resolved
            # (what a real path is checked against where it is opened): /tmp may be a symlink
            read=_with_real(p.read, glob=True),
            write=_with_real(p.write, glob=False),
            protected=protected,
            unwritable=unwritable,
            holes=(real(out_dir),),
        )

    def merged(self, values: dict[str, Any], where: str = "the policy") -> Policy:
        """This policy with the keys of ``values`` (a policy file's or flags') replaced."""
        if not isinstance(values, dict):
            raise PolicyFileError(f"{where}: expected a mapping of {', '.join(KEYS)}")
        unknown = [k for k in values if k not in KEYS and k not in _HOST_KEYS]
        if unknown:
            raise PolicyFileError(
                f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}"
            )
        changes: dict[str, Any] = {}
        for key in ("read", "write"):
            if key in values:
                paths = _strings(values[key], f"{where}: {key}")
                for p in paths:
                    if not p.startswith("/"):
                        raise PolicyFileError(
                            f"{where}: {key} entry {p!r} must be an absolute path"
                        )
                changes[key] = tuple(os.path.normpath(p) for p in paths)
        for key in ("connect", "listen"):
            if key in values:
                v = values[key]
                pats = ("*:*",) if v in ("any", True) else _strings(v, f"{where}: {key}")
                for pat in pats:
                    try:
                        parse_endpoint(pat)
                    except ValueError as exc:
                        raise PolicyFileError(f"{where}: {key}: {exc}") from None
                changes[key] = pats
        if "exec" in values:
            changes["exec"] = _exec_value(values["exec"], where)
        for key in ("scripts", "preview"):
            if key in values:
                changes[key] = _bool(values[key], f"{where}: {key}")
        for key in ("protected", "unwritable"):
            if key in values and isinstance(values[key], dict):
                changes[key] = {str(k): str(v) for k, v in values[key].items()}
        if "holes" in values:
            changes["holes"] = _strings(values["holes"], f"{where}: holes")
        return replace(self, **changes)

    @classmethod
    def from_report(cls, report: Any) -> Policy | None:
        """The policy an agent reported in its check-in; None when it reported none (an older
        agent) or one this server cannot read (then the agent's own check still applies)."""
        if not isinstance(report, dict):
            return None
        try:
            return cls(write=()).merged(report, "the reported policy")
        except PolicyFileError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what the agent reports and hands its workers."""
        return {
            "read": list(self.read),
            "write": list(self.write),
            "connect": list(self.connect),
            "listen": list(self.listen),
            "exec": self.exec if isinstance(self.exec, str) else list(self.exec),
            "scripts": self.scripts,
            "preview": self.preview,
            "protected": dict(self.protected),
            "unwritable": dict(self.unwritable),
            "holes": list(self.holes),
        }

    # ------------------------------------------------------------------ describing
    def rule_text(self, key: str) -> str:
        """A rule as the messages show it: ``/var/log/**`` or ``off``."""
        v = getattr(self, key)
        if isinstance(v, bool):
            return "on" if v else "off"
        if isinstance(v, str):
            return v
        return ", ".join(v) if v else "nothing"


def _with_real(paths: tuple[str, ...], glob: bool) -> tuple[str, ...]:
    from pipenb.policy.rules import has_wildcards, real

    out = list(paths)
    for p in paths:
        if glob and has_wildcards(p):
            parts = p.split("/")
            i = next(i for i, part in enumerate(parts) if has_wildcards(part))
            head, tail = "/".join(parts[:i]) or "/", "/".join(parts[i:])
            resolved = os.path.join(real(head), tail)
        else:
            resolved = real(p)
        if resolved not in out:
            out.append(resolved)
    return tuple(out)


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [x.strip() for x in v.split(",")] if "," in v else [v]
    if v is None:
        return ()
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise PolicyFileError(f"{where}: expected a list of strings")
    return tuple(x for x in v if x)


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.lower() in ("true", "yes", "on", "1")
    raise PolicyFileError(f"{where}: expected true or false, got {v!r}")


def _exec_value(v: Any, where: str) -> str | tuple[str, ...]:
    if v in (None, False, "off", "none", "no", "false", "") or v == []:
        return "off"
    if v in (True, "any", "on", "yes", "true"):
        return "any"
    progs = _strings(v, f"{where}: exec")
    if "any" in progs:
        return "any"
    return progs


def load_file(path: str) -> dict[str, Any]:
    """A policy file's mapping. YAML is parsed in a short-lived child process: the agent
    process itself stays free of PyYAML (see the agent's "nothing heavy" tests)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PolicyFileError(f"cannot read the policy file {path}: {exc.strerror}") from None
    try:
        value = orjson.loads(data) if data.strip() else {}
    except orjson.JSONDecodeError:
        code = (
            "import sys, json, yaml\n"
            "try:\n"
            "    v = yaml.safe_load(sys.stdin.buffer.read())\n"
            "except yaml.YAMLError as exc:\n"
            "    sys.exit(str(exc))\n"
            "print(json.dumps(v, default=str))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], input=data, capture_output=True, timeout=60
        )
        if proc.returncode != 0:
            why = " ".join(proc.stderr.decode(errors="replace").split()) or "unknown"
            raise PolicyFileError(f"the policy file {path} is not valid YAML: {why}") from None
        value = orjson.loads(proc.stdout)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise PolicyFileError(f"the policy file {path}: expected a mapping of {', '.join(KEYS)}")
    return value
