"""Request bodies in a ``Content-Encoding``: what ``http-server`` accepts besides gzip.

Tornado unzips ``gzip`` itself (``decompress_request``) and leaves other encodings alone, so a
``deflate`` or ``zstd`` body used to reach the JSON decoder compressed and came back as a
confusing 400. ``deflate`` (zlib-wrapped, as RFC 9110 says, or raw, as some clients send it)
and ``zstd`` (the ``zstandard`` package) are unpacked here, never past ``limit`` bytes (a small
body must not unpack to gigabytes); any other encoding is a 415 naming the supported ones.
"""

from __future__ import annotations

import io
import zlib

SUPPORTED = ("gzip", "deflate", "zstd")


class UnsupportedEncoding(ValueError):
    """415: the body is in an encoding this server does not read."""


class TooLarge(ValueError):
    """413: the body unpacks to more than the limit."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` unpacked from ``encoding`` (``identity`` or empty: as is)."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "deflate":
        return _inflate(body, limit)
    if enc == "zstd":
        return _unzstd(body, limit)
    raise UnsupportedEncoding(
        f"Content-Encoding {encoding!r} is not supported; send the body as is or in one of "
        f"{', '.join(SUPPORTED)}"
    )


def _inflate(body: bytes, limit: int) -> bytes:
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):  # zlib-wrapped, then raw deflate
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise TooLarge(f"the deflated body unpacks to more than max-body ({limit} bytes)")
        if not d.eof:
            raise ValueError("the deflated body is cut short")
        return out
    raise ValueError("the body is not valid deflate data (Content-Encoding: deflate)")


def _unzstd(body: bytes, limit: int) -> bytes:
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ValueError(f"the body is not valid zstd data: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"the zstd body unpacks to more than max-body ({limit} bytes)")
    return out
