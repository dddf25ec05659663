"""``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` for the pipes' HTTP clients.

Tornado's own client ignores them, and ``http-post``/``http-poll`` then fail where every other
tool on the host goes through the proxy. The environment is read the way curl and requests
read it (``urllib.request.getproxies_environment``: lower-case names win, ``NO_PROXY`` lists
host names, domain suffixes and ``*``), per request, from the URL's scheme and host:

- an ``http://`` URL is sent to the proxy in absolute form (``POST http://host/path``);
- an ``https://`` URL is tunnelled with ``CONNECT host:port``, then TLS with the receiver itself
  through the tunnel: the proxy sees only ciphertext, and the certificate is verified against
  the receiver's name as without a proxy.

``user:password@`` in the proxy's URL is sent as ``Proxy-Authorization: Basic``. Only
``http://`` proxies are supported; any other scheme is a clear error when the pipe starts.
Under an agent policy, the socket goes to the proxy, so the proxy's address is what the connect
policy checks, and the receiver's own host and port are checked too (resolved on the agent), so
a proxy is not a way around the policy.
"""

from __future__ import annotations

import base64
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tornado import httputil
from tornado.iostream import IOStream
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection
from tornado.tcpclient import TCPClient

from pipenb.engine.base import RunContext


class ProxyError(OSError):
    """The proxy refused or failed a tunnel (retried, like a refused connection)."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    auth: str | None  # the Proxy-Authorization value
    shown: str  # the proxy's URL without its password, for messages


def proxy_for(url: str) -> Proxy | None:
    """The proxy the environment names for ``url``, or None to connect directly."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(parts.scheme)
    if not value:
        return None
    netloc = parts.netloc.rpartition("@")[2]
    if urllib.request.proxy_bypass_environment(netloc, proxies):  # type: ignore[attr-defined]
        return None
    return parse_proxy(value, f"{parts.scheme.upper()}_PROXY")


def parse_proxy(value: str, name: str) -> Proxy:
    """``http://[user:password@]host[:port]`` (or ``host:port``) as a ``Proxy``."""
    if "://" not in value:
        value = "http://" + value
    p = urllib.parse.urlsplit(value)
    if p.scheme != "http" or not p.hostname:
        raise ValueError(
            f"{name}={value!r}: only http:// proxies are supported (http://host:port); "
            "unset it or name an HTTP proxy"
        )
    auth = None
    if p.username is not None:
        user = urllib.parse.unquote(p.username)
        password = urllib.parse.unquote(p.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return Proxy(p.hostname, p.port or 80, auth, f"http://{p.hostname}:{p.port or 80}")


def check_environment(url: str) -> None:
    """Raise a clear ``ValueError`` now if the proxy named for ``url`` cannot be used."""
    proxy_for(url)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ProxyTCPClient(TCPClient):
    """Connects to the proxy when the environment names one for the host, else directly."""

    def __init__(self, resolver: Any, ctx: RunContext, what: str, target: str):
        super().__init__(resolver=resolver)
        self.ctx, self.what, self.target = ctx, what, target

    async def connect(
        self,
        host: str,
        port: int,
        af: socket.AddressFamily = socket.AF_UNSPEC,
        ssl_options: Any = None,
        max_buffer_size: int | None = None,
        source_ip: str | None = None,
        source_port: int | None = None,
        timeout: Any = None,
    ) -> IOStream:
        scheme = "https" if ssl_options is not None else "http"
        proxy = proxy_for(f"{scheme}://{_hostport(host, port)}/")
        if proxy is None:
            return await super().connect(
                host, port, af, ssl_options, max_buffer_size, source_ip, source_port, timeout
            )
        if self.ctx.guard is not None:  # the receiver itself must be allowed, proxy or not
            from pipenb.engine.netguard import checked_address

            await checked_address(self.ctx, self.what, self.target, host, port, socket.SOCK_STREAM)
        stream = await super().connect(
            proxy.host, proxy.port, af, None, max_buffer_size, source_ip, source_port, timeout
        )
        if ssl_options is None:
            stream._pipenb_proxy = proxy  # type: ignore[attr-defined]  # absolute-form requests
            return stream
        where = _hostport(host, port)
        head = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
        if proxy.auth:
            head.append(f"Proxy-Authorization: {proxy.auth}")
        try:
            await stream.write(("\r\n".join(head) + "\r\n\r\n").encode())
            answer = await stream.read_until(b"\r\n\r\n", max_bytes=65536)
        except Exception as exc:
            stream.close()
            raise ProxyError(f"proxy {proxy.shown}: CONNECT {where} failed: {exc}") from exc
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        code = status.split(" ", 2)[1] if status.count(" ") >= 1 else ""
        if not code.startswith("2"):
            stream.close()
            raise ProxyError(f"proxy {proxy.shown} refused CONNECT {where}: {status}")
        return await stream.start_tls(False, ssl_options=ssl_options, server_hostname=host)


class _ProxyHTTPConnection(_HTTPConnection):
    """Writes the absolute URL in the request line when the stream goes to a proxy."""

    def _create_connection(self, stream: IOStream) -> Any:
        conn = super()._create_connection(stream)
        proxy: Proxy | None = getattr(stream, "_pipenb_proxy", None)
        if proxy is None:
            return conn
        netloc = self.parsed.netloc.rpartition("@")[2]
        base = f"{self.parsed.scheme}://{netloc}"
        write_headers = conn.write_headers

        def absolute(start_line: Any, headers: Any, chunk: bytes | None = None) -> Any:
            line = httputil.RequestStartLine(
                start_line.method, base + start_line.path, start_line.version
            )
            if proxy.auth:
                headers["Proxy-Authorization"] = proxy.auth
            return write_headers(line, headers, chunk)

        conn.write_headers = absolute  # type: ignore[method-assign]
        return conn


class ProxyAwareHTTPClient(SimpleAsyncHTTPClient):
    """Tornado's HTTP client, going through the proxy the environment names."""

    def initialize(  # type: ignore[override]
        self, *, ctx: RunContext, what: str, target: str, **kwargs: Any
    ) -> None:
        super().initialize(**kwargs)
        self.tcp_client.close()
        self.tcp_client = _ProxyTCPClient(self.resolver, ctx, what, target)

    def _connection_class(self) -> type:
        return _ProxyHTTPConnection
