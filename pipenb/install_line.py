"""The one line that installs an agent on a worker host (``pipenb agents install-command``).

It fetches the server's ``install.sh`` and runs it with everything it must not take on trust
from the network: the wheel's SHA-256 and, over https, the server's public-key pin (both from
an authenticated API call over the connection the user already trusts), and the CA fingerprint
the agent pins. The enrollment token is an argument of the line, never part of a URL, so no
server or proxy log records it.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import ssl
from typing import Any
from urllib.parse import urlsplit

from pipenb.errors import UsageError
from pipenb.urls import API_PREFIX

DEFAULT_PREFIX = "/opt/pipenb-agent"
API = API_PREFIX


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def cert_fingerprint(pem_path: str) -> str:
    """SHA-256 (hex) of the first certificate in a PEM file: what the agent's
    ``--ca-fingerprint`` compares the server's chain against."""
    try:
        with open(pem_path, encoding="ascii") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"--ca-file {pem_path}: {exc.strerror}") from None
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    if not m:
        raise UsageError(f"--ca-file {pem_path}: no PEM certificate in it")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


def install_line(
    server_url: str,
    info: dict[str, Any],
    *,
    enroll_token: str | None,
    name: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    service: bool = True,
    ca_fingerprint: str | None = None,
    insecure_http: bool = False,
) -> str:
    """The shell line, from the server's install info (``GET /agent/install``).

    ``server_url`` is the address worker hosts reach the server at (with Jupyter's base URL,
    if any). Raises UsageError when the line could not be safe or could not work.
    """
    server_url = server_url.rstrip("/")
    if server_url.endswith(API):
        server_url = server_url[: -len(API)]
    scheme = urlsplit(server_url).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"server URL {server_url!r}: give http://... or https://...")
    wheel = info.get("wheel")
    if not wheel:
        raise UsageError(
            "the server serves no agent wheel: start it with --wheel FILE "
            "(`make dist` builds dist/pipenb_fleet-VERSION-py3-none-any.whl)"
        )
    if not enroll_token:
        raise UsageError(
            "give the enrollment token the agent enrolls with (--enroll-token), or --labels "
            "to have a one-use token made with them"
        )
    pin = info.get("tls_pin")
    if scheme == "http" and not is_loopback(server_url) and not insecure_http:
        raise UsageError(
            f"{server_url} is plain http to another host: the token and the agent's key would "
            "cross the network in clear. Serve TLS, or add --insecure-http (labs only)"
        )
    if scheme == "https" and ca_fingerprint and not pin:
        raise UsageError(
            "the server uses a private CA but did not give its public-key pin, so a worker "
            "host could not check the download; upgrade the server or install by hand"
        )

    curl = ["curl", "-fsS"]
    if scheme == "https":
        curl += ["--proto", "=https"]
        if pin:
            curl += ["--insecure", "--pinnedpubkey", pin]  # the pin replaces the CA check
    curl.append(f"{server_url}{API}/agent/install.sh")
    args = ["--server", server_url, "--wheel-sha256", wheel["sha256"], "--token", enroll_token]
    if name:
        args += ["--name", name]
    if prefix != DEFAULT_PREFIX:
        args += ["--prefix", prefix]
    if pin:
        args += ["--pin", pin]
    if ca_fingerprint:
        args += ["--ca-fingerprint", ca_fingerprint]
    if insecure_http and scheme == "http" and not is_loopback(server_url):
        args.append("--insecure-http")
    if not service:
        args.append("--no-service")
    shell = ["sh", "-s", "--"] if not service else ["sudo", "sh", "-s", "--"]
    return f"{shlex.join(curl)} | {shlex.join(shell + args)}"
