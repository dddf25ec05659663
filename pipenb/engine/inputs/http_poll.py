"""``http-poll``: fetch a URL every ``interval``; the response body (JSON, NDJSON or lines) becomes
events. A failed poll (no connection, a timeout, a non-2xx answer) becomes one dead letter saying
why, and polling goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import model_validator
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from pipenb.engine.base import Batch, Event, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk, reject
from pipenb.engine.http_errors import FETCH_ERRORS, describe
from pipenb.engine.netguard import http_client
from pipenb.engine.tlsopts import SendTls, client_context
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Duration, Size

log = logging.getLogger("pipenb.engine.http_poll")


class HttpPollOptions(Options):
    """Options of ``http-poll``.

    ``url``: what to fetch, first at once, then every ``interval`` (from the start of one poll
    to the start of the next; default 60s). ``method``: ``GET`` (default) or ``POST`` with a
    ``body`` (a string, sent as is, or a JSON object or array, sent as JSON). ``headers``:
    sent with every request (``Authorization``, ``Accept``...). ``format``: ``json`` (a JSON
    object is one event; an array is one event per element, non-objects as ``{"value": x}``),
    ``ndjson`` (one object per line) or ``lines`` (``{"_raw": line}``). ``timeout``: for
    connecting and for the whole answer. ``max-body``: larger answers are refused. A poll that
    fails (refused, timed out, a non-2xx status, a body that does not decode) goes to
    ``errors:`` as one record whose ``_error`` says why, and polling goes on. No checkpoint.
    ``tls: {ca-file, cert, key, verify}`` for ``https://`` URLs: the CA to verify the server
    with (default: the system's) and a client certificate for mutual TLS.
    """

    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = {}
    body: str | dict[str, Any] | list[Any] | None = None
    interval: Duration | None = 60.0
    format: Literal["json", "ndjson", "lines"] = "json"
    timeout: Duration = 30.0
    max_body: Size = 100 << 20
    tls: SendTls | None = None

    @model_validator(mode="after")
    def _check(self) -> HttpPollOptions:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.body is not None and self.method == "GET":
            raise ValueError("a body is sent with method: POST only")
        return self


class HttpPollInput(Input):
    def __init__(self, options: HttpPollOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.finite = options.interval is None  # a preview polls once
        self.polls = 0
        self.failures = 0
        self._client: AsyncHTTPClient | None = None
        self._ssl_context: Any = None

    def _request(self) -> HTTPRequest:
        o = self.options
        headers = dict(o.headers)
        body: bytes | None = None
        if o.method == "POST":
            if isinstance(o.body, (dict, list)):
                body = orjson.dumps(o.body)
                if not any(k.lower() == "content-type" for k in headers):
                    headers["Content-Type"] = "application/json"
            else:
                body = (o.body or "").encode()
        return HTTPRequest(
            o.url,
            method=o.method,
            headers=headers,
            body=body,
            connect_timeout=o.timeout,
            request_timeout=o.timeout,
            follow_redirects=True,
            ssl_options=self._ssl(),
        )

    def _ssl(self) -> Any:
        tls = self.options.tls
        if tls is None or not self.options.url.startswith("https:"):
            return None
        if self._ssl_context is None:
            self._ssl_context = client_context(tls, "http-poll")
        return self._ssl_context

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        self._client = http_client(self.ctx, "http-poll url", o.url, max_body_size=o.max_body)
        try:
            while True:
                started = time.monotonic()
                yield await self.poll()
                if o.interval is None:
                    return
                await asyncio.sleep(max(0.0, o.interval - (time.monotonic() - started)))
        finally:
            await self.close()

    async def poll(self) -> Batch:
        """One request; its events, or one dead letter saying why there are none."""
        assert self._client is not None
        o = self.options
        self.polls += 1
        what = f"{o.method} {o.url}"
        try:
            resp = await self._client.fetch(self._request(), raise_error=False)
        except FETCH_ERRORS as exc:  # no answer: refused, reset, timed out, a garbled answer
            return self._failed(what, f"request failed: {describe(exc)}", b"")
        body = resp.body or b""
        if resp.code == 599:
            return self._failed(what, f"request failed: {describe(resp.error)}", b"")
        if not 200 <= resp.code < 300:
            excerpt = body[:200].decode("utf-8", "replace")
            return self._failed(what, f"HTTP {resp.code} {resp.reason}: {excerpt}", body)
        if o.format == "json":
            events, rejects = _decode_json(body)
        else:
            events, rejects = decode_chunk(body, "json" if o.format == "ndjson" else "lines")
        if rejects:
            self.failures += 1
        return Batch(events, None, len(body), rejects)

    def _failed(self, what: str, why: str, body: bytes) -> Batch:
        self.failures += 1
        log.warning("http-poll: %s: %s", what, why)
        return Batch([], None, len(body), [reject(what, f"{what}: {why}")])

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _decode_json(body: bytes) -> tuple[list[Event], list[Event]]:
    if not body.strip():
        return [], []
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [reject(body[:1000], f"the answer is not valid JSON: {exc}")]
    if type(doc) is dict:
        return [doc], []
    if type(doc) is list:
        return [e if type(e) is dict else {"value": e} for e in doc], []
    return [{"value": doc}], []


@registry.register("input", "http-poll", HttpPollOptions)
def http_poll_input(opts: HttpPollOptions, ctx: RunContext) -> HttpPollInput:
    """Fetch a URL every interval; the answer (JSON, NDJSON or lines) becomes events."""
    return HttpPollInput(opts, ctx)
