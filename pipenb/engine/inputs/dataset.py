"""``dataset``: every file of a directory (local, or any fsspec URL), read once, in name order.

This is the bounded input a cluster run splits: each file, or each byte range of a large file,
is one partition. The byte-range reader below is the one both ways use (this input reads a whole
file as the range ``[0, end of file)``), so a pipe reads the same events in a notebook and on a
cluster. A range owns the lines that *start* inside it: it skips the line it starts in the middle
of (the previous range reads that one to its end) and reads past its end to finish its last line.

Remote file systems come from fsspec (``s3://`` needs s3fs, ``gs://`` gcsfs, ...); local paths
work without it. Compressed files (``.gz``, ``.bz2``, ``.xz``, ``.zst``; through fsspec) are read
whole: a byte range of a compressed stream is not a place one can start reading.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from pipenb.engine.base import Batch, Event, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.errors import PipeRuntimeError
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Size

COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")


class DatasetOptions(Options):
    """Options of ``dataset``.

    ``path``: a directory, a file, or a URL of either (``s3://bucket/logs/2026-11/``: any file
    system fsspec has a package for). Every file under it (recursively) whose path relative to
    ``path`` matches ``pattern`` (a glob; ``*`` also crosses ``/``) is read once, in name order,
    then the input finishes. Names starting with ``.`` or ``_`` are skipped (temp files, a cluster
    run's ``_manifest.json``). ``format``: ``lines`` (``{"_raw": line}``) or ``json`` (one object
    per line). ``metadata: true`` adds ``_path`` (the file's URL) and ``_offset`` (of the line).
    ``max-line-bytes`` cuts longer lines into pieces. Compressed files (``.gz`` ...) are
    decompressed by fsspec. Checkpoint: the file being read and the offset past its last line.
    """

    path: str
    pattern: str = "*"
    format: Literal["lines", "json"] = "lines"
    metadata: bool = False
    read_bytes: Size = 1 << 20
    max_line_bytes: Size = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One file of a data set: where it is and how big it is."""

    url: str
    size: int

    @property
    def splittable(self) -> bool:
        return not self.url.lower().endswith(COMPRESSED)


def _has_scheme(path: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        return None
    return fsspec


def list_files(path: str, pattern: str = "*") -> list[SourceFile]:
    """The files of a data set, sorted by URL; hidden names (``.x``, ``_x``) left out."""
    fsspec = _fsspec()
    if _has_scheme(path) and not path.startswith("file://"):
        if fsspec is None:
            raise PipeRuntimeError(
                f"dataset: reading {path} needs fsspec and the package of its file system "
                "(s3fs for s3://, gcsfs for gs://, ...): install the [cluster] extra of "
                "pipenb's wheel, then that package"
            )
        try:
            fs, root = fsspec.core.url_to_fs(path)
        except (ImportError, ValueError) as exc:
            raise PipeRuntimeError(f"dataset: cannot open {path}: {exc}") from exc
        try:
            found = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
        except OSError as exc:
            raise PipeRuntimeError(f"dataset: cannot list {path}: {exc}") from exc
        items = [
            (fs.unstrip_protocol(p), p[len(root) :].lstrip("/"), info) for p, info in found.items()
        ]
        files = [
            SourceFile(url, int(info.get("size") or 0))
            for url, rel, info in items
            if info.get("type", "file") == "file" and _wanted(rel or url, pattern)
        ]
        return sorted(files, key=lambda f: f.url)
    local = path[len("file://") :] if path.startswith("file://") else path
    if os.path.isfile(local):
        return [SourceFile(local, os.path.getsize(local))]
    if not os.path.isdir(local):
        raise PipeRuntimeError(f"dataset: {path} is neither a directory nor a file")
    files = []
    for dirpath, dirnames, names in os.walk(local):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, local)
            if _wanted(rel, pattern) and os.path.isfile(full):
                files.append(SourceFile(full, os.path.getsize(full)))
    return sorted(files, key=lambda f: f.url)


def _wanted(rel: str, pattern: str) -> bool:
    if any(part.startswith((".", "_")) for part in rel.split("/")):
        return False
    return fnmatch.fnmatchcase(rel, pattern)


def open_source(url: str) -> BinaryIO:
    """A binary file object for ``url``: a local path directly, anything else through fsspec."""
    compressed = url.lower().endswith(COMPRESSED)
    if (_has_scheme(url) and not url.startswith("file://")) or compressed:
        fsspec = _fsspec()
        if fsspec is None:
            raise PipeRuntimeError(
                f"reading {url} needs fsspec: install the [cluster] extra of pipenb's wheel"
            )
        return fsspec.open(url, "rb", compression="infer").open()
    return open(url[len("file://") :] if url.startswith("file://") else url, "rb")


def read_range(
    url: str,
    start: int = 0,
    end: int | None = None,
    *,
    fmt: str = "lines",
    metadata: bool = False,
    read_bytes: int = 1 << 20,
    max_line_bytes: int | None = 1 << 20,
    label: str | None = None,
) -> Iterator[Batch]:
    """Batches of the lines that start in ``[start, end)`` of ``url`` (``end=None``: to EOF).

    Each batch's position is ``{"file": url, "offset": N}``, N just past its last line.
    ``label`` is the ``_path`` metadata and rejects carry (default ``url``): a cluster run reads
    an absolute path but reports the file as the pipe's glob matched it, as one process does.
    """
    name = label or url
    with open_source(url) as fh:
        pos = start
        if start > 0:
            fh.seek(start - 1)
            skipped = 0
            while True:  # skip the rest of the line we started inside: it is the last range's
                chunk = fh.read(read_bytes)
                if not chunk:
                    return
                nl = chunk.find(b"\n")
                if nl >= 0:
                    pos = start - 1 + skipped + nl + 1
                    fh.seek(pos)
                    break
                skipped += len(chunk)
        partial = b""
        data_at = pos  # file offset of the first byte of partial + chunk
        while end is None or data_at < end:
            chunk = fh.read(read_bytes)
            data = partial + chunk if partial else chunk
            if not chunk:
                if data:  # the last line, without a newline
                    yield _batch(url, name, data, data_at, fmt, metadata, max_line_bytes, len(data))
                return
            cut = data.rfind(b"\n")
            if end is not None and data_at + len(data) > end:
                # the line holding byte end-1 is our last: stop at its newline
                last = data.find(b"\n", max(0, end - 1 - data_at))
                if last >= 0:
                    yield _batch(
                        url, name, data[: last + 1], data_at, fmt, metadata, max_line_bytes
                    )
                    return
            if cut < 0:
                partial = data
                continue
            complete, partial = data[: cut + 1], data[cut + 1 :]
            yield _batch(url, name, complete, data_at, fmt, metadata, max_line_bytes)
            data_at += len(complete)


def _batch(
    url: str,
    name: str,
    complete: bytes,
    at: int,
    fmt: str,
    metadata: bool,
    max_line: int | None,
    consumed: int | None = None,
) -> Batch:
    events, rejects = decode_chunk(complete, fmt, max_line)
    for r in rejects:
        r["_path"] = name
    if metadata:
        _add_metadata(name, at, complete, fmt, events)
    n = len(complete) if consumed is None else consumed
    return Batch(events, {"file": url, "offset": at + n}, n, rejects)


def _add_metadata(url: str, at: int, complete: bytes, fmt: str, events: list[Event]) -> None:
    lines = complete.split(b"\n")
    if complete.endswith(b"\n"):
        lines.pop()
    offsets, pos = [], at
    for line in lines:
        if fmt == "lines" or line.strip():
            offsets.append(pos)
        pos += len(line) + 1
    for ev, off in zip(events, offsets):
        ev["_path"] = url
        ev["_offset"] = off


class DatasetInput(Input):
    finite = True

    def __init__(self, options: DatasetOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.resume: dict[str, Any] | None = None

    def restore(self, position: Any) -> None:
        if isinstance(position, dict) and isinstance(position.get("file"), str):
            self.resume = position

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        guard = self.ctx.guard
        for f in list_files(o.path, o.pattern):
            if guard is not None and not (_has_scheme(f.url) and not f.url.startswith("file://")):
                # on an agent: where the listing led, symlinks resolved (refused fails the pipe)
                guard.read(f.url.removeprefix("file://"), "dataset path")
            start = 0
            if self.resume is not None:
                if f.url < self.resume["file"]:
                    continue
                if f.url == self.resume["file"]:
                    start = int(self.resume.get("offset", 0))
            for batch in read_range(
                f.url,
                start,
                None,
                fmt=o.format,
                metadata=o.metadata,
                read_bytes=o.read_bytes,
                max_line_bytes=o.max_line_bytes,
            ):
                yield batch


@registry.register("input", "dataset", DatasetOptions)
def dataset_input(opts: DatasetOptions, ctx: RunContext) -> DatasetInput:
    """Every file of a directory or URL (fsspec), read once in name order; splits on a cluster."""
    return DatasetInput(opts, ctx)
