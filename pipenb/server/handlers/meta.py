"""Health and the OpenAPI document."""

from __future__ import annotations

import orjson

from pipenb import __version__
from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class HealthHandler(ApiHandler):
    @api("Liveness of the server", auth="none", response=M.Health, offload=False)
    def get(self) -> None:
        self.send(M.Health(status="ok", version=__version__, jobs=self.cp.coord.leading))


class OpenApiHandler(ApiHandler):
    @api("This OpenAPI document", auth="none", offload=False)
    def get(self) -> None:
        from pipenb.server.openapi import openapi_document

        doc = self.settings.get("pipenb_openapi")
        if doc is None:
            doc = self.settings["pipenb_openapi"] = orjson.dumps(
                openapi_document(self.settings["pipenb_routes"], self.settings["pipenb_prefix"])
            )
        self.set_header("Content-Type", "application/json")
        self.finish(doc)


class CaHandler(ApiHandler):
    """The certificates of the server's TLS chain, for agents that pin a fingerprint.

    Public on purpose: certificates are not secrets, and a client cannot authenticate before it
    knows whom to trust. Only CERTIFICATE blocks leave (a chain file may also hold the key).
    """

    @api(
        "The certificates of the server's TLS chain (PEM), for CA pinning",
        auth="none",
        offload=False,
    )
    def get(self) -> None:
        from pipenb.tls import pem_certificates

        cert = self.cp.settings.tls_cert
        if not cert:  # mounted only with TLS (TLS_ROUTES in pipenb.server.app)
            raise ApiError(404, "not_found", "this server does not speak TLS: no certificates")
        with open(cert) as fh:
            blocks = pem_certificates(fh.read())
        self.set_header("Content-Type", "application/x-pem-file")
        self.finish("\n".join(blocks) + "\n")
