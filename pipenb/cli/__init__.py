"""The ``pipenb`` command. Exit codes: 0 success, 1 the work failed, 2 usage error.

Each command group lives in its own module and adds its sub-commands to the parser here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipenb import __version__
from pipenb.cli import agent, local, remote, server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipenb",
        description="Prototype, test, run and deploy data pipes.",
    )
    parser.add_argument("--version", action="version", version=f"pipenb {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    local.register(sub)
    server.register(sub)
    agent.register(sub)
    remote.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The command owns its process: skip pydantic's plugin discovery, which scans every
    # installed distribution's entry points and costs ~0.1 s of every start.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
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
