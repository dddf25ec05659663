"""Client-side TLS for the agent and the user client: contexts, CA pinning, errors in words.

Standard library only (``ssl``), because the agent imports it and must stay light.

Pinning by fingerprint (``--ca-fingerprint``) works in three steps, since Python before 3.13
hands out only the server's leaf certificate after a handshake:

1. connect with TLS *without* verification and ``GET /pipenb/api/v1/ca.pem`` (no credential is
   sent on that connection), which lists the certificates of the server's chain;
2. keep the one whose SHA-256 fingerprint equals the pinned one, and refuse if none does;
3. verify every real connection against that certificate (chain and host name), as with
   ``--ca-file``. The caller keeps the certificate, so later starts skip steps 1 and 2.

A man in the middle can answer step 1, but not with a certificate of the pinned fingerprint, and
without the CA's private key it cannot pass step 3.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

from pipenb.atomic import write_atomic
from pipenb.urls import API_PREFIX

#: The path, under the server's URL, where it serves the certificates of its chain.
CA_PATH = f"{API_PREFIX}/ca.pem"
#: Seconds to connect and finish a TLS handshake: a server that does not speak TLS is found out
#: by the bytes it sends back, and one that says nothing must not hold the agent for long.
HANDSHAKE_TIMEOUT = 10.0

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


class TlsError(Exception):
    """A TLS problem described for people: the cause, and what to change."""


@dataclass(frozen=True)
class TlsOptions:
    """What a client trusts and shows: ``--ca-file`` or ``--ca-fingerprint``, ``--cert/--key``."""

    ca_file: str | None = None
    ca_fingerprint: str | None = None
    cert: str | None = None
    key: str | None = None

    def check(self) -> None:
        if self.ca_file and self.ca_fingerprint:
            raise TlsError("give --ca-file or --ca-fingerprint, not both")
        if self.key and not self.cert:
            raise TlsError("--key needs --cert (the client certificate)")
        for flag, path in (("--ca-file", self.ca_file), ("--cert", self.cert), ("--key", self.key)):
            if path and not os.path.isfile(path):
                raise TlsError(f"{flag} {path}: no such file")
        if self.ca_fingerprint:
            normal_fingerprint(self.ca_fingerprint)
        if self.ca_file or self.cert:
            client_context(self)  # the files load: a wrong one is found now, not at first contact


# ---------------------------------------------------------------------------- fingerprints
def normal_fingerprint(text: str) -> str:
    """``AB:CD:...`` (upper case, colons) from any common spelling; TlsError if not SHA-256."""
    raw = text.strip()
    if raw.lower().startswith("sha256:"):
        raw = raw[7:]
    hexits = re.sub(r"[\s:]", "", raw).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", hexits):
        raise TlsError(
            f"--ca-fingerprint {text!r} is not a SHA-256 fingerprint "
            "(64 hex digits, colons optional, as `pipenb server` prints it)"
        )
    return ":".join(hexits[i : i + 2] for i in range(0, 64, 2))


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``AB:CD:...``."""
    return normal_fingerprint(hashlib.sha256(der).hexdigest())


def pem_certificates(text: str) -> list[str]:
    """The PEM certificate blocks in a text (a chain file, or the server's ca.pem)."""
    return [m.group(0) for m in _PEM.finditer(text)]


def pinned_certificate(pem: str, pin: str) -> str | None:
    """The certificate in ``pem`` whose fingerprint is ``pin``, or None."""
    want = normal_fingerprint(pin)
    for block in pem_certificates(pem):
        try:
            der = ssl.PEM_cert_to_DER_cert(block)
        except ValueError:
            continue
        if fingerprint(der) == want:
            return block + "\n"
    return None


# ---------------------------------------------------------------------------- contexts
def client_context(
    options: TlsOptions, cadata: str | None = None, *, verify: bool = True
) -> ssl.SSLContext:
    """The context for ``https://``: the system's CAs, or only ``--ca-file``/``cadata``."""
    try:
        ctx = ssl.create_default_context(
            cafile=options.ca_file if verify else None, cadata=cadata if verify else None
        )
    except (ssl.SSLError, OSError) as exc:
        what = f"--ca-file {options.ca_file}" if options.ca_file and verify else "the pinned CA"
        raise TlsError(f"{what}: not a usable PEM certificate ({exc})") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cadata is not None:
        # a pinned certificate is a trust anchor even when it is not a root (a leaf, an
        # intermediate): the pin says so
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if options.cert:
        try:
            ctx.load_cert_chain(options.cert, options.key or None)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"--cert {options.cert}: cannot load the client certificate and key ({exc})"
            ) from None
    return ctx


class HTTPSConnection(http.client.HTTPSConnection):
    """``http.client``'s, with the connect and handshake bounded by HANDSHAKE_TIMEOUT."""

    def connect(self) -> None:
        timeout = self.timeout
        self.timeout = min(HANDSHAKE_TIMEOUT, timeout) if timeout else HANDSHAKE_TIMEOUT
        try:
            super().connect()
        finally:
            self.timeout = timeout
        self.sock.settimeout(timeout)


