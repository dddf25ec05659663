"""``pipenb server``: run the control plane."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pipenb.cli.options import option
from pipenb.engine.checkpoints import default_data_dir


def register(sub: Any) -> None:
    p = sub.add_parser("server", help="run the control plane (HTTP API for people and agents)")
    option(p, "--host", default="127.0.0.1", help="address to listen on")
    option(p, "--port", default=8765, type=int, help="port to listen on (0: any free port)")
    option(
        p,
        "--db-url",
        help="database URL: sqlite:///FILE or postgresql://... (default: a SQLite file in the data dir)",
    )
    option(
        p,
        "--data-dir",
        help="where the default SQLite file lives (default: $PIPENB_DATA_DIR or ~/.local/state/pipenb)",
    )
    option(
        p,
        "--token",
        help="the user token for management requests (default: a new random one, printed)",
    )
    option(p, "--enroll-key", help="allow agents to enroll with this key (default: enrollment off)")
    option(
        p,
        "--poll-interval",
        default=5.0,
        type=float,
        help="seconds between agents' check-ins at the least",
    )
    option(
        p,
        "--long-poll",
        default=30.0,
        type=float,
        help="seconds a check-in with nothing new is held",
    )
    option(
        p, "--retention", default=7 * 86400.0, type=float, help="seconds metrics and logs are kept"
    )
    option(
        p,
        "--header-timeout",
        default=60.0,
        type=float,
        help="seconds a client may take to send a request's headers (slow clients are cut off)",
    )
    option(
        p,
        "--secret-key-file",
        help="the key that encrypts secret params (default: secret.key beside a SQLite database; "
        "with PostgreSQL give one, the same file for every server process)",
    )
    option(
        p,
        "--wheel",
        help="the pipenb wheel to serve to agent installs (`make dist` builds dist/*.whl; "
        "pipenb agents install-command prints the line that installs it)",
    )
    p.set_defaults(func=cmd_server)


def cmd_server(args: argparse.Namespace) -> int:
    from pipenb.errors import UsageError
    from pipenb.extras import require

    try:
        require("server", "pipenb server")
    except UsageError as exc:
        print(f"pipenb server: {exc}", file=sys.stderr)
        return 2
    from pipenb.server.db import default_db_url
    from pipenb.server.install import check_wheel
    from pipenb.server.run import serve
    from pipenb.server.security import new_token
    from pipenb.server.settings import ServerSettings

    data_dir = args.data_dir or default_data_dir()
    try:
        wheel = str(check_wheel(args.wheel)) if args.wheel else None
    except UsageError as exc:
        print(f"pipenb server: {exc}", file=sys.stderr)
        return 2
    settings = ServerSettings(
        db_url=args.db_url or default_db_url(data_dir),
        token=args.token or new_token(),
        enroll_key=args.enroll_key or None,
        poll_interval=args.poll_interval,
        long_poll=args.long_poll,
        retention=args.retention,
        header_timeout=max(1.0, args.header_timeout),
        secret_key_file=args.secret_key_file or None,
        wheel=wheel,
    )
    try:
        asyncio.run(serve(settings, args.host, args.port, show_token=not args.token))
    except OSError as exc:
        print(
            f"pipenb server: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0
