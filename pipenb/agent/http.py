"""JSON over HTTP for the agent, on the standard library (no requests: the agent stays small)."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any

import orjson


class ServerError(Exception):
    """The server answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, code: str = ""):
        self.status = status
        self.retry_after = retry_after
        self.code = code  # the API's error code, e.g. "agent_removed", "key_revoked"
        super().__init__(f"{status}: {message}" if status else message)


def post(
    url: str, path: str, body: dict[str, Any], key: str | None, timeout: float
) -> dict[str, Any]:
    """POST JSON and return the JSON answer; ServerError for any failure."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    base = parts.path.rstrip("/")
    if not base.endswith("/pipenb/api/v1"):
        base += "/pipenb/api/v1"
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("POST", base + path, orjson.dumps(body), headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(0, f"cannot reach the server at {url}: {exc}") from None
    finally:
        conn.close()
    if resp.status >= 400:
        code = ""
        try:
            error = orjson.loads(data)["error"]
            message, code = error["message"], str(error.get("code") or "")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
        retry = resp.getheader("Retry-After")
        raise ServerError(
            resp.status, message, float(retry) if retry and retry.isdigit() else None, code
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ServerError(
            resp.status, "the server answered with something that is not JSON"
        ) from None