def fetch_pinned_ca(url: str, options: TlsOptions, timeout: float = HANDSHAKE_TIMEOUT) -> str:
    """Steps 1 and 2 of pinning (see the module's docstring): the pinned CA's PEM, or TlsError."""
    assert options.ca_fingerprint
    parts = urllib.parse.urlsplit(url)
    conn = HTTPSConnection(
        parts.hostname or "127.0.0.1",
        parts.port,
        timeout=timeout,
        context=client_context(options, verify=False),
    )
    try:
        conn.request("GET", CA_PATH, headers={"Accept": "application/x-pem-file"})
        resp = conn.getresponse()
        body = resp.read(1 << 20).decode("ascii", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise TlsError(describe(exc, url)) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise TlsError(
            f"TLS: no CA to pin: the server at {url} does not serve its CA ({CA_PATH} answered {resp.status}): "
            "use --ca-file"
        )
    found = pinned_certificate(body, options.ca_fingerprint)
    if found is None:
        raise TlsError(
            f"TLS: certificate fingerprint mismatch: no certificate of the server at {url} has the "
            f"SHA-256 fingerprint {normal_fingerprint(options.ca_fingerprint)} given with "
            "--ca-fingerprint (a different server, or a man in the middle)"
        )
    return found


def save_private(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write a file readable by its owner only, atomically (temporary file, then rename), in a
    directory made 0700 if it is new."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomic(path, data.encode() if isinstance(data, str) else data, mode=0o600)


def kept_ca(path: str, pin: str) -> str | None:
    """The CA kept at ``path`` if it is the pinned one (a changed pin fetches again)."""
    try:
        with open(path) as fh:
            return pinned_certificate(fh.read(), pin)
    except (OSError, TlsError):
        return None


# ---------------------------------------------------------------------------- plain http
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_problem(url: str) -> str | None:
    """Why ``url`` must not be used without ``--insecure-http`` (None: it may)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (
            f"{url} is plain HTTP to another host: keys and pipes would cross the network "
            "readable and changeable by anyone on the way. Use https:// (see `pipenb server "
            "--tls-self-signed`), or give --insecure-http to accept that (labs only)"
        )
    return None


# ---------------------------------------------------------------------------- errors in words
#: OpenSSL verification codes, in words.
_VERIFY = {
    10: "certificate expired: the server's certificate has expired (renew it)",
    9: "certificate not yet valid: check the clocks of both hosts",
    2: "unknown CA: the server's certificate is signed by a CA this client does not trust",
    18: "unknown CA: the server's certificate is self-signed and not trusted",
    19: "unknown CA: the server's certificate is signed by a CA this client does not trust",
    20: "unknown CA: the server's certificate is signed by a CA this client does not trust",
    21: "unknown CA: the server's certificate is signed by a CA this client does not trust",
}
_HINT_CA = "give the server's CA with --ca-file or --ca-fingerprint"


def describe(exc: BaseException, url: str, client_cert: bool = False) -> str:
    """One line naming the cause of a failed TLS (or TLS-less) connection to ``url``.

    Every TLS cause starts ``TLS: <cause>:`` (unknown CA, certificate name mismatch,
    certificate expired, certificate fingerprint mismatch, not TLS, HTTPS required, client
    certificate required, client certificate refused), so logs can be searched for it.
    ``client_cert``: whether this client showed a certificate (mutual TLS).
    """
    where = f"the server at {url}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        host = urllib.parse.urlsplit(url).hostname
        if code == 62 or "mismatch" in str(exc):
            return (
                f"TLS: certificate name mismatch: {where} presented a certificate that is not "
                f"for {host!r} (re-issue it for that name, e.g. with --tls-names, or use a "
                "name it is for)"
            )
        cause = _VERIFY.get(code or -1, f"certificate not trusted: {exc.verify_message}")
        hint = "" if code in (9, 10) else f"; {_HINT_CA}"
        return f"TLS: {cause} ({where}){hint}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"):
            return (
                f"TLS: not TLS: {where} speaks plain HTTP, not HTTPS: use an http:// URL, "
                "or start the server with TLS"
            )
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in reason:
            # TLS 1.3: a server that refuses the client's certificate (or its absence) sends
            # its alert just as the client sends its request, and the alert is often lost
            return _mutual_tls_refusal(where, client_cert, "ended the TLS handshake")
        if "CERTIFICATE_REQUIRED" in reason or reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
            return (
                f"TLS: client certificate required: {where} wants mutual TLS; give --cert and --key"
            )
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
            return (
                f"TLS: client certificate refused: {where} did not accept this client's "
                f"certificate ({exc.reason}); it must be issued by the server's --tls-client-ca"
            )
        return f"TLS: handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected, EOFError)):
        return f"cannot reach {where}: the connection was closed ({exc or type(exc).__name__})"
    if isinstance(exc, socket.timeout):
        return f"cannot reach {where}: no answer in time ({exc})"
    return f"cannot reach {where}: {exc}"


def _mutual_tls_refusal(where: str, client_cert: bool, what: str) -> str:
    if client_cert:
        return (
            f"TLS: client certificate refused: {where} {what} after this client showed its "
            "certificate, as a server with mutual TLS does when the certificate is not issued "
            "by its --tls-client-ca"
        )
    return (
        f"TLS: client certificate required: {where} {what}, as a server with mutual TLS does "
        "when no client certificate is shown: give --cert and --key"
    )


#: The API's error code for a plain-HTTP request sent to an HTTPS port.
HTTPS_REQUIRED = "https_required"


def https_required_message(url: str) -> str:
    return (
        f"TLS: HTTPS required: the server at {url} speaks HTTPS, not plain HTTP: use an "
        "https:// URL (with --ca-file or --ca-fingerprint)"
    )
