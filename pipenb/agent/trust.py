"""Which server the agent trusts: the TLS context for its check-ins, built once.

``--ca-file`` is used as given. ``--ca-fingerprint`` fetches the server's CA on first contact,
keeps it only if its fingerprint is the pinned one (see ``pipenb.tls``), and saves it in the data
dir (``server-ca.pem``, 0600), so later starts trust that file and fetch nothing.
"""

from __future__ import annotations

import logging
import os
import ssl
import urllib.parse

from pipenb.errors import ServerError
from pipenb.tls import TlsError, TlsOptions, client_context, fetch_pinned_ca, kept_ca, save_private

log = logging.getLogger("pipenb.agent")

#: The pinned CA, once fetched, in the agent's data dir.
KEPT_CA = "server-ca.pem"


class Trust:
    def __init__(self, server: str, data_dir: str, options: TlsOptions):
        self.server = server
        self.options = options
        self.kept = os.path.join(data_dir, KEPT_CA)
        self._context: ssl.SSLContext | None = None
        self.https = urllib.parse.urlsplit(server).scheme == "https"

    def context(self) -> ssl.SSLContext | None:
        """The context for the next request (None for plain HTTP); ServerError(0) if none yet.

        Blocking (it may fetch the CA): call it in the check-in thread.
        """
        if not self.https:
            return None
        if self._context is None:
            try:
                self._context = self._build()
            except TlsError as exc:
                raise ServerError(0, str(exc), tls=True) from None
        return self._context

    def _build(self) -> ssl.SSLContext:
        pin = self.options.ca_fingerprint
        if not pin:
            return client_context(self.options)
        cadata = kept_ca(self.kept, pin)
        if cadata is None:
            cadata = fetch_pinned_ca(self.server, self.options)
            save_private(self.kept, cadata)
            log.info("pinned the server's CA (SHA-256 %s), kept in %s", pin, self.kept)
        return client_context(self.options, cadata)
