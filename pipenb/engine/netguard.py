"""Sockets opened under the agent's policy: what the network inputs and outputs share.

Without a guard (``pipenb run``, previews) these are plain resolution and connection. With one,
a name is resolved first, the addresses the connect policy refuses are dropped, and the socket
connects to an address that was checked (so a DNS answer cannot change between check and use);
an HTTP client resolves every request through the same check, redirects included.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tornado.httpclient import AsyncHTTPClient
from tornado.netutil import DefaultLoopResolver, Resolver

from pipenb.engine.base import RunContext


async def checked_address(
    ctx: RunContext, what: str, target: str, host: str, port: int, kind: int
) -> tuple[str, int]:
    """``(host, port)`` to connect to: the first resolved address the policy allows."""
    guard = ctx.guard
    if guard is None:
        return host, port
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    error: Exception | None = None
    for _family, _type, _proto, _name, addr in infos:
        try:
            ip = str(addr[0])  # an IPv4 or IPv6 address: the families getaddrinfo was asked for
            guard.connect(what, target, host, port, ip)
            return ip, port
        except Exception as exc:  # PolicyError: try the next address, report the first
            error = error or exc
    if error is not None:
        raise error
    raise OSError(f"{what} {target}: {host} has no address")


class _GuardedResolver(Resolver):
    """Resolves as usual, then keeps only the addresses the connect policy allows."""

    def initialize(self, ctx: RunContext, what: str, target: str) -> None:
        self.ctx, self.what, self.target = ctx, what, target
        self.inner = DefaultLoopResolver()

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        found = await self.inner.resolve(host, port, family)
        allowed, error = [], None
        for fam, addr in found:
            try:
                self.ctx.guard.connect(self.what, self.target, host, port, addr[0])
                allowed.append((fam, addr))
            except Exception as exc:  # PolicyError
                error = error or exc
        if not allowed and error is not None:
            raise error
        return allowed


def http_client(ctx: RunContext, what: str, target: str, **kw: Any) -> AsyncHTTPClient:
    """A private AsyncHTTPClient; under a guard, every connection it makes is checked."""
    if ctx.guard is not None:
        kw["resolver"] = _GuardedResolver(ctx=ctx, what=what, target=target)
    return AsyncHTTPClient(force_instance=True, **kw)


def check_listener(ctx: RunContext, what: str, host: str, sockname: Any) -> None:
    """Once bound: the address and port really listened on (port 0 picked one)."""
    if ctx.guard is not None:
        ctx.guard.listen(what, host or "0.0.0.0", sockname[1], sockname[0])


def check_listen_first(ctx: RunContext, what: str, host: str, port: int) -> None:
    """Before binding: the host, and the port unless it is 0 (known once bound)."""
    if ctx.guard is not None:
        ctx.guard.listen(what, host or "0.0.0.0", port or None)
