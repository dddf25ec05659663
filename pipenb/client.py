"""``pipenb.Client``: the HTTP API of a pipenb server from Python.

The CLI's management commands, the notebook magics and the tests all go through this one class,
so there is one place that knows the routes, the authentication and how error bodies become
exceptions. Answers are the server's JSON as plain dicts: the OpenAPI document describes them,
and plain data prints, serialises and compares without another layer of classes.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipenb.errors import ApiError, AuthError, UsageError
from pipenb.extras import message as _extra_message
from pipenb.tls import (
    HTTPS_REQUIRED,
    TlsError,
    TlsOptions,
    describe,
    fetch_pinned_ca,
    https_required_message,
    kept_ca,
    normal_fingerprint,
    save_private,
)
from pipenb.urls import API_PREFIX

try:
    import requests
except ImportError:  # an agent-only install: say which extra brings it
    raise UsageError(_extra_message("server", "pipenb.Client", "requests")) from None

PREFIX = API_PREFIX

#: How long a hold of the agent check-in may last beyond the client's own timeout.
_CHECKIN_MARGIN = 10.0


def _seg(value: Any) -> str:
    """One URL path segment: ids and names never reach another route by their characters."""
    return quote(str(value), safe="")


def _version(value: int | str) -> int | str:
    """``"3"`` from a command line means version 3; anything else goes as given."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _time(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _seconds(value: float | str, what: str) -> int:
    """Whole seconds from a number or a duration such as ``24h``; UsageError when not one."""
    from pipenb.lang.units import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if not 1 <= seconds <= 10 * 366 * 86400:
        raise UsageError(f"{what}: must be between 1 second and 10 years, not {value!r}")
    return int(seconds)


