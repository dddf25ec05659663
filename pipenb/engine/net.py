"""Network addresses as the pipe language writes them: ``host:port`` options and peer names.

The network inputs (``tcp``, ``udp``, ``http-server``), the network outputs and the
agent's metrics listener all take addresses the same way, so the parsing and its error messages
live here, apart from any one component.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


def split_address(value: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) as ``(host, port)``."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"expected an address as host:port (127.0.0.1:5140, [::1]:5140, :5140), got {value!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port}")
    return host, int(port)


def _check_address(value: str) -> str:
    split_address(value)
    return value


def _check_remote(value: str) -> str:
    host, port = split_address(value)
    if not host or port == 0:
        raise ValueError(f"expected a host and a port to send to, as host:port, got {value!r}")
    return value


#: a listening address; port 0 picks a free port (the input's ``port`` then says which)
Address = Annotated[str, AfterValidator(_check_address)]
#: an address to connect or send to: host and port both required
RemoteAddress = Annotated[str, AfterValidator(_check_remote)]


def format_peer(addr: Any) -> str | None:
    """``ip:port`` (``[ip]:port`` for IPv6) from a socket address."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None if addr is None else str(addr)
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
