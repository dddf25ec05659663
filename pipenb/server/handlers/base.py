"""The base handler: JSON errors, body limits, user and agent authentication, API metadata.

Every handler method is decorated with ``@api(...)``: the decorator records what the method
accepts and returns, and the OpenAPI document is built from those records, so it lists exactly
the routes that are mounted.

Request bodies are streamed (``@stream_request_body``): ``prepare()`` runs on the headers alone,
so a request without valid credentials is refused before one byte of its body is read, and a
body is refused (413) as soon as it passes its operation's limit (``body_limit``: the name of a
``ServerSettings`` field), whether a ``Content-Length`` announced it or its bytes did.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
import tornado.web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from tornado.http1connection import HTTP1Connection

from pipenb.errors import ApiError, AuthError
from pipenb.server import roles
from pipenb.server.roles import READ_METHODS, ROLES, Principal, allows, needed_role

if TYPE_CHECKING:
    from pipenb.server.control_plane import ControlPlane

log = logging.getLogger("pipenb.server.http")
Auth = Literal["user", "agent", "none"]
DRAIN_MAX = 64 * 1024  # bytes of body read, and dropped, before a refusal is answered


@dataclass(frozen=True)
class Operation:
    summary: str
    auth: Auth
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    query: tuple[str, ...]
    body_limit: str = "max_body"  # the ServerSettings field with this operation's body limit
    role: str | None = None  # user operations: None means viewer for reads, editor for writes
    offload: bool = True  # a plain method runs on a database worker thread (dbpool.py)


def api(
    summary: str,
    *,
    auth: Auth = "user",
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    query: tuple[str, ...] = (),
    body_limit: str = "max_body",
    role: str | None = None,
    offload: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record what an operation accepts and returns, and the role it needs (``role``; see
    server/roles.py). The method it wraps runs once the whole body has arrived (a streamed body
    is joined, and checked, first).

    A plain (not ``async``) method does database work: it runs on a worker thread of the
    control plane's pool (dbpool.py), so a slow statement holds up its own request only; what
    it ``send``s is written back on the event loop. ``offload=False`` keeps a method that
    touches no database (``/health``, files, schemas) on the event loop.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def wrapper(self: ApiHandler, *args: Any, **kwargs: Any) -> Any:
                self.body_arrived()
                return await fn(self, *args, **kwargs)

        elif offload:

            @functools.wraps(fn)
            async def wrapper(self: ApiHandler, *args: Any, **kwargs: Any) -> Any:
                self.body_arrived()
                self._deferred = []
                try:
                    await self.cp.db.run(fn, self, *args, **kwargs)
                finally:
                    sent, self._deferred = self._deferred, None
                for model, code in sent:
                    self.send(model, code)

        else:

            @functools.wraps(fn)
            def wrapper(self: ApiHandler, *args: Any, **kwargs: Any) -> Any:
                self.body_arrived()
                return fn(self, *args, **kwargs)

        op = Operation(summary, auth, body, response, status, query, body_limit, role, offload)
        wrapper.__pipenb_api__ = op  # type: ignore[attr-defined]
        return wrapper

    return deco


def user_token_auth(handler: ApiHandler) -> Principal | None:
    """Standalone server: the server's admin token or a user's token in ``Authorization:
    Bearer T``; who it stands for, or None."""
    return handler.cp.users.authenticate(handler.bearer())


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Base of every API handler. Subclasses implement ``get``/``post``/... with ``@api``."""

    #: Who is calling a user operation, once ``authorize_user`` has said (None elsewhere).
    principal: Principal | None = None
    #: The calling agent, once ``prepare`` has authenticated an ``auth="agent"`` operation.
    agent_id: str
    _sent: BaseModel | None = None  # what ``send`` answered: ``audited_object`` names it
    _chunks: list[bytes] | None = None
    #: answers ``send`` while the method runs on a worker thread, written once it is back
    _deferred: list[tuple[BaseModel | None, int | None]] | None = None
    _received = 0
    _body_limit = 0
    #: read a small body before answering a refusal (False where the host's own checks run at
    #: the method, as Jupyter's ``@authenticated`` does: there a refusal must come first)
    drain_refused_bodies = True

    @property
    def cp(self) -> ControlPlane:
        return self.settings["pipenb"]

    def check_xsrf_cookie(self) -> None:
        """API clients send bearer tokens, not cookies; XSRF does not apply."""

    def bearer(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        for scheme in ("Bearer ", "bearer ", "token ", "Token "):
            if header.startswith(scheme):
                return header[len(scheme) :].strip()
        return None

    def operation(self) -> Operation | None:
        fn = getattr(self, self.request.method.lower(), None)
        return getattr(fn, "__pipenb_api__", None)

    async def prepare(self) -> None:
        """On the headers alone: credentials first, then the announced body size.

        A refusal is answered at once, and the connection closed, when a body of any size may
        follow; when at most ``DRAIN_MAX`` bytes follow, they are read (and dropped) first, so a
        client that sent a small body with a wrong key reads its 401, not a reset connection.
        """
        op = self.operation()
        self._chunks = []
        self._refusal: ApiError | None = None
        self._body_limit = int(getattr(self.cp.settings, op.body_limit if op else "max_body"))
        # whatever we answer, the rest of a body is read and dropped (never kept) until the
        # connection closes; tornado's own cap would add a bare 400 after our answer
        conn = self.request.connection
        if isinstance(conn, HTTP1Connection):  # what tornado's (and Jupyter's) HTTPServer serves
            conn.set_max_body_size(1 << 62)
        length = self.request.headers.get("Content-Length", "").strip()
        try:
            if op is not None:
                if op.auth == "user":
                    await self.authorize_user()
                elif op.auth == "agent":
                    self.agent_id = await self._authenticate_agent()
            if length and not length.isdigit():
                raise ApiError(
                    400, "bad_request", f"Content-Length is not a number: {length[:40]!r}"
                )
            if length and int(length) > self._body_limit:
                raise self._too_large()
        except ApiError as exc:
            chunked = "Transfer-Encoding" in self.request.headers
            small = not chunked and int(length or 0) <= DRAIN_MAX
            if exc.status == 413 or not small or not self.drain_refused_bodies:
                raise
            self._refusal, self._chunks = exc, None  # answered once the body is in

    async def _authenticate_agent(self) -> str:
        """The calling agent: from the key cache when the key is in it (every check-in but an
        agent's first with this process), else read and checked on a worker thread together with
        the other keys waiting (groupcommit.py), so that 10,000 agents meeting a new process
        neither queue on its event loop nor cost a database round trip each."""
        key = self.bearer()
        agent_id = self.cp.agents.cached_agent(key)
        if agent_id is not None:
            return agent_id
        checked = await self.cp.key_checks.write(key)  # with the other first contacts waiting
        if isinstance(checked, AuthError):
            raise checked
        return checked

    def _too_large(self) -> ApiError:
        return ApiError(413, "too_large", f"request body over {self._body_limit} bytes")

    def data_received(self, chunk: bytes) -> None:
        """Keep a body up to its limit; past it, answer 413 at once and keep nothing more."""
        if self._finished or self._chunks is None:
            return
        self._received += len(chunk)
        if self._received > self._body_limit:
            self._chunks = None
            self.send_error(413, exc_info=(ApiError, self._too_large(), None))
            return
        self._chunks.append(chunk)

    def body_arrived(self) -> None:
        """The whole body is in: join it, and refuse a broken one where none is read."""
        if self._refusal is not None:
            raise self._refusal
        if self._chunks is not None:
            self.request.body = b"".join(self._chunks)
            self._chunks = None
        op = self.operation()
        if (
            op is not None
            and op.body is None
            and self.request.method in ("POST", "PUT", "PATCH")
            and (self.request.body or b"").strip()
        ):
            # an operation that reads no body still refuses a broken one, rather than act on it
            try:
                orjson.loads(self.request.body)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None

    async def authorize_user(self) -> None:
        """User endpoints: who is calling (a token here, Jupyter's auth inside Jupyter), then
        whether their role allows the operation (see server/roles.py)."""
        authorize = self.settings.get("pipenb_authorize_user", user_token_auth)
        if authorize is user_token_auth:
            # a user token's row is read from the database: on a database thread, so that a
            # slow or locked database delays this request only, not the event loop
            principal = await self.cp.db.run(user_token_auth, self)
        else:
            principal = authorize(self)
        bearer = self.bearer()
        if principal is None and bearer and bearer.startswith("pnb_"):
            raise AuthError(403, "forbidden", "agent keys are for agent endpoints only")
        if principal is None and bearer:
            raise AuthError(
                401, "unauthorized", "invalid, expired or revoked user token: check PIPENB_TOKEN"
            )
        if principal is None:
            raise AuthError(
                401, "unauthorized", "a user token is required (Authorization: Bearer TOKEN)"
            )
        self.principal = principal
        roles.current.set(principal)
        op = self.operation()
        needed = needed_role(self.request.method, op.role if op else None)
        if not allows(principal.role, needed):
            raise AuthError(
                403,
                "forbidden",
                f"{principal.name} is {_article(principal.role)} {principal.role}; "
                f"this needs the {needed} role",
            )

    def on_finish(self) -> None:
        """Writes go into the audit trail with their answer, refusals included."""
        who = getattr(self, "principal", None)
        if who is None or self.request.method in READ_METHODS:
            return
        method, path = self.request.method, self.request.path
        record = functools.partial(
            self.cp.audit.record,
            who,
            address=self.request.remote_ip or "",
            method=method,
            route=self.route(),
            path=path,
            obj=self.audited_object(),
            status=self.get_status(),
        )

        def write() -> None:
            try:
                record()
            except Exception:  # the answer is sent; a failed record must not become a 500 storm
                log.exception("could not record %s %s in the audit trail", method, path)

        self.cp.audit.later(write)  # off the event loop, in the order the answers went out

    def route(self) -> str:
        """The route's OpenAPI path (``/deployments/{dep_id}``) this handler serves."""
        for path, cls in self.settings.get("pipenb_routes", ()):
            if isinstance(self, cls):
                return path
        return self.request.path

    def audited_object(self) -> str | None:
        """What a write was about: the route's argument (a pipe name, a deployment id), or the id
        of what it created."""
        for value in self.path_kwargs.values():
            return str(value)
        made = self._sent
        for attr in ("id", "pipe", "name", "agent_id", "token_id"):
            found = getattr(made, attr, None)
            if isinstance(found, str):
                return found
        return None

    # ------------------------------------------------------------------ bodies
    def body(self, model: type[BaseModel]) -> Any:
        raw = self.request.body or b"{}"
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            details = [
                {
                    "field": ".".join(str(x) for x in e["loc"]),
                    "message": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ]
            first = details[0]
            raise ApiError(
                400, "invalid_body", f"{first['field'] or 'body'}: {first['message']}", details
            ) from None

    def query(self, name: str, default: Any = None, kind: type | None = None) -> Any:
        """A query parameter, parsed and bounded as ``QUERY_PARAMS`` says (400 otherwise)."""
        from pipenb.server.handlers.params import QUERY_PARAMS

        value = self.get_query_argument(name, None)
        if value is None:
            return default
        param = QUERY_PARAMS.get(name)
        if param is not None:
            return param.parse(name, value)
        try:
            return (kind or str)(value)
        except ValueError:
            raise ApiError(
                400, "bad_request", f"query parameter {name!r} must be {(kind or str).__name__}"
            ) from None

    def send(self, model: BaseModel | None, status: int | None = None) -> None:
        if self._deferred is not None:  # on a worker thread: written on the event loop
            self._deferred.append((model, status))
            return
        self._sent = model
        op = self.operation()
        self.set_status(status or (op.status if op else 200))
        if model is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(model.__pydantic_serializer__.to_json(model))

    # ------------------------------------------------------------------ errors
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            status, code, message, details = exc.status, exc.code, exc.message, exc.details
            for d in details:
                if isinstance(d, dict) and "retry_after" in d:
                    self.set_header("Retry-After", str(d["retry_after"]))
        elif isinstance(exc, tornado.web.HTTPError):
            status = exc.status_code
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
                status, "http_error"
            )
            message, details = exc.log_message or self._reason, []
        elif database_busy(exc):
            status, code, details = 503, "unavailable", [{"retry_after": 1}]
            message = "the database is locked by another process; try again shortly"
            self.set_header("Retry-After", "1")
        elif database_lost(exc):
            status, code, details = 503, "unavailable", [{"retry_after": 1}]
            message = "the connection to the database was lost; try again shortly"
            self.set_header("Retry-After", "1")
        else:
            status, code, message, details = status_code, "internal", "internal server error", []
        self.set_status(status, reason="Payload Too Large" if status == 413 else None)  # RFC 9110
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(code, message, details))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return  # an answer, not a fault
        if database_busy(value) or database_lost(value):
            log.warning("%s %s: 503, %s", self.request.method, self.request.path, value.orig)
            return
        super().log_exception(typ, value, tb)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def error_body(code: str, message: str, details: list[Any] | None = None) -> bytes:
    """The API's one error shape, also written where no handler runs (a body refused while it
    arrives)."""
    return orjson.dumps({"error": {"code": code, "message": message, "details": details or []}})


def database_busy(exc: BaseException | None) -> bool:
    """A statement gave up waiting for a lock another process holds (SQLite: "database is
    locked"): a moment's trouble, answered 503 with Retry-After, not a 500."""
    return isinstance(exc, OperationalError) and "is locked" in str(exc.orig)


class NotFoundHandler(ApiHandler):
    """Unknown paths under the API prefix answer JSON 404, not tornado's HTML."""

    async def prepare(self) -> None:
        raise ApiError(404, "not_found", f"no API route {self.request.method} {self.request.path}")


def database_lost(exc: BaseException | None) -> bool:
    """The connection a statement ran on was cut (the database restarted, or an administrator
    ended it): nothing of that transaction was kept, and the pool opens a new connection for
    the next request. Answered 503 with Retry-After, so an agent sends its report again."""
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
