"""Options that are also environment variables: ``--db-url`` is ``PIPENB_DB_URL``, and so on.

One helper for the server, the agent and the management commands, so every option can be set
either way and ``--help`` says which variable it reads.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TypeAlias

#: what ``parser.add_subparsers()`` returns: each command module's ``register`` adds to it
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def env_name(flag: str) -> str:
    return "PIPENB_" + flag.lstrip("-").replace("-", "_").upper()


def option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    help: str,
    default: Any = None,
    type: Any = str,
    flag_action: bool = False,
    env: str | None = None,
    **kw: Any,
) -> None:
    name = env or env_name(flag)
    raw = os.environ.get(name)
    if flag_action:
        value = default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")
        parser.add_argument(flag, action="store_true", default=value, help=f"{help} [{name}]", **kw)
        return
    value = default if raw is None or raw == "" else type(raw)
    shown = f" (default: {default})" if default not in (None, "", False) else ""
    parser.add_argument(flag, default=value, type=type, help=f"{help}{shown} [{name}]", **kw)
