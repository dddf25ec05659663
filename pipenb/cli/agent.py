"""``pipenb agent``: run an agent on this host."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from pipenb.agent.settings import AgentSettings
from pipenb.capabilities import CAPABILITIES
from pipenb.cli.options import Subparsers, option
from pipenb.setting import add_flags, flag_values


def register(sub: Subparsers) -> None:
    p = sub.add_parser("agent", help="run an agent: check in with a server and run its pipes")
    add_flags(p, AgentSettings)
    # gone: refused with a message that says where labels come from now
    p.add_argument("--labels", help=argparse.SUPPRESS)
    # the policy's keys, over --policy FILE (AgentSettings.policy_values)
    option(
        p,
        "--allow-read",
        help="globs files inputs may read, comma-separated (default: /var/log/**)",
    )
    option(
        p,
        "--allow-write",
        help="directories file outputs may write in, comma-separated (default: DATA_DIR/out)",
    )
    option(
        p,
        "--allow-connect",
        help="host:port patterns http-poll, http-post and tcp/udp outputs may reach (default: *:*)",
    )
    option(
        p,
        "--allow-listen",
        help="host:port patterns http-server and tcp/udp inputs may listen on "
        "(default: *:1024-65535)",
    )
    option(
        p,
        "--allow-exec",
        help="programs the exec input may run, comma-separated, or 'any' (default: none)",
    )
    option(
        p,
        "--allow-preview",
        flag_action=True,
        help="run previews users ask the server for, on this host's data and under this "
        "policy (the policy's preview: true; refused by default)",
    )
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from pipenb.agent import Agent
    from pipenb.engine.checkpoints import default_data_dir
    from pipenb.errors import AgentError, AgentTurnedAway

    if not args.server:
        print("pipenb agent: --server URL is required (or PIPENB_SERVER)", file=sys.stderr)
        return 2
    if not ((args.id and args.api_key) or args.enroll_key or args.data_dir):
        print("pipenb agent: give --id and --api-key, or --enroll-key", file=sys.stderr)
        return 2
    if args.labels:
        print(
            "pipenb agent: --labels is gone: an agent cannot choose its labels. They come from "
            "the enrollment token (pipenb enroll-tokens create --labels ...) or an admin "
            "(pipenb agents label ID ...)",
            file=sys.stderr,
        )
        return 2
    if args.id and not args.api_key and args.enroll_key:
        print(
            "pipenb agent: --id goes with --api-key; an enrolling agent cannot choose its id "
            "(the server assigns one; --name sets a display name)",
            file=sys.stderr,
        )
        return 2
    disable = [c.strip() for c in (args.disable or "").split(",") if c.strip()]
    unknown = [c for c in disable if c not in CAPABILITIES]
    if unknown:
        print(
            f"pipenb agent: --disable takes exec and/or script, not {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    from pipenb.tls import TlsError, TlsOptions

    try:
        TlsOptions(args.ca_file, args.ca_fingerprint, args.cert, args.key).check()
    except TlsError as exc:
        print(f"pipenb agent: {exc}", file=sys.stderr)
        return 2
    from pipenb.policy import PolicyFileError
    from pipenb.policy.model import load_file

    values_from_policy: dict[str, Any] = {}
    try:
        if args.policy:
            values_from_policy.update(load_file(args.policy))
        flags = {
            "read": args.allow_read,
            "write": args.allow_write,
            "connect": args.allow_connect,
            "listen": args.allow_listen,
            "exec": args.allow_exec,
        }
        values_from_policy.update({k: v for k, v in flags.items() if v})
        if args.allow_preview:
            values_from_policy["preview"] = True
    except PolicyFileError as exc:
        print(f"pipenb agent: {exc}", file=sys.stderr)
        return 2
    if args.run_as:
        import pwd

        if os.geteuid() != 0:
            print(
                "pipenb agent: --run-as needs the agent to run as root (it switches its "
                "workers to that user); start it as root, or drop --run-as",
                file=sys.stderr,
            )
            return 2
        try:
            pwd.getpwnam(args.run_as)
        except KeyError:
            print(f"pipenb agent: --run-as: no user {args.run_as!r} here", file=sys.stderr)
            return 2
    values = flag_values(AgentSettings, args)
    values.update(
        data_dir=args.data_dir or os.path.join(default_data_dir(), "agent"),
        disable=disable,
        metrics_every=max(0.5, args.metrics_every),
        policy_values=values_from_policy,
        max_log_level=args.max_log_level or "debug",
        policy_file=os.path.abspath(args.policy) if args.policy else None,
    )
    settings = AgentSettings(**values)
    from pipenb.agent.remote_settings import SettingError

    try:
        settings.bounds  # noqa: B018 - bad bounds are reported now, not at the first setting
    except SettingError as exc:
        print(f"pipenb agent: {exc}", file=sys.stderr)
        return 2
    try:
        settings.policy  # noqa: B018 - a bad flag is reported now, not at the first pipe
    except PolicyFileError as exc:
        print(f"pipenb agent: {exc}", file=sys.stderr)
        return 2
    agent = Agent(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    try:
        asyncio.run(main())
    except AgentTurnedAway as exc:
        return exc.exit_code  # the agent logged the reason already, in one line
    except AgentError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    return 0
