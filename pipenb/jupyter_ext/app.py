"""The jupyter-server extension: the pipenb API mounted inside a Jupyter server.

User endpoints are authenticated by Jupyter itself (its token, cookie or identity provider, and
its authorizer on the resource ``"pipenb"``); agent endpoints accept agent keys only and the
enrollment endpoint the enrollment key only, exactly as in the standalone server. Kernels started
by this server find the API through ``PIPENB_URL`` and ``PIPENB_TOKEN`` in their environment.
"""

from __future__ import annotations

import functools
import getpass
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.auth import User
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.application import ExtensionApp
from traitlets import Dict, Enum, default

from pipenb.jupyter_ext.traits import settings_from, traits_for
from pipenb.server.app import app_settings, handlers
from pipenb.server.control_plane import ControlPlane
from pipenb.server.handlers.base import ApiHandler
from pipenb.server.install import check_wheel
from pipenb.server.roles import ROLES, Principal
from pipenb.server.security import hash_secret, same_secret
from pipenb.server.settings import ServerSettings

READ_METHODS = {"GET", "HEAD", "OPTIONS"}

#: Who a request made with the kernels' token is, for Jupyter's logs and ``@authenticated``.
KERNEL_USER = User(username="pipenb-kernel", name="pipenb kernel token")


def kernel_token_used(handler: Any) -> bool:
    """Does the request carry the token this server handed to its kernels?"""
    stored = handler.settings.get("pipenb_kernel_token_hash")
    scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return bool(stored and value and scheme.lower() in ("token", "bearer")) and same_secret(
        value, stored
    )


