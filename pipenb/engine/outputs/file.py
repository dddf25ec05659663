"""``file``: NDJSON, CSV or raw lines to a file, with ``${field}`` paths and rotation by size.

A write returns after the bytes reach the operating system (and the disk with ``fsync: true``), so
a crash of the pipe's process loses nothing the checkpoint says was written.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from typing import Any, BinaryIO, Literal

from pipenb.engine.base import Event, Output, RunContext
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.outputs.common import OutputOptions
from pipenb.engine.outputs.disk import maybe_disk
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import Options, registry
from pipenb.lang.templates import FIELD_REF, _tstr, field_template_source, has_field_refs
from pipenb.lang.types import Size


class RotateOptions(Options):
    """``rotate: {size: 100MB, keep: 5}``: before a batch would take the file past ``size``, it
    is renamed ``path.1`` (an older ``path.1`` becomes ``path.2``, and so on) and a new file
    starts. ``keep`` old files are kept, the oldest beyond that is deleted; ``keep: 0`` keeps
    none. A batch larger than ``size`` still goes into one file."""

    size: Size
    keep: int = 5


class FileOptions(OutputOptions):
    """Options of ``file``.

    ``path`` may use ``${field}`` to split events across files (``/out/${service}.ndjson``).
    ``format``: ``ndjson`` (default), ``csv`` (columns from ``fields``, or the first event's
    keys; a header line unless ``header: false``) or ``raw`` (the ``raw-field``, default
    ``_raw``, one per line). ``rotate`` rotates by size (its options below); ``fsync: true``
    syncs every batch.
    On a cluster (``pipenb run --cluster``) ``path`` is a directory of part files, one per
    partition (``part-00042.ndjson``); ``merge: true`` joins them, in order, into ``path`` itself.
    A single process writes ``path`` either way.
    """

    path: str
    format: Literal["ndjson", "csv", "raw"] = "ndjson"
    fields: list[str] | None = None
    header: bool = True
    raw_field: str = "_raw"
    rotate: RotateOptions | None = None
    fsync: bool = False
    mkdir: bool = True
    merge: bool = False


class _Sink:
    def __init__(self, path: str, opts: FileOptions, guard: Any = None):
        self.path = path
        self.opts = opts
        self.guard = guard
        self.fh: BinaryIO | None = None
        self.size = 0
        self.columns: list[str] | None = opts.fields

    def open(self) -> BinaryIO:
        if self.fh is None:
            if self.guard is not None:  # symlinks resolved, before anything is created
                self.guard.write(self.path, "file path")
            if self.opts.mkdir:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            torn = _ends_without_newline(self.path)
            self.fh = open(self.path, "ab")  # noqa: SIM115 - kept open between batches
            if self.guard is not None:
                try:
                    self.guard.opened(self.fh, self.path, "file path", "write")
                except BaseException:
                    self.fh = None
                    raise
            self.size = self.fh.tell()
            if torn:
                # a crash cut the last write short: end that line, so the replayed batch
                # starts on a line of its own instead of fusing with the torn one
                self.fh.write(b"\n")
                self.size += 1
        return self.fh

    def rotate_if_needed(self, incoming: int) -> None:
        r = self.opts.rotate
        if r is None or self.size == 0 or self.size + incoming <= r.size:
            return
        self.close()
        for i in range(r.keep - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        if r.keep > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)

    def write(self, data: bytes, header: bytes = b"") -> None:
        """Append ``data``; ``header`` goes first whenever the file is new (or just rotated)."""
        self.rotate_if_needed(len(data))
        fh = self.open()
        if header and self.size == 0:
            fh.write(header)
            self.size += len(header)
        fh.write(data)
        fh.flush()
        if self.opts.fsync:
            os.fsync(fh.fileno())
        self.size += len(data)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _ends_without_newline(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _path_part(v: Any) -> str:
    """A field value inside a file path: never a way out of the directory the path names."""
    s = _tstr(v).replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return "_" if s in ("", ".", "..") else s


class FileOutput(Output):
    def __init__(self, options: FileOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.sinks: dict[str, _Sink] = {}
        self.path_fn = None
        if has_field_refs(options.path):
            ns = Namespace()
            ns.values["_tstr"] = _path_part  # field values are path parts, not paths
            src = field_template_source(options.path, ns)
            if FIELD_REF.fullmatch(options.path):
                src = f"_tstr({src})"
            self.path_fn = eval(f"lambda e: str({src})", {**ns.values, "str": str})

    def _sink(self, path: str) -> _Sink:
        sink = self.sinks.get(path)
        if sink is None:
            if len(self.sinks) >= 256:  # bound open files when paths come from events
                for s in self.sinks.values():
                    s.close()
                self.sinks.clear()
            sink = self.sinks[path] = _Sink(path, self.options, self.ctx.guard)
        return sink

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        if self.path_fn is None:
            return self._write_to(self._sink(self.options.path), events)
        groups: dict[str, list[Event]] = {}
        rejects: list[tuple[Event, str]] = []
        for e in events:
            try:
                groups.setdefault(self.path_fn(e), []).append(e)
            except (TypeError, ValueError, RecursionError) as exc:  # nested past any limit
                rejects.append((e, f"cannot make a file path from the event: {exc}"))
        for path, evs in groups.items():
            # a path made from these events that can never be written: they are rejects
            try:
                rejects += self._write_to(self._sink(path), evs)
            except UnicodeEncodeError as exc:
                rejects += [(e, f"cannot write to {path!r}: {exc.reason}") for e in evs]
            except OSError as exc:
                if exc.errno not in _BAD_PATH:
                    raise  # disk full, permissions...: retried, the input held back
                rejects += [(e, f"cannot write to {path!r}: {exc.strerror}") for e in evs]
        return rejects

    def lines_refusal(self) -> str:
        if self.options.format != "ndjson":
            return f"format: {self.options.format}"
        if self.path_fn is not None:
            return "the path is made from each event's fields"
        return ""

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Append NDJSON lines encoded elsewhere (the engine's fast path), in one write."""
        self._sink(self.options.path).write(data)
        return []

    def _write_to(self, sink: _Sink, events: list[Event]) -> list[tuple[Event, str]]:
        if not events:
            return []
        fmt = self.options.format
        rejects: list[tuple[Event, str]] = []
        if fmt == "ndjson":
            data, rejects = ndjson(events)
        elif fmt == "raw":
            key = self.options.raw_field
            lines = []
            for e in events:
                v = e.get(key)
                if v is None:
                    rejects.append((e, f"raw format: the event has no {key!r} field"))
                elif isinstance(v, str):
                    lines.append((e, v + "\n"))
                else:
                    try:
                        lines.append((e, str(v) + "\n"))
                    except (ValueError, RecursionError) as exc:  # nested past Python's limit
                        rejects.append((e, f"raw format: cannot write {key!r}: {exc}"))
            data, bad = _encode(lines)
            rejects += bad
        else:
            data, header, rejects = self._csv(sink, events)
            sink.write(data, header)
            return rejects
        if data:
            sink.write(data)
        return rejects

    def _csv(
        self, sink: _Sink, events: list[Event]
    ) -> tuple[bytes, bytes, list[tuple[Event, str]]]:
        """Rows, the header line that starts every new file (even after a rotation), rejects."""
        if sink.columns is None:
            sink.columns = list(events[0].keys())
        rows = _Rows()
        w = csv.writer(rows, lineterminator="\n")
        written, rejects = [], []
        for e in events:
            try:
                w.writerow([_cell(e.get(c)) for c in sink.columns])
                written.append(e)
            except (TypeError, ValueError, RecursionError) as exc:  # nested past any limit
                rejects.append((e, f"cannot write the event as CSV: {exc}"))
        header = b""
        if self.options.header:
            hbuf = io.StringIO()
            csv.writer(hbuf, lineterminator="\n").writerow(sink.columns)
            header = hbuf.getvalue().encode(errors="replace")  # a column name of a lone surrogate
        data, bad = _encode(list(zip(written, rows)))
        return data, header, rejects + bad

    async def close(self) -> None:
        for s in self.sinks.values():
            s.close()


class _Rows(list):
    """What a csv.writer writes, one string per row."""

    write = list.append


def _encode(texts: list[tuple[Event, str]]) -> tuple[bytes, list[tuple[Event, str]]]:
    """The events' texts as UTF-8; an event whose text cannot be (a lone surrogate from a
    ``\\ud800`` escape) is returned as a reject instead of failing the whole batch."""
    try:
        return "".join(t for _, t in texts).encode(), []
    except UnicodeEncodeError:
        parts, rejects = [], []
        for e, t in texts:
            try:
                parts.append(t.encode())
            except UnicodeEncodeError as exc:
                rejects.append((e, f"cannot write the event as UTF-8: {exc.reason}"))
        return b"".join(parts), rejects


_BAD_PATH = {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EILSEQ}


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return _tstr(v)  # JSON text, also for what orjson cannot write
    return v


@registry.register("output", "file", FileOptions)
def file_output(opts: FileOptions, ctx: RunContext) -> FileOutput:
    """Write NDJSON, CSV or raw lines to a file; paths may use ${field}; rotation by size."""
    return maybe_disk(FileOutput(opts, ctx))
