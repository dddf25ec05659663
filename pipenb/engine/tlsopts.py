"""``tls:`` options of network inputs and outputs, and the ``ssl`` contexts they make.

Listeners (``tcp``, ``http-server``) take ``tls: {cert, key, client-ca}``: the server's
certificate chain and key (PEM), and, to require client certificates (mutual TLS), the CA that
signs them. Senders (``tcp`` and ``syslog`` outputs, ``http-post``, ``http-poll``) take
``tls: {ca-file, cert, key, verify}``: the CA to verify the receiver with (default: the system's),
a client certificate and key for mutual TLS, and ``verify: false`` to skip verification (logged
as a warning every time a connection is made, because it gives up what TLS is for).
"""

from __future__ import annotations

import logging
import ssl

from pydantic import model_validator

from pipenb.lang.registry import Options

log = logging.getLogger("pipenb.engine.tls")

#: TLS versions below this are refused both ways
MINIMUM = ssl.TLSVersion.TLSv1_2


class ListenTls(Options):
    """``tls: {cert, key, client-ca}`` on a listener."""

    cert: str
    key: str | None = None
    client_ca: str | None = None


class SendTls(Options):
    """``tls: {ca-file, cert, key, verify}`` on a sender."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> SendTls:
        if self.key and not self.cert:
            raise ValueError("tls: key is given without cert (the client certificate it signs)")
        return self


def server_context(opts: ListenTls, where: str) -> ssl.SSLContext:
    """A server context; a file that cannot be read is a clear error naming ``where``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MINIMUM
    try:
        ctx.load_cert_chain(opts.cert, opts.key)
        if opts.client_ca:
            ctx.load_verify_locations(opts.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{where} tls: cannot load certificate or key: {exc}") from exc
    return ctx


def client_context(opts: SendTls, where: str) -> ssl.SSLContext:
    """A client context verifying the receiver (unless ``verify: false``)."""
    ctx = ssl.create_default_context(cafile=opts.ca_file)
    ctx.minimum_version = MINIMUM
    if not opts.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("%s tls: verify is false: the receiver's certificate is not checked", where)
    try:
        if opts.cert:
            ctx.load_cert_chain(opts.cert, opts.key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{where} tls: cannot load client certificate or key: {exc}") from exc
    return ctx
