"""``pipenb server``: run the control plane."""

from __future__ import annotations

import argparse
import asyncio
import re
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
        "--max-checkin-body",
        default="1MiB",
        type=byte_size,
        help="largest agent check-in body, in bytes (or with KiB/MiB); larger get 413",
    )
    option(
        p,
        "--max-pipe-body",
        default="1MiB",
        type=byte_size,
        help="largest pipe push body; larger get 413",
    )
    option(
        p,
        "--max-body",
        default="256KiB",
        type=byte_size,
        help="largest body of any other request; larger get 413",
    )
    option(
        p,
        "--max-connections",
        default=1024,
        type=int,
        help="open connections served at once; more are answered 503 with Retry-After "
        "(lowered to fit the process's open-file limit)",
    )
    p.set_defaults(func=cmd_server)


UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20}
UNITS["MIB"] = 1 << 20


def byte_size(text: str | int) -> int:
    """``1048576``, ``1MiB``, ``512KiB``: a size in bytes (binary units), at least 1."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    digits, unit = (m.group(1), m.group(2).upper()) if m else ("", "?")
    if not digits or unit not in UNITS or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 512KiB or 1MiB)")
    return int(digits) * UNITS[unit]


def cmd_server(args: argparse.Namespace) -> int:
    from pipenb.server.db import default_db_url
    from pipenb.server.run import serve
    from pipenb.server.security import new_token
    from pipenb.server.settings import ServerSettings

    data_dir = args.data_dir or default_data_dir()
    settings = ServerSettings(
        db_url=args.db_url or default_db_url(data_dir),
        token=args.token or new_token(),
        enroll_key=args.enroll_key or None,
        poll_interval=args.poll_interval,
        long_poll=args.long_poll,
        retention=args.retention,
        header_timeout=max(1.0, args.header_timeout),
        max_checkin_body=byte_size(args.max_checkin_body),
        max_pipe_body=byte_size(args.max_pipe_body),
        max_body=byte_size(args.max_body),
        max_connections=max(1, args.max_connections),
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
