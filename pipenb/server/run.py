"""Run the control plane on its own (``pipenb server``): one process, one port."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import sys

import tornado.ioloop
import tornado.netutil

from pipenb.server import lograte
from pipenb.server.app import PREFIX, make_app
from pipenb.server.connections import CappedHTTPServer, connection_cap
from pipenb.server.control_plane import ControlPlane
from pipenb.server.dbpool import SWITCH_INTERVAL
from pipenb.server.listen import SniffingHTTPServer, server_context
from pipenb.server.settings import ServerSettings

log = logging.getLogger("pipenb.server")


class ListeningHTTPServer(SniffingHTTPServer, CappedHTTPServer):
    """The standalone server's HTTP server: a connection first shows which protocol it speaks
    (listen.py: the wrong one is answered at once), then counts against the connection cap
    (connections.py: over it, 503 with Retry-After). A connection still to say its first
    byte counts against the cap too, or silent sockets could take every file descriptor."""

    def open_connections(self) -> int:
        return len(self._connections) + self.sniffing

    def skip_sniffing(self) -> bool:
        return self.open_connections() >= self.max_connections


#: the cyclic collector's first threshold while serving (Python's default: 700). A check-in's
#: objects die within the request; collected every 700 allocations, those of the requests in
#: flight are promoted, and at 10,000 agents the older generation grew by a quarter every 20 s
#: or so: a full collection over ~300,000 objects, a pause of 0.2-0.4 s (bench/README.md).
GC_YOUNG_THRESHOLD = 10_000


def collector_for_serving() -> None:
    """Before serving: everything alive now (modules, the app, the control plane) lives as long
    as the process, so it is frozen out of the collector's passes, and young collections come
    every ``GC_YOUNG_THRESHOLD`` allocations. Measured at 10,000 agents on two processes: full
    collections over 100 ms went from one every ~20 s per process to none in a 120 s run."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


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
    repeats = lograte.install(settings.log_repeats, settings.log_window)
    flush_logs = tornado.ioloop.PeriodicCallback(repeats.flush, settings.log_window * 1000)
    flush_logs.start()
    cp = ControlPlane(settings)
    # this process is the server: the event loop should not wait long for worker threads' GIL
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = make_app(cp)
    cap = connection_cap(settings.max_connections)
    if cap < settings.max_connections:
        log.warning(
            "--max-connections %d lowered to %d: the process may open only %d files",
            settings.max_connections,
            cap,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
    # A client gets header_timeout to send its headers (so a slowloris holds a socket that long
    # at most) and two minutes for a body; agents open a connection per check-in, so no idle
    # keep-alive connection needs to live longer. Bodies are limited per operation by the
    # handlers (which stream them); this cap is only for anything else.
    server = ListeningHTTPServer(
        app,
        ssl_options=ssl_options,
        sniff_timeout=settings.header_timeout,
        max_connections=cap,
        max_body_size=max(settings.max_body, settings.max_checkin_body, settings.max_pipe_body),
        idle_connection_timeout=settings.header_timeout,
        body_timeout=120,
        xheaders=False,
    )
    collector_for_serving()
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
    flush_logs.stop()
    repeats.flush()
