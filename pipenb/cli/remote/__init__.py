"""Management commands that talk to a pipenb server, one module per resource.

``pipes`` (pipes.py), ``agents`` with their keys and settings (agents.py, agent_settings.py),
``enroll-tokens`` (enroll_tokens.py), ``deploy`` and ``deployments`` (deployments.py), their logs,
metrics and ``tap`` (telemetry.py), ``whoami``, ``users`` and ``audit`` (people.py). Each command
is a thin layer over ``pipenb.Client``: parse the arguments, make the call, print a table or a
short line for people (``--json`` prints the server's answer for scripts), with the shared
helpers of output.py; call.py runs it and maps failures to exit codes (0 done, 1 the server
refused or could not be reached, 2 the command line was wrong).
"""

from __future__ import annotations

import argparse
from typing import Any

from pipenb.cli.options import option
from pipenb.cli.remote import agents, deployments, enroll_tokens, people, pipes, telemetry
from pipenb.cli.remote.args import version
from pipenb.cli.remote.call import Handler, remote


def _common() -> argparse.ArgumentParser:
    """The options every management command takes: where the server is and how to trust it."""
    common = argparse.ArgumentParser(add_help=False)
    option(common, "--url", help="the pipenb server, as printed by `pipenb server`")
    option(common, "--token", help="the user token for the server")
    option(common, "--ca-file", help="trust only the CA in this PEM file for an https:// server")
    option(
        common,
        "--ca-fingerprint",
        help="trust the server's CA if its SHA-256 fingerprint is this (as `pipenb server` prints it)",
    )
    option(
        common, "--cert", help="a client certificate (PEM) for a server that requires mutual TLS"
    )
    option(common, "--key", help="the private key of --cert (PEM), if not in the --cert file")
    common.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    return common


def register(sub: Any) -> None:
    common = _common()

    def leaf(group: Any, name: str, fn: Handler, help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=remote(fn))
        return p

    def version_option(p: argparse.ArgumentParser, what: str, pinned: bool = False) -> None:
        p.add_argument(
            "--version",
            type=version,
            default=None if pinned else "latest",
            metavar="V",
            help=f"{what} (default: " + ("the newest, pinned)" if pinned else "latest)"),
        )

    pipes.register(sub, leaf)
    agents.register(sub, leaf)
    enroll_tokens.register(sub, leaf)
    people.register(sub, leaf)
    deployments.register_deploy(sub, leaf, version_option)
    deployments.register(sub, leaf, version_option)
    telemetry.register_tap(sub, leaf)
