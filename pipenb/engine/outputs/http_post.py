"""``http-post``: each batch is one request, a JSON array or NDJSON, optionally gzipped.

A batch counts as written when the server answers 2xx. Trouble that may pass (no connection, a
timeout, 408, 429, 5xx) raises ``RetryableOutputError``: the engine retries the same batch with
backoff and holds the input back meanwhile, so every event arrives at least once. Any other
answer (400, 401, 404, 413, 422, a redirect) cannot get better by sending again: the batch's
events go to ``errors:`` with the status and the start of the server's answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import Field, field_validator, model_validator
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.codecs.http import CONTENT_TYPES
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.http_errors import FETCH_ERRORS, describe
from pipenb.engine.netguard import http_client
from pipenb.engine.outputs.common import OutputOptions
from pipenb.engine.outputs.disk import maybe_disk
from pipenb.engine.tlsopts import SendTls, client_context
from pipenb.errors import RetryableOutputError
from pipenb.lang.registry import registry
from pipenb.lang.types import Duration, Size

log = logging.getLogger("pipenb.engine.http_post")

T = TypeVar("T")

MAX_RETRY_AFTER = 30.0  # the longest Retry-After honoured before handing back to the engine


class HttpPostOptions(OutputOptions):
    """Options of ``http-post``.

    ``url``: where each batch is sent (``method: POST``, default, or ``PUT``). ``format``:
    ``json`` (one JSON array per request, ``Content-Type: application/json``) or ``ndjson``
    (one object per line, ``application/x-ndjson``). ``headers``: added to every request
    (``Authorization``, a ``Content-Type`` of your own...). ``gzip: true`` compresses bodies
    (``Content-Encoding: gzip``). ``timeout``: for connecting and for the whole answer.
    ``batch: {size, timeout}``: events per request and how long a partial batch waits.
    Delivery: a batch is written once the server answers 2xx; no connection, a timeout, 408,
    429 and 5xx are retried with backoff (a ``Retry-After`` of up to 30s is waited out first)
    while the input is held back; other answers send the batch's events to ``errors:`` with the
    status and the start of the answer.

    ``max-bytes``: the largest request body (before gzip); a batch is sent in as many requests
    as it takes (a single event larger than that goes alone). A 413 (Payload Too Large) splits
    the request in halves and sends each again, down to single events; only an event the
    receiver refuses on its own goes to ``errors:``. ``tls: {ca-file, cert, key, verify}`` for
    ``https://`` URLs: the CA to verify the receiver with (default: the system's), a client
    certificate for mutual TLS. A certificate the output does not trust cannot get better by
    retrying: the batch's events go to ``errors:`` with a message naming the fix.

    ``codec`` shapes the body for a receiver with a format of its own (``format`` is then
    unused): ``elasticsearch`` (``_bulk`` NDJSON for Elasticsearch and OpenSearch; ``index``
    names the index; documents the receiver refuses in a 200 answer go to ``errors:`` with its
    reason), ``loki`` (Loki's push API; ``labels`` are the stream's labels, ``label-fields``
    adds those fields' values) or ``otlp`` (OTLP/HTTP JSON logs; ``service`` is the
    ``service.name``). See ``pipenb/engine/codecs/http.py`` for the exact shapes.

    ``concurrency: N`` (default 1) keeps up to N requests in flight, so a receiver's latency
    does not cap the pipe at one batch per round trip. Answers may come back in any order; the
    input's checkpoint still advances in order, past a batch only once it and every batch before
    it were acknowledged (``pipenb.engine.inflight``). With ``buffer: disk`` the buffer takes
    the batches and its drain sends them one at a time, in order.
    """

    url: str
    method: Literal["POST", "PUT"] = "POST"
    format: Literal["json", "ndjson"] = "json"
    headers: dict[str, str] = {}
    gzip: bool = False
    timeout: Duration = 30.0
    max_bytes: Size | None = Field(default=None, ge=64)
    tls: SendTls | None = None
    codec: Literal["elasticsearch", "loki", "otlp"] | None = None
    index: str | None = None
    labels: dict[str, str] = {"job": "pipenb"}
    label_fields: list[str] = []
    service: str = "pipenb"
    concurrency: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _codec(self) -> HttpPostOptions:
        if self.codec == "elasticsearch" and not self.index:
            raise ValueError("codec: elasticsearch needs index: NAME (the index to write to)")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {v!r}")
        return v


class HttpPostOutput(Output):
    def __init__(self, options: HttpPostOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self._client: AsyncHTTPClient | None = None
        headers = dict(options.headers)
        names = {k.lower() for k in headers}
        if "content-type" not in names:
            headers["Content-Type"] = (
                CONTENT_TYPES[options.codec]
                if options.codec
                else "application/json"
                if options.format == "json"
                else "application/x-ndjson"
            )
        if options.gzip:
            headers["Content-Encoding"] = "gzip"
        self.headers = headers
        self.requests = 0
        self.splits = 0  # requests split in halves after a 413
        self._ssl_context: ssl.SSLContext | None = None
        self.concurrency = options.concurrency

    async def open(self) -> None:
        if self._client is None:
            self._client = http_client(
                self.ctx, "http-post url", self.options.url, max_clients=max(10, self.concurrency)
            )

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        if self._client is None:
            await self.open()
        o = self.options
        if o.max_bytes is None:
            body, sent, rejects = self.encode(events)
            if not sent:
                return rejects
            return rejects + await self._send(sent, body)
        rejects = []
        for group in split_by_bytes(events, o.max_bytes):
            body, sent, bad = self.encode(group)
            rejects += bad
            if sent:
                rejects += await self._send(sent, body)
        return rejects

    def encode(self, events: list[Event]) -> tuple[bytes, list[Event], list[tuple[Event, str]]]:
        """The body for ``events`` in the output's format or codec."""
        o = self.options
        if o.codec is None:
            return encode(events, o.format)
        from pipenb.engine.codecs import http as codecs

        _, sent, rejects = encode(events, "ndjson")  # finds the events JSON cannot hold
        if o.codec == "elasticsearch":
            return codecs.elasticsearch(sent, o.index or ""), sent, rejects
        if o.codec == "loki":
            return codecs.loki(sent, o.labels, o.label_fields), sent, rejects
        return codecs.otlp(sent, o.service), sent, rejects

    def _ssl(self) -> ssl.SSLContext | None:
        if self.options.tls is None or not self.options.url.startswith("https:"):
            return None
        if self._ssl_context is None:
            self._ssl_context = client_context(self.options.tls, "http-post")
        return self._ssl_context

    def lines_refusal(self) -> str:
        if self.options.codec is not None:
            return f"codec: {self.options.codec} shapes the body from the events"
        if self.concurrency > 1:
            return f"concurrency: {self.concurrency} keeps batches of events in flight"
        return ""

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Lines encoded elsewhere (the engine's fast path), sent as ``write`` sends events:
        at most ``batch.size`` lines and ``max-bytes`` per request, in the output's format."""
        if self._client is None:
            await self.open()
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        o = self.options
        size = o.batch.size
        rejects = []
        for i in range(0, len(lines), size):
            part = lines[i : i + size] if len(lines) > size else lines
            for group in [part] if o.max_bytes is None else split_lines(part, o.max_bytes):
                rejects += await self._send_lines(group)
        return rejects

    async def _send_lines(self, lines: list[bytes]) -> list[tuple[Event, str]]:
        """As ``_send``, for encoded lines: the events of a refused request are decoded again."""
        if self.options.format == "json":
            body = b"[" + b",".join(lines) + b"]"
        else:
            body = b"\n".join(lines) + b"\n"
        ok, why = await self._post(body, len(lines))
        if ok is not None:
            return []
        if why is None:
            half = len(lines) // 2
            return await self._send_lines(lines[:half]) + await self._send_lines(lines[half:])
        return [(orjson.loads(x), why) for x in lines]

    async def _send(self, sent: list[Event], body: bytes) -> list[tuple[Event, str]]:
        """One request; its events that end in ``errors:``. A 413 splits it in halves."""
        resp, why = await self._post(body, len(sent))
        if resp is not None:
            if self.options.codec == "elasticsearch":
                return bulk_failures(resp, sent, f"{self.options.method} {self.options.url}")
            return []
        if why is None:
            half = len(sent) // 2
            out = []
            for part in (sent[:half], sent[half:]):
                pbody, psent, bad = self.encode(part)
                out += bad + await self._send(psent, pbody)
            return out
        return [(e, why) for e in sent]

    async def _post(self, body: bytes, n: int) -> tuple[HTTPResponse | None, str | None]:
        """One request of ``n`` events: (the answer, None) when it was taken (2xx); (None,
        None) for a 413 to split in halves (``n`` > 1); (None, why) when the events can never
        be sent. Trouble that may pass raises ``RetryableOutputError``."""
        assert self._client is not None
        o = self.options
        if o.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self.requests += 1
        req = HTTPRequest(
            o.url,
            method=o.method,
            headers=self.headers,
            body=body,
            connect_timeout=o.timeout,
            request_timeout=o.timeout,
            follow_redirects=False,
            ssl_options=self._ssl(),
        )
        where = f"{o.method} {o.url}"
        try:
            resp = await self._client.fetch(req, raise_error=False)
        except ssl.SSLCertVerificationError as exc:
            why = (
                f"{where}: the receiver's certificate is not trusted ({exc.verify_message}); "
                "give its CA as tls: {ca-file: ...}"
            )
            log.warning("http-post: %s; %d event(s) sent to errors", why, n)
            return None, why
        except FETCH_ERRORS as exc:  # no answer: refused, reset, timed out, a garbled answer
            raise RetryableOutputError(f"{where}: {describe(exc)}") from exc
        code = resp.code
        if 200 <= code < 300:
            return resp, None
        if code == 599:
            if isinstance(resp.error, ssl.SSLCertVerificationError):
                why = f"{where}: the receiver's certificate is not trusted; give its CA as tls: {{ca-file: ...}}"
                return None, why
            raise RetryableOutputError(f"{where}: {describe(resp.error)}")
        if code in (408, 429) or code >= 500:
            wait = retry_after(resp)
            if wait:
                await asyncio.sleep(min(wait, MAX_RETRY_AFTER))
            raise RetryableOutputError(f"{where}: HTTP {code} {resp.reason}{_excerpt(resp)}")
        if code == 413 and n > 1:
            self.splits += 1
            return None, None
        why = f"{where}: HTTP {code} {resp.reason}{_excerpt(resp)}"
        log.warning("http-post: %s; %d event(s) sent to errors", why, n)
        return None, why

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def bulk_failures(resp: HTTPResponse, sent: list[Event], where: str) -> list[tuple[Event, str]]:
    """The documents a ``_bulk`` answer (200 with ``"errors": true``) says were refused."""
    try:
        doc = orjson.loads(resp.body or b"{}")
    except orjson.JSONDecodeError:
        return []
    if not isinstance(doc, dict) or not doc.get("errors"):
        return []
    out = []
    for e, item in zip(sent, doc.get("items") or [], strict=False):
        result: Any = next(iter(item.values()), {}) if isinstance(item, dict) else {}
        if isinstance(result, dict) and result.get("status", 200) >= 300:
            err = result.get("error") or {}
            reason = err.get("reason") if isinstance(err, dict) else str(err)
            out.append((e, f"{where}: _bulk item refused ({result.get('status')}): {reason}"))
    if out:
        log.warning("http-post: %d document(s) refused by _bulk; sent to errors", len(out))
    return out


def split_by_bytes(events: list[Event], limit: int) -> list[list[Event]]:
    """Consecutive groups whose encoded size stays within ``limit`` (an event alone may not)."""
    return _by_size(events, map(_encoded_size, events), limit)


def split_lines(lines: list[bytes], limit: int) -> list[list[bytes]]:
    """``split_by_bytes`` for lines encoded already: the same sizes, so the same requests."""
    return _by_size(lines, (len(line) + 1 for line in lines), limit)


def _encoded_size(e: Event) -> int:
    try:
        return len(orjson.dumps(e, default=str)) + 1
    except TypeError:
        return 1  # encode() will reject it


def _by_size(items: list[T], sizes: Iterable[int], limit: int) -> list[list[T]]:
    """Consecutive groups of ``items`` whose ``sizes`` (and 2, an array's brackets) add up to
    ``limit`` at most; an item larger than that alone is a group of its own."""
    groups: list[list[T]] = []
    group: list[T] = []
    size = 2
    for item, n in zip(items, sizes):
        if group and size + n > limit:
            groups.append(group)
            group, size = [], 2
        group.append(item)
        size += n
    if group:
        groups.append(group)
    return groups


def encode(events: list[Event], fmt: str) -> tuple[bytes, list[Event], list[tuple[Event, str]]]:
    """The body, the events in it, and the events that cannot be encoded (with why)."""
    if fmt == "ndjson":
        blob, rejects = ndjson(events)
        if not rejects:
            return blob, events, []
        bad = {id(e) for e, _ in rejects}
        return blob, [e for e in events if id(e) not in bad], rejects
    try:
        return orjson.dumps(events), events, []
    except TypeError:
        pass
    parts: list[bytes] = []
    sent: list[Event] = []
    rejects = []
    for e in events:
        try:
            parts.append(orjson.dumps(e, default=str))
            sent.append(e)
        except TypeError as exc:
            rejects.append((e, f"cannot encode event as JSON: {exc}"))
    return b"[" + b",".join(parts) + b"]", sent, rejects


def retry_after(resp: HTTPResponse) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), if any."""
    value = resp.headers.get("Retry-After") if resp.headers else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(resp: HTTPResponse) -> str:
    body = (resp.body or b"")[:300].decode("utf-8", "replace").strip()
    return f": {body}" if body else ""


@registry.register("output", "http-post", HttpPostOptions)
def http_post_output(opts: HttpPostOptions, ctx: RunContext) -> HttpPostOutput:
    """POST batches as a JSON array or NDJSON, optionally gzipped; retries 429 and 5xx."""
    return maybe_disk(HttpPostOutput(opts, ctx))
