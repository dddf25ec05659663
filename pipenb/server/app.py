"""The route table and the tornado application. The same handlers mount inside Jupyter."""

from __future__ import annotations

import re
from typing import Any

import tornado.web

from pipenb.server.core import ControlPlane
from pipenb.server.handlers import agent_api, meta
from pipenb.server.handlers import resources as r
from pipenb.server.handlers.base import NotFoundHandler

PREFIX = "/pipenb/api/v1"

#: (OpenAPI path, handler). ``{name}`` segments become URL arguments.
ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    ("/health", meta.HealthHandler),
    ("/openapi.json", meta.OpenApiHandler),
    ("/pipes", r.PipesHandler),
    ("/pipes/{name}", r.PipeHandler),
    ("/pipes/{name}/versions", r.PipeVersionsHandler),
    ("/pipes/{name}/diff", r.PipeDiffHandler),
    ("/agents", r.AgentsHandler),
    ("/agents/{agent_id}", r.AgentHandler),
    ("/agents/{agent_id}/keys", r.AgentKeysHandler),
    ("/agents/{agent_id}/keys/{key_id}", r.AgentKeyHandler),
    ("/agents/{agent_id}/metrics", r.AgentMetricsHandler),
    ("/agents/{agent_id}/logs", r.AgentLogsHandler),
    ("/deployments", r.DeploymentsHandler),
    ("/deployments/{dep_id}", r.DeploymentHandler),
    ("/deployments/{dep_id}/start", r.DeploymentStartHandler),
    ("/deployments/{dep_id}/stop", r.DeploymentStopHandler),
    ("/deployments/{dep_id}/upgrade", r.DeploymentUpgradeHandler),
    ("/deployments/{dep_id}/commands", r.DeploymentCommandsHandler),
    ("/deployments/{dep_id}/metrics", r.DeploymentMetricsHandler),
    ("/deployments/{dep_id}/logs", r.DeploymentLogsHandler),
    ("/commands/{command_id}", r.CommandHandler),
    ("/agent/checkin", agent_api.CheckinHandler),
    ("/agent/enroll", agent_api.EnrollHandler),
]


def path_regex(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"


def handlers(base_url: str = "/") -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """URL specs for tornado, under ``base_url`` (Jupyter's base URL, or ``/``)."""
    prefix = base_url.rstrip("/") + PREFIX
    specs: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        (prefix + path_regex(path), handler) for path, handler in ROUTES
    ]
    specs.append((prefix + "/.*", NotFoundHandler))
    return specs


def app_settings(cp: ControlPlane, base_url: str = "/") -> dict[str, Any]:
    """What the handlers read from the application settings."""
    return {
        "pipenb": cp,
        "pipenb_routes": ROUTES,
        "pipenb_prefix": base_url.rstrip("/") + PREFIX,
    }


def make_app(cp: ControlPlane, **settings: Any) -> tornado.web.Application:
    return tornado.web.Application(
        handlers(), **app_settings(cp), default_handler_class=NotFoundHandler, **settings
    )
