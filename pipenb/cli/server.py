"""``pipenb server``: run the control plane."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pipenb.cli.options import Subparsers, option
from pipenb.engine.checkpoints import default_data_dir
from pipenb.server_settings import ServerSettings
from pipenb.setting import add_flags, flag_values


def register(sub: Subparsers) -> None:
    p = sub.add_parser("server", help="run the control plane (HTTP API for people and agents)")
    option(p, "--host", default="127.0.0.1", help="address to listen on")
    option(p, "--port", default=8765, type=int, help="port to listen on (0: any free port)")
    option(
        p,
        "--data-dir",
        help="where the default SQLite file and the --tls-self-signed files live "
        "(default: $PIPENB_DATA_DIR or ~/.local/state/pipenb)",
    )
    add_flags(p, ServerSettings)
    option(
        p,
        "--tls-self-signed",
        flag_action=True,
        help="serve HTTPS with a private CA and certificate made once in the data dir "
        "(the CA's fingerprint is printed, for the agents' --ca-fingerprint)",
    )
    option(
        p,
        "--tls-names",
        help="names and addresses the --tls-self-signed certificate is for, comma-separated "
        "(default: localhost,127.0.0.1 and --host)",
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

    data_dir = args.data_dir or default_data_dir()
    try:
        wheel = str(check_wheel(args.wheel)) if args.wheel else None
        tls_cert, tls_key, notes, url_host = _tls(args, data_dir)
    except (UsageError, ValueError) as exc:
        print(f"pipenb server: {exc}", file=sys.stderr)
        return 2
    values = flag_values(ServerSettings, args)
    values.update(
        db_url=args.db_url or default_db_url(data_dir),
        token=args.token or new_token(),
        enroll_key=args.enroll_key or None,
        header_timeout=max(1.0, args.header_timeout),
        secret_key_file=args.secret_key_file or None,
        wheel=wheel,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=args.tls_client_ca or None,
        max_connections=max(1, args.max_connections),
    )
    settings = ServerSettings(**values)
    try:
        asyncio.run(
            serve(
                settings,
                args.host,
                args.port,
                show_token=not args.token,
                notes=notes,
                url_host=url_host,
            )
        )
    except OSError as exc:
        print(
            f"pipenb server: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _tls(
    args: argparse.Namespace, data_dir: str
) -> tuple[str | None, str | None, tuple[str, ...], str | None]:
    """The certificate and key files to serve HTTPS with (None: plain HTTP), banner lines, and
    the host name for PIPENB_URL (a name of the self-signed certificate when ``--host`` is a
    wildcard address, which no certificate is for).

    ValueError, worded for the command line, when the options do not fit together or a file
    cannot be used.
    """
    import ssl

    if args.tls_self_signed and (args.tls_cert or args.tls_key):
        raise ValueError("give --tls-cert/--tls-key or --tls-self-signed, not both")
    if args.tls_key and not args.tls_cert:
        raise ValueError("--tls-key needs --tls-cert")
    if args.tls_client_ca and not (args.tls_cert or args.tls_self_signed):
        raise ValueError("--tls-client-ca needs HTTPS: --tls-cert or --tls-self-signed")
    if args.tls_names and not args.tls_self_signed:
        raise ValueError("--tls-names is for --tls-self-signed")
    notes: tuple[str, ...] = ()
    url_host = None
    cert, key = args.tls_cert or None, args.tls_key or None
    if args.tls_self_signed:
        from pipenb.server.certs import ensure_self_signed, parse_names

        names = parse_names(args.tls_names, args.host)
        made = ensure_self_signed(data_dir, names)
        cert, key = str(made.cert_file), str(made.key_file)
        notes = (
            f"TLS: certificate for {','.join(names)}"
            + (" (new)" if made.issued else "")
            + f", signed by the private CA {made.ca_file}",
            f"PIPENB_CA_FILE={made.ca_file}",
            f"CA fingerprint (SHA-256): {made.fingerprint}",
            f"agents: --ca-fingerprint {made.fingerprint}",
        )
        if args.host in ("0.0.0.0", "::", ""):
            url_host = names[0]
    if cert is None:
        return None, None, notes, None
    from pipenb.server.listen import server_context

    for flag, path in (
        ("--tls-cert", cert),
        ("--tls-key", key),
        ("--tls-client-ca", args.tls_client_ca),
    ):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"{flag} {path}: {exc.strerror}") from None
    try:
        server_context(cert, key, args.tls_client_ca or None)
    except ssl.SSLError as exc:
        raise ValueError(
            f"cannot use --tls-cert {cert}"
            + (f" / --tls-key {key}" if key else "")
            + (f" / --tls-client-ca {args.tls_client_ca}" if args.tls_client_ca else "")
            + f": {exc.reason or exc}"
        ) from None
    return cert, key, notes, url_host