def owner_name() -> str:
    """The user this Jupyter server runs for: JupyterHub's user, else the account running it."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def jupyter_role(settings: dict[str, Any], username: str) -> str:
    """A Jupyter user's pipenb role: ``PipenbExtension.roles`` names it; otherwise the server's
    own user (on JupyterHub, ``JUPYTERHUB_USER``; elsewhere everyone Jupyter lets in, since a
    plain Jupyter server has one user) is an admin and anyone else gets ``default_role``."""
    named = settings.get("pipenb_roles") or {}
    if username in named:
        return str(named[username])
    owner = os.environ.get("JUPYTERHUB_USER")
    if owner is None or username == owner:
        return "admin"
    return str(settings.get("pipenb_default_role", "viewer"))


def jupyter_authorize_user(handler: Any) -> Principal | None:
    """``pipenb_authorize_user`` inside Jupyter: the kernels' token (its user's role and nothing
    more), or a user Jupyter knows and allows on "pipenb", with the role mapped from their name."""
    user = getattr(handler, "_jupyter_current_user", None)
    if user is None:
        return None
    if user is KERNEL_USER:
        owner = owner_name()
        return Principal(owner, jupyter_role(handler.settings, owner), "kernel")
    action = "read" if handler.request.method in READ_METHODS else "write"
    if not handler.authorizer.is_authorized(handler, user, action, "pipenb"):
        return None
    # on JupyterHub the username is the hub's; a plain Jupyter server's token logins get a
    # made-up name, so the trail names the account the server runs as
    name = user.username if os.environ.get("JUPYTERHUB_USER") else owner_name()
    return Principal(name, jupyter_role(handler.settings, name), "jupyter")


class _JupyterBridge:
    """Put in front of a pipenb handler mixed with Jupyter's ``APIHandler``.

    User operations run Jupyter's own ``prepare`` first (host check, identity, XSRF for cookie
    logins, origin) so that ``jupyter_authorize_user`` can decide; agent and open operations never
    consult Jupyter's identity: only the pipenb checks apply.
    """

    drain_refused_bodies = False  # @authenticated runs before the body is read: refuse early

    def _is_user_op(self) -> bool:
        op = self.operation()  # type: ignore[attr-defined]
        return op is not None and op.auth == "user"

    def check_xsrf_cookie(self) -> None:
        # a header token is not something a cross-site form can send: no XSRF check for it
        if self._is_user_op() and not kernel_token_used(self):
            # the bridge is mixed into a JupyterHandler subclass (jupyter_handler below); mypy
            # checks the mixin on its own
            JupyterHandler.check_xsrf_cookie(self)  # type: ignore[arg-type]

    async def prepare(self) -> None:
        if self._is_user_op() and kernel_token_used(self):
            self.current_user = self._jupyter_current_user = KERNEL_USER
        elif self._is_user_op():
            try:
                await APIHandler.prepare(self)  # type: ignore[arg-type]
            except tornado.web.HTTPError as exc:
                # no known user: pipenb's own check answers (401, or 403 for an agent key)
                if exc.status_code != 403 or getattr(self, "_jupyter_current_user", None):
                    raise
        await ApiHandler.prepare(self)  # type: ignore[arg-type]


def _mark(method: Callable[..., Any], user: bool) -> Callable[..., Any]:
    """A wrapper jupyter-server recognises: ``@web.authenticated`` for user operations, the
    ``@allow_unauthenticated`` marker for agent/open ones (they check agent or enrollment keys
    themselves). The original function is never modified."""
    if user:
        return tornado.web.authenticated(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs)

    wrapper.__allow_unauthenticated = True  # type: ignore[attr-defined]
    return wrapper


def jupyter_handler(cls: type[tornado.web.RequestHandler]) -> type[tornado.web.RequestHandler]:
    """A subclass of the pipenb handler ``cls`` that is also a Jupyter ``APIHandler``."""
    if not issubclass(cls, ApiHandler):
        return cls
    ns: dict[str, Any] = {"__module__": __name__, "__doc__": cls.__doc__}
    for verb in cls.SUPPORTED_METHODS:
        method = getattr(cls, verb.lower(), None)
        op = getattr(method, "__pipenb_api__", None)
        if method is not None and op is not None:
            ns[verb.lower()] = _mark(method, op.auth == "user")
    return type(f"Jupyter{cls.__name__}", (_JupyterBridge, cls, APIHandler), ns)


class PipenbExtension(ExtensionApp):
    """Mounts the pipenb API under ``{base_url}pipenb/api/v1`` and runs its control plane."""

    name = "pipenb"
    description = "pipenb control plane inside Jupyter"

    # every server setting Jupyter can use: db_url, enroll_key, poll_interval, ... (see
    # pipenb/server_settings.py; the class body's namespace takes them like written traitlets)
    locals().update(traits_for(ServerSettings))

    roles = Dict(
        {},
        help="pipenb roles by Jupyter user name, e.g. {'ana': 'editor', 'bo': 'viewer'}",
    ).tag(config=True)
    default_role = Enum(
        list(ROLES),
        "viewer",
        help="role of a Jupyter user who is not this server's own user and not in `roles`",
    ).tag(config=True)

    cp: ControlPlane | None = None
    _kernel_token: str = ""

    @default("db_url")
    def _default_db_url(self) -> str:
        path = Path(jupyter_data_dir()) / "pipenb"
        path.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path / 'pipenb.db'}"

    def initialize_settings(self) -> None:
        wheel = self.wheel  # type: ignore[attr-defined]
        self.cp = ControlPlane(
            settings_from(
                self,
                ServerSettings,
                token=None,
                wheel=str(check_wheel(wheel)) if wheel else None,
            )
        )
        assert self.serverapp is not None  # jupyter_server sets it before initialize_settings
        self.settings.update(app_settings(self.cp, self.serverapp.base_url))
        self.settings["pipenb_authorize_user"] = jupyter_authorize_user
        bad = {u: r for u, r in self.roles.items() if r not in ROLES}
        if bad:
            raise ValueError(f"PipenbExtension.roles: unknown roles {bad}; use {', '.join(ROLES)}")
        self.settings["pipenb_roles"] = dict(self.roles)
        self.settings["pipenb_default_role"] = self.default_role
        self._kernel_token = secrets.token_urlsafe(32)
        self.settings["pipenb_kernel_token_hash"] = hash_secret(self._kernel_token)
        self._export_env()
        tornado.ioloop.IOLoop.current().add_callback(self._started)

    def initialize_handlers(self) -> None:
        # jupyter-server prefixes the extension's patterns with its base URL
        self.handlers.extend((pattern, jupyter_handler(h)) for pattern, h in handlers("/"))

    def _export_env(self) -> None:
        """Kernels started by this server inherit where the API is and how to call it."""
        assert self.serverapp is not None
        os.environ["PIPENB_URL"] = self.serverapp.connection_url.rstrip("/")
        os.environ["PIPENB_TOKEN"] = self._kernel_token

    def _started(self) -> None:
        if self.cp is not None:
            self.cp.start()
            self._export_env()  # the port is final once the loop runs

    async def stop_extension(self) -> None:
        if self.cp is not None:
            self.cp.live.wake(*list(self.cp.live.waiters))  # answer held check-ins
            await self.cp.stop()
            self.cp = None
