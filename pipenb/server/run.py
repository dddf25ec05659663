"""Run the control plane on its own (``pipenb server``): one process, one port."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import tornado.netutil

from pipenb.server.app import PREFIX, make_app
from pipenb.server.core import ControlPlane
from pipenb.server.listen import SniffingHTTPServer, server_context
from pipenb.server.settings import ServerSettings

log = logging.getLogger("pipenb.server")


async def serve(
    settings: ServerSettings,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    show_token: bool = True,
    notes: tuple[str, ...] = (),
    url_host: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``show_token``: print the user token (one the server made up);
    a token the user gave is never echoed, since a server's output often ends up in logs.
    ``notes``: more lines for the banner (the CA's fingerprint); ``url_host``: the name to
    print in PIPENB_URL (one the certificate is for) instead of ``host``."""
    ssl_options = None
    if settings.tls_cert:
        ssl_options = server_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    cp = ControlPlane(settings)
    app = make_app(cp)
    # A client gets header_timeout to send its headers (so a slowloris holds a socket that long
    # at most) and two minutes for a body; agents open a connection per check-in, so no idle
    # keep-alive connection needs to live longer.
    server = SniffingHTTPServer(
        app,
        ssl_options=ssl_options,
        sniff_timeout=settings.header_timeout,
        max_body_size=settings.max_body * 2,
        idle_connection_timeout=settings.header_timeout,
        body_timeout=120,
        xheaders=False,
    )
    sockets = tornado.netutil.bind_sockets(port, host)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    cp.start()
    url = f"{'https' if ssl_options else 'http'}://{url_host or host}:{bound}"
    sys.stdout.write(f"pipenb server listening on {url}{PREFIX}\n")
    sys.stdout.write(f"  PIPENB_URL={url}\n")
    if settings.token and show_token:
        sys.stdout.write(f"  PIPENB_TOKEN={settings.token}\n")
    elif settings.token:
        sys.stdout.write("  PIPENB_TOKEN: the token given with --token or $PIPENB_TOKEN\n")
    for note in notes:
        sys.stdout.write(f"  {note}\n")
    sys.stdout.write(
        f"  enrollment: {'on' if settings.enroll_key else 'off (--enroll-key to allow)'}\n"
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    server.stop()
    cp.live.wake(*list(cp.live.waiters))  # answer held check-ins before closing
    await cp.stop()
    await server.close_all_connections()
