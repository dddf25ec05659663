"""``pipenb agent``: run an agent on this host."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from pipenb.cli.options import option


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="run an agent: check in with a server and run its pipes")
    option(
        p,
        "--server",
        help="the server's URL, e.g. https://10.0.0.5:8765; several processes of one fleet: "
        "URL1,URL2 (the agent moves to the next when one stops answering)",
    )
    option(
        p,
        "--id",
        env="PIPENB_AGENT_ID",
        help="this agent's id, with --api-key (an agent added by hand: pipenb agents add)",
    )
    option(p, "--api-key", help="this agent's API key")
    option(
        p,
        "--enroll-key",
        help="enroll with an enrollment token (pipenb enroll-tokens create) or the server's "
        "bootstrap key; the server assigns the id and the token's labels, and the key it returns "
        "is saved in the data dir",
    )
    option(p, "--name", help="a display name (when enrolling)")
    # gone: refused with a message that says where labels come from now
    p.add_argument("--labels", help=argparse.SUPPRESS)
    option(
        p,
        "--data-dir",
        help="where identity, desired pipes, checkpoints and logs live (default: ~/.local/state/pipenb/agent)",
    )
    option(
        p,
        "--policy",
        help="this host's policy for pipes, a YAML file: read, write, connect, listen, exec, "
        "scripts (see docs/agent.md); the --allow-* flags override its keys",
    )
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
        "--allow-scripts",
        flag_action=True,
        help="allow the script action (the policy's scripts: true; refused by default)",
    )
    option(
        p,
        "--allow-preview",
        flag_action=True,
        help="run previews users ask the server for, on this host's data and under this "
        "policy (the policy's preview: true; refused by default)",
    )
    option(
        p,
        "--disable",
        help="refuse exec and/or script whatever the policy says, comma-separated: exec,script",
    )
    option(
        p,
        "--run-as",
        help="run workers (and what they run) as this user; the agent must be started as root",
    )
    option(
        p,
        "--long-poll",
        type=float,
        default=30.0,
        help="seconds a check-in may be held by the server",
    )
    option(
        p,
        "--metrics-address",
        help="serve the pipes' metrics for Prometheus at http://HOST:PORT/metrics "
        "(off by default; use a loopback address unless the port is firewalled)",
    )
    option(
        p,
        "--metrics-every",
        type=float,
        default=15.0,
        help="seconds between a pipe's metrics and checkpoint reports",
    )
    option(
        p,
        "--max-log-level",
        default="debug",
        help="the most verbose log level the server may set (log-level, ship-level): "
        "debug, info, warning or error (default: debug)",
    )
    option(
        p,
        "--settings-bounds",
        help="ranges the server's settings must keep to, e.g. "
        "'metrics-every=5s..60s,long-poll=..30s,capture-limit=..500' (docs/agent.md#settings)",
    )
    option(p, "--ca-file", help="trust only the CA in this PEM file for an https:// server")
    option(
        p,
        "--ca-fingerprint",
        help="trust the server's CA if its SHA-256 fingerprint is this (as `pipenb server` "
        "prints it); the CA is then kept in the data dir",
    )
    option(p, "--cert", help="a client certificate (PEM) for a server that requires mutual TLS")
    option(p, "--key", help="the private key of --cert (PEM), if not in the --cert file")
    option(
        p,
        "--insecure-http",
        flag_action=True,
        help="allow an http:// server URL that is not on this host (keys cross the network "
        "in clear: labs only)",
    )
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from pipenb.agent import Agent, AgentSettings
    from pipenb.engine.checkpoints import default_data_dir

    if not args.server:
        print("pipenb agent: --server URL is required (or PIPENB_SERVER)", file=sys.stderr)
        return 2
    from pipenb.agent.servers import parse_servers

    try:
        parse_servers(args.server)
    except ValueError as exc:
        print(f"pipenb agent: {exc}", file=sys.stderr)
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
    unknown = [c for c in disable if c not in ("exec", "script")]
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

    values: dict = {}
    try:
        if args.policy:
            values.update(load_file(args.policy))
        flags = {
            "read": args.allow_read,
            "write": args.allow_write,
            "connect": args.allow_connect,
            "listen": args.allow_listen,
            "exec": args.allow_exec,
        }
        values.update({k: v for k, v in flags.items() if v})
        if args.allow_preview:
            values["preview"] = True
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
    settings = AgentSettings(
        server=args.server,
        data_dir=args.data_dir or os.path.join(default_data_dir(), "agent"),
        agent_id=args.id,
        api_key=args.api_key,
        enroll_key=args.enroll_key,
        name=args.name,
        allow_scripts=args.allow_scripts,
        disable=disable,
        long_poll=args.long_poll,
        metrics_every=max(0.5, args.metrics_every),
        metrics_address=args.metrics_address,
        ca_file=args.ca_file,
        ca_fingerprint=args.ca_fingerprint,
        cert=args.cert,
        key=args.key,
        insecure_http=args.insecure_http,
        policy_values=values,
        max_log_level=args.max_log_level or "debug",
        settings_bounds=args.settings_bounds,
        policy_file=os.path.abspath(args.policy) if args.policy else None,
        run_as=args.run_as,
    )
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
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        raise
    return 0
