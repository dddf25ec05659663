"""JSON over HTTP(S) for the agent, on the standard library (no requests: the agent stays small)."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from typing import Any

import orjson

from pipenb.errors import ServerError
from pipenb.tls import HTTPS_REQUIRED, HTTPSConnection, describe, https_required_message
from pipenb.urls import API_PREFIX


def post(
    url: str,
    path: str,
    body: dict[str, Any],
    key: str | None,
    timeout: float,
    context: ssl.SSLContext | None = None,
    client_cert: bool = False,
) -> dict[str, Any]:
    """POST JSON and return the JSON answer; ServerError for any failure.

    ``context``: how to verify an ``https://`` server (default: the system's CAs);
    ``client_cert``: whether it shows a client certificate (for the words of an error).
    """
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    base = parts.path.rstrip("/")
    if not base.endswith(API_PREFIX):
        base += API_PREFIX
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    host = parts.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = HTTPSConnection(host, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request("POST", base + path, orjson.dumps(body), headers)
        resp = conn.getresponse()
        data = resp.read()
    except ssl.SSLError as exc:
        raise ServerError(0, describe(exc, url, client_cert), tls=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(0, describe(exc, url)) from None
    finally:
        conn.close()
    if resp.status >= 400:
        code = ""
        try:
            error = orjson.loads(data)["error"]
            message, code = error["message"], str(error.get("code") or "")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
        if code == HTTPS_REQUIRED:
            raise ServerError(0, https_required_message(url), tls=True)
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
