"""The ``pipenb`` command. Exit codes: 0 success, 1 the work failed, 2 usage error.

Each command group lives in its own module and adds its sub-commands to the parser here. Only
the group of the command being run is imported: ``pipenb run`` does not pay for the agent's,
the server's or the management commands' modules (and what they import) at every start.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from pipenb import __version__
from pipenb.cli.startup import collector_paused

#: Each command group's module (under ``pipenb.cli``) and the commands its ``register`` adds, in
#: the order ``pipenb --help`` lists them. The names are here so that the group of a command can
#: be found without importing every group; tests/cli/test_cli_startup.py checks that they are
#: exactly what each module registers.
GROUPS: dict[str, tuple[str, ...]] = {
    "local": ("run", "check", "test", "preview", "reference"),
    "server": ("server",),
    "agent": ("agent",),
    "remote": (
        "pipes",
        "agents",
        "enroll-tokens",
        "whoami",
        "users",
        "audit",
        "deploy",
        "deployments",
        "tap",
    ),
}


def _group_of(command: str | None) -> str | None:
    return next((g for g, names in GROUPS.items() if command in names), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's group is registered (and imported).
    Without one, or with a name no group has, every group is, so that ``--help`` and the
    error for an unknown command list them all."""
    parser = argparse.ArgumentParser(
        prog="pipenb",
        description="Prototype, test, run and deploy data pipes.",
    )
    parser.add_argument("--version", action="version", version=f"pipenb {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    group = _group_of(command)
    for name in [group] if group else GROUPS:
        importlib.import_module(f"pipenb.cli.{name}").register(sub)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named on the line: the first word that is not an option (the top-level
    options take no values; were one to take a value, that value would name no group and every
    group would be registered: slower, never wrong)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    # The command owns its process: skip pydantic's plugin discovery, which scans every
    # installed distribution's entry points and costs ~0.1 s of every start.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if argv is None:
        argv = sys.argv[1:]
    with collector_paused():  # the command's group is imported here (pipenb.cli.startup)
        parser = build_parser(_command(argv))
        args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
