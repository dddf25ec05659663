"""What went wrong with an HTTP request, in words: shared by ``http-post`` and ``http-poll``.

Both treat "no (usable) answer" alike (retry later) and report it with the same short reason, so
the list of exceptions that mean it and the wording live here, apart from either component.
"""

from __future__ import annotations

from tornado.httpclient import HTTPClientError
from tornado.httputil import HTTPInputError
from tornado.iostream import UnsatisfiableReadError

#: what a request raises when no (usable) answer came: refused, reset, timed out, TLS, garbled
FETCH_ERRORS = (
    OSError,
    HTTPClientError,
    HTTPInputError,
    UnsatisfiableReadError,
)


def describe(exc: BaseException | None) -> str:
    """A short reason for a failed request: ``connection refused``, ``timed out``..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, HTTPClientError) and exc.code == 599:
        return str(exc.message or "timed out").lower()
    if exc is None:
        return "no answer"
    return str(exc) or type(exc).__name__
