"""The server URLs an agent may use (``--server URL1,URL2``) and the one it uses now.

A fleet may run several server processes on one database (docs/server.md): any of them answers
any agent. The agent uses one URL until it stops answering (no connection, a reset held
check-in, or 502/503/504 from a load balancer in front), then moves to the next at once; once
it has tried every URL in a row without an answer it backs off as with a single server. With one
load-balanced address the same happens behind it: the balancer answers 502 for a dead process
and the agent's next try reaches a live one.
"""

from __future__ import annotations

import logging
import ssl

from pipenb.agent.trust import Trust
from pipenb.errors import ServerError
from pipenb.tls import TlsOptions

log = logging.getLogger("pipenb.agent")

#: answers that say this server (or the balancer's process behind it) is away, not this agent
AWAY = (502, 503, 504)


def parse_servers(spec: str) -> list[str]:
    """``URL1,URL2`` (spaces allowed): the URLs in order, without duplicates; ValueError when
    none is given or they mix http and https."""
    urls: list[str] = []
    for part in spec.split(","):
        url = part.strip()
        if url and url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError("--server: no URL given")
    schemes = {u.split("://", 1)[0] if "://" in u else "http" for u in urls}
    if len(schemes) > 1:
        raise ValueError(
            f"--server: the URLs mix {' and '.join(sorted(schemes))}; give every server of a "
            "fleet the same scheme (https:// with one CA)"
        )
    return urls


class Servers:
    def __init__(self, spec: str, data_dir: str, options: TlsOptions):
        self.urls = parse_servers(spec)
        self.index = 0
        self.misses = 0  # URLs that did not answer since the last answer
        # one TLS context per URL (host names differ), one pinned CA file for the fleet
        self._trust = {url: Trust(url, data_dir, options) for url in self.urls}

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def context(self, url: str) -> ssl.SSLContext | None:
        return self._trust[url].context()

    def answered(self) -> None:
        self.misses = 0

    def away(self, url: str, exc: ServerError) -> bool:
        """``url`` did not answer (``exc``): move to the next URL when that is what ``exc``
        means. True when there is one not tried since the last answer: try it now."""
        if exc.tls or not (exc.status == 0 or exc.status in AWAY):
            return False
        if url != self.current:  # another request moved on already
            return self.misses < len(self.urls)
        self.misses += 1
        if len(self.urls) == 1:
            return False
        self.index = (self.index + 1) % len(self.urls)
        log.warning("server %s does not answer (%s); moving to %s", url, exc, self.current)
        return self.misses < len(self.urls)
