"""How a management command runs: make the client, call the command, map failures to exit codes.

Exit codes: 0 done, 1 the server refused or could not be reached, 2 the command line was wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pipenb.cli.remote.output import api_error, err
from pipenb.errors import ApiError, UsageError

#: a command: the client and the parsed arguments in, an exit code (None: 0) out
Handler = Callable[[Any, argparse.Namespace], int | None]


def remote(fn: Handler) -> Callable[[argparse.Namespace], int]:
    """Make the client, run the command, and turn failures into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        from pipenb.extras import require

        try:
            require("server", f"pipenb {args.command}")
            from pipenb.client import Client

            return int(fn(Client.from_options(args), args) or 0)
        except UsageError as exc:
            err(f"pipenb: {exc}")
            return 2
        except ApiError as exc:
            api_error(exc)
            return 1

    run.__doc__ = fn.__doc__
    return run