def _reason(exc: Exception) -> str:
    """The useful end of a requests error ("Connection refused"), not its nested repr."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if m:
        return m.group(1).strip()
    for needle in ("Name or service not known", "Connection refused", "timed out"):
        if needle in text:
            return needle
    return type(exc).__name__


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` error inside the layers requests and urllib3 wrap around it."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return e
        todo += [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
    return None


class Client:
    """A connection to one pipenb server, authenticated with a user token.

    ``url`` is the server's address (``PIPENB_URL``), with or without the ``/pipenb/api/v1``
    suffix and with Jupyter's base URL if the server is mounted in Jupyter; ``token`` is the user
    token (``PIPENB_TOKEN``). For ``https://``: ``ca_file`` (``PIPENB_CA_FILE``) or
    ``ca_fingerprint`` (``PIPENB_CA_FINGERPRINT``, see ``pipenb.tls``) says whom to trust
    (default: the system's CAs), ``cert``/``key`` (``PIPENB_CERT``/``PIPENB_KEY``) are a client
    certificate for a server that requires mutual TLS.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30,
        *,
        ca_file: str | None = None,
        ca_fingerprint: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        url = url or os.environ.get("PIPENB_URL")
        if not url:
            raise UsageError(
                "no server URL: pass --url / url=, or set PIPENB_URL "
                "(pipenb server prints it when it starts)"
            )
        if "://" not in url:
            url = "http://" + url
        url = url.rstrip("/")
        if url.endswith(PREFIX):
            url = url[: -len(PREFIX)]
        self.url = url
        self.api = url + PREFIX
        self.token = token if token is not None else os.environ.get("PIPENB_TOKEN") or None
        self.timeout = timeout
        self.session = requests.Session()
        env = os.environ.get
        self.tls = TlsOptions(
            ca_file or env("PIPENB_CA_FILE") or None,
            ca_fingerprint or env("PIPENB_CA_FINGERPRINT") or None,
            cert or env("PIPENB_CERT") or None,
            key or env("PIPENB_KEY") or None,
        )
        try:
            self.tls.check()
        except TlsError as exc:
            raise UsageError(str(exc)) from None
        # passed with every request: requests lets $REQUESTS_CA_BUNDLE override session.verify
        self._verify: str | bool = self.tls.ca_file or True
        if self.tls.cert:
            self.session.cert = (self.tls.cert, self.tls.key) if self.tls.key else self.tls.cert
        self._pinned = not (self.tls.ca_fingerprint and self.url.startswith("https://"))

    @classmethod
    def from_options(cls, opts: Any) -> Client:
        """A client from parsed ``--url --token --ca-file --ca-fingerprint --cert --key``: the
        options ``pipenb`` management commands and ``%pipe connect`` share, read in one place."""
        tls = {name: getattr(opts, name) for name in ("ca_file", "ca_fingerprint", "cert", "key")}
        return cls(opts.url, opts.token, **tls)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: str | bool | None = True,
        timeout: float | None = None,
    ) -> Any:
        """One API call: the parsed JSON answer (``None`` for an empty one) or an ApiError.

        ``auth`` is ``True`` for the user token, a string for another bearer credential (an
        agent key), ``None``/``False`` for none.
        """
        headers = {"Accept": "application/json"}
        credential = self.token if auth is True else auth or None
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        if not self._pinned:
            self._pin()
        try:
            resp = self.session.request(
                method,
                self.api + path,
                json=json,
                params=params or None,
                headers=headers,
                timeout=timeout or self.timeout,
                verify=self._verify,
            )
        except requests.Timeout as exc:
            raise ApiError(
                0,
                "timeout",
                f"the server at {self.url} did not answer within {timeout or self.timeout:g} s "
                f"({_reason(exc)})",
            ) from None
        except requests.exceptions.SSLError as exc:
            cause = _ssl_cause(exc)
            raise ApiError(
                0,
                "tls",
                describe(cause, self.url, bool(self.tls.cert)) if cause else f"TLS: {_reason(exc)}",
            ) from None
        except requests.ConnectionError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach the server at {self.url}: {_reason(exc)}"
            ) from None
        if resp.status_code >= 300:
            raise self._error(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                resp.status_code,
                "invalid_response",
                f"{method} {path} answered something that is not JSON; "
                f"is {self.url} a pipenb server?",
            ) from None

    def _pin(self) -> None:
        """``ca_fingerprint``: trust the server's CA of that fingerprint (``pipenb.tls``), kept
        in the data dir (``ca/<fingerprint>.pem``) so it is fetched once."""
        from pipenb.engine.checkpoints import default_data_dir

        pin = normal_fingerprint(self.tls.ca_fingerprint or "")
        path = os.path.join(default_data_dir(), "ca", pin.replace(":", "").lower() + ".pem")
        if kept_ca(path, pin) is None:
            try:
                save_private(path, fetch_pinned_ca(self.url, self.tls, min(self.timeout, 10)))
            except TlsError as exc:
                raise ApiError(0, "tls", str(exc)) from None
        self._verify = path
        self._pinned = True

    def _error(self, resp: requests.Response) -> ApiError:
        code, message, details = "http_error", f"HTTP {resp.status_code} {resp.reason}", []
        try:
            err = resp.json()["error"]
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
            details = list(err.get("details") or [])
        except (ValueError, KeyError, TypeError, AttributeError):
            if resp.status_code == 404:
                message = f"{resp.url} was not found; is {self.url} a pipenb server?"
        if code == HTTPS_REQUIRED:
            message = https_required_message(self.url)
        cls = AuthError if resp.status_code in (401, 403) else ApiError
        return cls(resp.status_code, code, message, details)

    # ------------------------------------------------------------------ server
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health", auth=None)

    # ------------------------------------------------------------------ pipes
    def pipes(self) -> dict[str, Any]:
        return self.request("GET", "/pipes")

    def push(
        self, yaml_text: str, message: str = "", files: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Store a new version unless the newest one has the same text (``created`` says).

        ``files``: lookup table files the pipe names (``{"hosts.csv": "host,team\n..."}``),
        stored with the version and written next to the pipe on the agents."""
        body: dict[str, Any] = {"yaml": yaml_text, "message": message}
        if files:
            body["files"] = files
        return self.request("POST", "/pipes", json=body)

    def push_file(
        self,
        path: str | os.PathLike[str],
        message: str = "",
        tables: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``push`` a file; problems in an invalid pipe then name that file, not ``<pushed>``.

        ``tables``: lookup table files to send with it, each named in the pipe by its file name
        (``lookup: {table: hosts.csv}`` and ``tables=["conf/hosts.csv"]``)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
            files = {Path(t).name: Path(t).read_text(encoding="utf-8") for t in tables}
        except OSError as exc:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        try:
            return self.push(text, message, files or None)
        except ApiError as exc:
            if exc.code != "invalid_pipe":
                raise
            name = str(path)
            details = [
                {**d, "file": name} if isinstance(d, dict) and d.get("file") == "<pushed>" else d
                for d in exc.details
            ]
            message = exc.message.replace("<pushed>", name)
            raise ApiError(exc.status, exc.code, message, details) from None

    def pipe(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        return self.request("GET", f"/pipes/{_seg(name)}", params={"version": version})

    def versions(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/pipes/{_seg(name)}/versions")

    def diff(self, name: str, v1: int | str, v2: int | str) -> dict[str, Any]:
        return self.request("GET", f"/pipes/{_seg(name)}/diff", params={"from": v1, "to": v2})

    def delete_pipe(self, name: str) -> None:
        """Refused (409) while a deployment uses the pipe: agents would lose what they run."""
        self.request("DELETE", f"/pipes/{_seg(name)}")

    # ------------------------------------------------------------------ agents
    def agents(self) -> dict[str, Any]:
        return self.request("GET", "/agents")

    def agent(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/agents/{_seg(id)}")

    def add_agent(
        self, id: str, name: str | None = None, labels: list[str] | tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """An agent added by hand needs a key next (``create_key``) before it can check in."""
        body: dict[str, Any] = {"id": id, "labels": list(labels)}
        if name is not None:
            body["name"] = name
        return self.request("POST", "/agents", json=body)

    def update_agent(
        self, id: str, name: str | None = None, labels: list[str] | tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        """Change only what is given; new labels move deployments that target labels."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if labels is not None:
            body["labels"] = list(labels)
        return self.request("PATCH", f"/agents/{_seg(id)}", json=body)

    def remove_agent(self, id: str) -> None:
        self.request("DELETE", f"/agents/{_seg(id)}")

    def create_key(self, agent_id: str, expires_in: float | str | None = None) -> dict[str, Any]:
        """The answer holds ``api_key``: the only time the server shows it (it keeps a hash).
        ``expires_in``: seconds or a duration such as ``"30d"`` (default: never expires)."""
        body: dict[str, Any] = {}
        if expires_in is not None:
            body["expires_in"] = _seconds(expires_in, "expires_in")
        return self.request("POST", f"/agents/{_seg(agent_id)}/keys", json=body)

    def keys(self, agent_id: str) -> dict[str, Any]:
        return self.request("GET", f"/agents/{_seg(agent_id)}/keys")

    def revoke_key(self, agent_id: str, key_id: str) -> None:
        """Revoke a key; the agent holding it is answered 401 at once (and exits)."""
        self.request("DELETE", f"/agents/{_seg(agent_id)}/keys/{_seg(key_id)}")

    # ------------------------------------------------------------------ enrollment
    def create_enroll_token(
        self,
        labels: list[str] | tuple[str, ...] = (),
        *,
        name: str | None = None,
        uses: int | None = None,
        expires_in: float | str | None = None,
    ) -> dict[str, Any]:
        """A token agents enroll with (``pipenb agent --enroll-key TOKEN``); they get its
        ``labels``. ``uses``: how many agents it may enroll; ``expires_in``: seconds or a
        duration such as ``"24h"``. The answer's ``token`` is shown this once."""
        body: dict[str, Any] = {"labels": list(labels)}
        if name is not None:
            body["name"] = name
        if uses is not None:
            body["uses"] = uses
        if expires_in is not None:
            body["expires_in"] = _seconds(expires_in, "expires_in")
        return self.request("POST", "/enroll-tokens", json=body)

    def enroll_tokens(self) -> dict[str, Any]:
        return self.request("GET", "/enroll-tokens")

    def enroll_token(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/enroll-tokens/{_seg(id)}")

    def revoke_enroll_token(self, id: str) -> None:
        """The token enrolls no one from now on (agents it enrolled keep their keys)."""
        self.request("DELETE", f"/enroll-tokens/{_seg(id)}")

    def enroll(
        self,
        enroll_key: str,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Enroll an agent with an enrollment token (or the server's bootstrap key): no user
        token is needed. The server assigns the agent's id and labels; the answer carries them
        and the agent's own API key."""
        body: dict[str, Any] = {"enroll_key": enroll_key, "attributes": dict(attributes or {})}
        if name is not None:
            body["name"] = name
        return self.request("POST", "/agent/enroll", json=body, auth=None)

    # ------------------------------------------------------------------ deployments
    def deploy(
        self,
        pipe: str,
        version: int | str = "latest",
        params: dict[str, Any] | None = None,
        agents: list[str] | tuple[str, ...] | None = None,
        labels: list[str] | tuple[str, ...] | None = None,
        instances: int | str = "all",
        failover: bool = False,
        start: bool = True,
        name: str | None = None,
        new: bool = False,
    ) -> dict[str, Any]:
        """Run a pipe version on agents. ``labels=None`` targets the labels the pipe declares;
        parameter values may be strings, the server converts them to their declared types.

        With a ``name``, deploying again changes the deployment of that name (version, params,
        target) instead of making another, unless ``new``: repeatable, like ``kubectl apply``.
        """
        body: dict[str, Any] = {
            "pipe": pipe,
            "version": _version(version),
            "params": dict(params or {}),
            "agents": list(agents or []),
            "instances": _version(instances),
            "failover": failover,
            "start": start,
        }
        if labels is not None:
            body["labels"] = list(labels)
        if name is not None:
            body["name"] = name
        if new:
            body["new"] = True
        return self.request("POST", "/deployments", json=body)

    def deployments(self) -> dict[str, Any]:
        return self.request("GET", "/deployments")

    def deployment(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/deployments/{_seg(id)}")

    def start(self, id: str) -> dict[str, Any]:
        return self.request("POST", f"/deployments/{_seg(id)}/start")

    def stop(self, id: str) -> dict[str, Any]:
        """Agents stop the pipe but the deployment stays, to be started again."""
        return self.request("POST", f"/deployments/{_seg(id)}/stop")

    def upgrade(
        self, id: str, version: int | str = "latest", params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``params=None`` keeps the deployment's parameter values."""
        body: dict[str, Any] = {"version": _version(version)}
        if params is not None:
            body["params"] = dict(params)
        return self.request("POST", f"/deployments/{_seg(id)}/upgrade", json=body)

    def delete_deployment(self, id: str) -> None:
        self.request("DELETE", f"/deployments/{_seg(id)}")

    # ------------------------------------------------------------------ commands
    def command(
        self,
        dep_id: str,
        type: str,
        agent: str | None = None,
        stage: str | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        """Queue ``restart``, ``reset-checkpoint`` or ``capture`` for the deployment's agents
        (or one of them); agents receive it on their next check-in."""
        body: dict[str, Any] = {"type": type, "limit": limit}
        if agent is not None:
            body["agent"] = agent
        if stage is not None:
            body["stage"] = stage
        return self.request("POST", f"/deployments/{_seg(dep_id)}/commands", json=body)

    def commands(self, dep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/deployments/{_seg(dep_id)}/commands")

    def get_command(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/commands/{_seg(id)}")

    def tap(
        self, dep_id: str, stage: str | None = None, limit: int = 10, timeout: float = 30.0
    ) -> list[Any]:
        """The next ``limit`` events at ``stage`` of a running deployment, from every agent.

        Captures travel with the agents' check-ins, so this queues the capture and waits (up to
        ``timeout`` seconds) until each agent has sent its events back.
        """
        queued = self.command(dep_id, "capture", stage=stage, limit=limit)["commands"]
        deadline = time.monotonic() + timeout
        pending = [c["id"] for c in queued]
        results: dict[str, dict[str, Any]] = {}
        delay = 0.02
        while True:
            for cid in list(pending):
                cmd = self.get_command(cid)
                if cmd.get("result") is not None:
                    results[cid] = cmd
                    pending.remove(cid)
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                agents = ", ".join(c["agent_id"] for c in queued if c["id"] in pending)
                raise ApiError(
                    0,
                    "timeout",
                    f"no capture from agent(s) {agents} within {timeout:g} s: is the deployment "
                    "running there, and does the stage see events?",
                    [{"command_id": cid} for cid in pending],
                )
            time.sleep(min(delay, left))  # poll
            delay = min(delay * 2, 0.5)
        events: list[Any] = []
        errors = []
        for c in queued:
            result = results[c["id"]]["result"]
            events.extend(result.get("events") or [])
            if result.get("error"):
                errors.append(f"{c['agent_id']}: {result['error']}")
        if errors and not events:
            raise ApiError(0, "capture_failed", "capture failed on " + "; ".join(errors))
        return events

    # ------------------------------------------------------------------ previews on agents
    def agent_for(self, on: str | None = None, labels: str | list[str] | None = None) -> str:
        """The agent a preview runs on: ``on`` (an id or a name), or the first online agent
        with every one of ``labels``."""
        agents = self.agents()["agents"]
        if on is not None:
            for a in agents:
                if on in (a["id"], a.get("name")):
                    return str(a["id"])
            raise UsageError(f"no agent {on!r} on this server (pipenb agents lists them)")
        want = [x.strip() for x in labels.split(",")] if isinstance(labels, str) else labels
        want = [x for x in want or [] if x]
        if not want:
            raise UsageError("say which agent: on=AGENT (--on) or labels (--on-labels)")
        for a in agents:
            if set(want) <= set(a.get("labels") or []) and a.get("state") != "offline":
                return str(a["id"])
        raise UsageError(f"no online agent has the label(s) {', '.join(want)}")

    def preview_on(
        self,
        agent: str,
        yaml_text: str,
        params: dict[str, Any] | None = None,
        limit: int = 100,
        timeout: float = 10.0,
    ) -> Any:
        """Preview a pipe on an agent's real data: the same ``PreviewResult`` as a local
        preview (``.df``, ``.stages[i].df``, ``.errors``, ``.counts_df``).

        The server queues the pipe's text for the agent, which runs it under its own policy
        (refused ones raise ``ApiError`` naming the rule) and sends back each stage's events.
        Waits ``timeout`` seconds for the input and a margin for the round trip."""
        from pipenb.engine.preview import PreviewResult

        queued = self.request(
            "POST",
            f"/agents/{_seg(agent)}/previews",
            json={"yaml": yaml_text, "params": params or {}, "limit": limit, "timeout": timeout},
        )
        deadline = time.monotonic() + timeout + 30.0
        delay = 0.05
        while True:
            got = self.request("GET", f"/previews/{_seg(queued['id'])}")
            if got["state"] == "done" and got.get("result") is not None:
                return PreviewResult.from_dict(got["result"])
            if got["state"] != "pending":
                code = (
                    "preview_refused" if "policy" in (got.get("error") or "") else "preview_failed"
                )
                raise ApiError(0, code, f"preview on agent {agent}: {got.get('error')}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError(
                    0,
                    "timeout",
                    f"preview on agent {agent}: no answer within {timeout + 30:g} s "
                    "(is the agent running and connected?)",
                )
            time.sleep(min(delay, left))  # poll
            delay = min(delay * 2, 0.5)

    def command_expiry(self) -> dict[str, Any]:
        """How long each type of command waits for its agent, and is kept once done."""
        return self.request("GET", "/command-expiry")

    # ------------------------------------------------------------------ agent settings
    def set_agent_settings(
        self,
        values: dict[str, Any],
        labels: list[str] | tuple[str, ...] = (),
        agent: str | None = None,
    ) -> dict[str, Any]:
        """Set settings (``{"metrics-every": "5s"}``; None removes one) for every agent with
        one of ``labels``, or for one ``agent``; they apply at the agents' next check-in."""
        body = {"labels": list(labels), "agent": agent, "values": values}
        return self.request("PUT", "/agent-settings", json=body)

    def agent_settings(self, agent: str | None = None) -> dict[str, Any]:
        """Every label's and agent's settings, or one agent's: what it is given, the version it
        applied and what its bounds refused."""
        if agent is None:
            return self.request("GET", "/agent-settings")
        return self.request("GET", f"/agents/{_seg(agent)}/settings")

    # ------------------------------------------------------------------ metrics and logs
    def metrics(self, dep_id: str, agent: str | None = None, **window: Any) -> dict[str, Any]:
        """The newest ``limit=`` (server default 1,000) metrics points, oldest first, from
        ``since=`` (a datetime or ISO text) if given; ``agent``: only that agent's."""
        return self._telemetry("metrics", dep_id, agent, **window)

    def logs(self, dep_id: str, agent: str | None = None, **window: Any) -> dict[str, Any]:
        """The newest ``limit=`` (server default 1,000) log lines, oldest first, from
        ``since=`` (a datetime or ISO text) if given; ``agent``: only that agent's."""
        return self._telemetry("logs", dep_id, agent, **window)

    def _telemetry(
        self,
        kind: str,
        dep_id: str,
        agent: str | None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """``metrics`` and ``logs`` take the same query (one window, one reading of it)."""
        return self.request(
            "GET",
            f"/deployments/{_seg(dep_id)}/{kind}",
            params={"agent": agent, "since": _time(since), "limit": limit},
        )

    def agent_metrics(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/agents/{_seg(id)}/metrics")

    def agent_logs(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/agents/{_seg(id)}/logs")

    # ------------------------------------------------------------------ people and the audit
    def whoami(self) -> dict[str, Any]:
        """Who this client's token stands for: ``name``, ``role`` and ``via``."""
        return self.request("GET", "/whoami")

    def users(self) -> dict[str, Any]:
        return self.request("GET", "/users")

    def add_user(self, name: str, role: str) -> dict[str, Any]:
        return self.request("POST", "/users", json={"name": name, "role": role})

    def remove_user(self, name: str) -> None:
        self.request("DELETE", f"/users/{_seg(name)}")

    def create_user_token(self, name: str, expires_in: float | None = None) -> dict[str, Any]:
        """The answer holds ``token``: the only time the server shows it (it keeps a hash)."""
        return self.request("POST", f"/users/{_seg(name)}/tokens", json={"expires_in": expires_in})

    def user_tokens(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/users/{_seg(name)}/tokens")

    def revoke_user_token(self, name: str, token_id: str) -> None:
        self.request("DELETE", f"/users/{_seg(name)}/tokens/{_seg(token_id)}")

    def audit(
        self,
        user: str | None = None,
        object: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """Writes through the API, oldest first: who, when, from where, what, answered how."""
        return self.request(
            "GET",
            "/audit",
            params={
                "user": user,
                "object": object,
                "since": _time(since),
                "until": _time(until),
                "limit": limit,
            },
        )

    # ------------------------------------------------------------------ installing agents
    def install_info(self) -> dict[str, Any]:
        """The served wheel (file name, SHA-256) and the server's TLS key pin, if any."""
        return self.request("GET", "/agent/install")

    def install_command(
        self,
        enroll_token: str | None = None,
        *,
        labels: list[str] | None = None,
        name: str | None = None,
        prefix: str = "/opt/pipenb-agent",
        service: bool = True,
        server_url: str | None = None,
        insecure_http: bool = False,
    ) -> str:
        """One shell line to paste on a worker host: it installs the server's own wheel in a
        venv (``prefix``), writes a hardened systemd unit (unless ``service=False``: then the
        agent runs in the foreground), and enrolls with ``enroll_token``; without one, a
        one-use enrollment token valid for a day is made with ``labels``.

        ``server_url`` is where worker hosts reach the server (default: this client's URL).
        The line pins what this client trusts: the wheel's SHA-256 and, over https, the
        server's key and the CA fingerprint given to this client.
        """
        from pipenb.errors import UsageError
        from pipenb.install_line import cert_fingerprint, install_line

        if enroll_token and labels:
            raise UsageError(
                "an agent's labels come from its enrollment token: give --labels without "
                "--enroll-token (a one-use token is made with them), or a token made with them"
            )
        if not enroll_token:
            # one agent, one day: the line may sit in a chat or a ticket for a while
            made = self.create_enroll_token(
                labels or [], name=f"install-command {name or ''}".strip(), uses=1,
                expires_in=86400,
            )  # fmt: skip
            enroll_token = made["token"]

        # this client's own CA options (pipenb's TLS support), passed on to the agent
        fingerprint = self.tls.ca_fingerprint
        ca_file = self.tls.ca_file
        if not fingerprint and ca_file:
            fingerprint = cert_fingerprint(ca_file)
        return install_line(
            server_url or self.url,
            self.install_info(),
            enroll_token=enroll_token,
            name=name,
            prefix=prefix,
            service=service,
            ca_fingerprint=fingerprint,
            insecure_http=insecure_http,
        )

    # ------------------------------------------------------------------ authoring (editors)
    def validate(
        self, text: str, params: dict[str, Any] | None = None, file: str = "<pipe>"
    ) -> dict[str, Any]:
        """Every problem of a pipe text (``problems``, each with line and column), or its
        params and stages when ``ok``. Problems are an answer here, not an exception."""
        body = {"text": text, "params": dict(params or {}), "file": file}
        return self.request("POST", "/authoring/validate", json=body)

    def preview_text(
        self,
        text: str,
        lines: list[str] | None = None,
        path: str | None = None,
        params: dict[str, Any] | None = None,
        limit: int = 200,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Preview a pipe text on the server, in a sandbox: ``lines``, or a file ``path`` under
        the Jupyter root, or (neither) the pipe's own input. Every stage's events and counts."""
        body: dict[str, Any] = {
            "text": text,
            "params": dict(params or {}),
            "lines": lines,
            "path": path,
            "limit": limit,
            "timeout": timeout,
        }
        return self.request(
            "POST", "/authoring/preview", json=body, timeout=max(self.timeout, timeout + 10)
        )

    def test_text(
        self, text: str, params: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Run a pipe text's ``tests:`` on the server, in a sandbox: each case passed or not."""
        body = {"text": text, "params": dict(params or {}), "timeout": timeout}
        return self.request(
            "POST", "/authoring/test", json=body, timeout=max(self.timeout, timeout + 10)
        )

    def pipe_schema(self) -> dict[str, Any]:
        """The JSON Schema of pipe documents, generated from the server's component registry."""
        return self.request("GET", "/authoring/schema")

    # ------------------------------------------------------------------ agent side
    def checkin(self, api_key: str, body: dict[str, Any]) -> dict[str, Any]:
        """One agent check-in with the agent's key (the user token is not accepted there).

        The server may hold the request for ``body["wait"]`` seconds, so the HTTP timeout
        grows by that much.
        """
        wait = float(body.get("wait") or 0)
        return self.request(
            "POST",
            "/agent/checkin",
            json=body,
            auth=api_key,
            timeout=max(self.timeout, wait + _CHECKIN_MARGIN),
        )
