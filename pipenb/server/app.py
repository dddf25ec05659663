"""The route table and the tornado application. The same handlers mount inside Jupyter."""

from __future__ import annotations

import re
from typing import Any

import tornado.web
from tornado import httputil

from pipenb.server.control_plane import ControlPlane
from pipenb.server.handlers import (
    agent_api,
    agents,
    authoring,
    commands,
    deployments,
    enrollment,
    install,
    meta,
    pipes,
    users,
)
from pipenb.server.handlers.base import NotFoundHandler, error_body
from pipenb.urls import API_PREFIX

PREFIX = API_PREFIX

#: (OpenAPI path, handler). ``{name}`` segments become URL arguments.
ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    ("/health", meta.HealthHandler),
    ("/openapi.json", meta.OpenApiHandler),
    ("/pipes", pipes.PipesHandler),
    ("/pipes/{name}", pipes.PipeHandler),
    ("/pipes/{name}/versions", pipes.PipeVersionsHandler),
    ("/pipes/{name}/diff", pipes.PipeDiffHandler),
    ("/agents", agents.AgentsHandler),
    ("/agents/{agent_id}", agents.AgentHandler),
    ("/agents/{agent_id}/keys", agents.AgentKeysHandler),
    ("/agents/{agent_id}/keys/{key_id}", agents.AgentKeyHandler),
    ("/agents/{agent_id}/metrics", agents.AgentMetricsHandler),
    ("/enroll-tokens", enrollment.EnrollTokensHandler),
    ("/enroll-tokens/{token_id}", enrollment.EnrollTokenHandler),
    ("/agents/{agent_id}/logs", agents.AgentLogsHandler),
    ("/deployments", deployments.DeploymentsHandler),
    ("/deployments/{dep_id}", deployments.DeploymentHandler),
    ("/deployments/{dep_id}/start", deployments.DeploymentStartHandler),
    ("/deployments/{dep_id}/stop", deployments.DeploymentStopHandler),
    ("/deployments/{dep_id}/upgrade", deployments.DeploymentUpgradeHandler),
    ("/deployments/{dep_id}/commands", deployments.DeploymentCommandsHandler),
    ("/deployments/{dep_id}/metrics", deployments.DeploymentMetricsHandler),
    ("/deployments/{dep_id}/logs", deployments.DeploymentLogsHandler),
    ("/commands/{command_id}", commands.CommandHandler),
    ("/command-expiry", commands.CommandExpiryHandler),
    ("/agents/{agent_id}/previews", commands.AgentPreviewsHandler),
    ("/previews/{preview_id}", commands.PreviewHandler),
    ("/agent-settings", agents.AgentSettingsHandler),
    ("/agents/{agent_id}/settings", agents.AgentSettingsOfHandler),
    ("/whoami", users.WhoAmIHandler),
    ("/users", users.UsersHandler),
    ("/users/{name}", users.UserHandler),
    ("/users/{name}/tokens", users.UserTokensHandler),
    ("/users/{name}/tokens/{token_id}", users.UserTokenHandler),
    ("/audit", users.AuditHandler),
    ("/agent/checkin", agent_api.CheckinHandler),
    ("/agent/enroll", agent_api.EnrollHandler),
    ("/agent/install", install.InstallInfoHandler),
    ("/agent/install.sh", install.InstallScriptHandler),
    ("/agent/wheel", install.WheelHandler),
    ("/authoring/validate", authoring.ValidateHandler),
    ("/authoring/preview", authoring.PreviewHandler),
    ("/authoring/test", authoring.RunTestsHandler),
    ("/authoring/schema", authoring.SchemaHandler),
]


#: Mounted only when the standalone server speaks HTTPS (``--tls-cert``/``--tls-self-signed``).
TLS_ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [("/ca.pem", meta.CaHandler)]


def path_regex(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"


def handlers(
    base_url: str = "/", routes: list[tuple[str, type[tornado.web.RequestHandler]]] = ROUTES
) -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """URL specs for tornado, under ``base_url`` (Jupyter's base URL, or ``/``)."""
    prefix = base_url.rstrip("/") + PREFIX
    specs: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        (prefix + path_regex(path), handler) for path, handler in routes
    ]
    specs.append((prefix + "/.*", NotFoundHandler))
    return specs


def app_settings(
    cp: ControlPlane,
    base_url: str = "/",
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = ROUTES,
) -> dict[str, Any]:
    """What the handlers read from the application settings."""
    return {
        "pipenb": cp,
        "pipenb_routes": routes,
        "pipenb_prefix": base_url.rstrip("/") + PREFIX,
    }


REASONS = {400: "Bad Request", 413: "Payload Too Large"}  # RFC 9110's names


class _BodyLimit(httputil.HTTPMessageDelegate):
    """Refuses a request body over ``limit`` bytes with the API's JSON 413 as soon as it is known
    to be too big (its ``Content-Length``, or the bytes of a chunked body so far), without
    reading it into memory, then closes the connection. Without it, tornado's own cap answers
    a bare ``400`` with no body, and bodies under that cap are read whole before the handler
    refuses them."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, conn: Any, limit: int | None):
        self.inner, self.conn, self.limit = inner, conn, limit
        self.size = 0
        self.refused = False

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        length = headers.get("Content-Length", "").strip()
        if length and not length.isdigit():
            # tornado would answer a bare 400 with no body; say what is wrong, as JSON
            self._refuse(400, "bad_request", f"Content-Length is not a number: {length[:40]!r}")
            return None
        # limit None: a streaming handler, which limits its own body once it has checked the
        # credentials
        if self.limit is not None and length and int(length) > self.limit:
            self.conn.set_max_body_size(int(length))  # else tornado's cap answers 400 after us
            self._refuse()
            return None
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        if self.refused:
            return None
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            self._refuse()
            return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.inner.on_connection_close()

    def _refuse(self, status: int = 413, code: str = "too_large", message: str = "") -> None:
        self.refused = True
        message = message or f"request body over {self.limit} bytes"
        body = error_body(code, message)
        headers = httputil.HTTPHeaders(
            {"Content-Type": "application/json", "Content-Length": str(len(body))}
        )
        headers["Connection"] = "close"
        self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", status, REASONS.get(status, "")),
            headers,
            body,
        )
        self.conn.finish()


class _Application(tornado.web.Application):
    """The standalone server's application: a broken ``Content-Length`` gets a JSON 400, and a
    handler that does not stream its body (none of the API's) has it capped while it arrives."""

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        metrics = self.settings.get("pipenb_metrics")
        if metrics is not None:
            metrics.observe(handler)
        super().log_request(handler)

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        delegate = super().find_handler(request, **kwargs)
        streams = getattr(delegate, "stream_request_body", False)
        limit = None if streams else self.settings["pipenb"].settings.max_body
        return _BodyLimit(delegate, request.connection, limit)


def make_app(cp: ControlPlane, **settings: Any) -> tornado.web.Application:
    routes = ROUTES + TLS_ROUTES if cp.settings.tls_cert else ROUTES
    specs = handlers("/", routes)
    extra: dict[str, Any] = {}
    try:  # Prometheus metrics at /metrics, when prometheus_client is installed (server extra)
        from pipenb.server.metrics import MetricsHandler, ServerMetrics
    except ImportError:
        pass
    else:
        metrics = ServerMetrics(cp)
        specs.insert(0, ("/metrics", MetricsHandler))
        extra = {"pipenb_metrics": metrics}
    return _Application(
        specs,
        **app_settings(cp, "/", routes),
        default_handler_class=NotFoundHandler,
        **extra,
        **settings,
    )
