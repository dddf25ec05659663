"""``files``: read or tail the files a glob matches, surviving rotation and truncation.

Each file is tracked by identity (device and inode), not by name, so a rename-rotation keeps
reading the old file to its end while the new file under the same name starts from its
beginning, and a copy-truncate is seen as the size dropping below our offset. The checkpoint
holds, per file, the offset just past the last complete line handed to the engine plus a
fingerprint (hash of the first bytes) so a reused inode is not mistaken for the old file.

With ``multiline``, lines are grouped into events as they are read; the event being gathered is
held back until the next start line, ``max-lines`` or ``timeout``, and the checkpoint points at
its first byte, so a restart reads it again whole rather than emitting half of it.
"""

from __future__ import annotations

import asyncio
import csv
import glob
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import Field, model_validator

from pipenb.engine.base import Batch, Event, FileSpan, Input, RunContext
from pipenb.engine.codecs.lines import decode_chunk, reject
from pipenb.lang.registry import Options, registry
from pipenb.lang.types import Duration, Regex, Size

log = logging.getLogger("pipenb.engine.files")


class MultilineOptions(Options):
    """``multiline`` of ``files``: ``start`` (regex), ``max-lines``, ``timeout``."""

    start: Regex
    max_lines: int = Field(500, ge=1)
    timeout: Duration = 1.0


class FilesOptions(Options):
    """Options of ``files``.

    ``path``: a glob or a list of globs (``/var/log/app/*.log``); ``exclude``: globs to skip.
    ``start-at``: where to start in files that exist when the pipe first starts (``beginning`` or
    ``end``); files that appear later, and every file after a restart, are read from where the
    checkpoint says or from their beginning. ``follow: false`` reads each file to its end once and
    finishes. ``format``: ``lines`` (``{"_raw": line}``), ``json`` (one object per line) or
    ``csv`` (one event per record; a quoted field may hold newlines and stays one value).
    ``header: true`` takes the column names from each file's first record (read again from a
    file that was rotated or truncated, and after a restart); ``columns: [...]`` names them
    instead; values past the names, and all of them without either, are ``column_N`` (N from 1).
    ``delimiter``: one character, ``,`` by default. A UTF-8 byte order mark at the start of a
    file is dropped, whatever the format.
    ``metadata: true`` adds ``_path`` and ``_offset`` (byte offset of the line) to each event
    (``_path`` only with ``format: csv``).
    ``max-line-bytes``: a longer line is cut into pieces of that size (counted in ``long_lines``
    and logged). ``invalid-utf8`` (``format: json``): a line with bytes that are not UTF-8 goes
    to ``errors:`` on its own (``error``, default) or is decoded with U+FFFD in their place
    (``replace``); the other lines are never affected.
    ``multiline: {start: REGEX, max-lines: 500, timeout: 1s}`` joins stack traces and other
    multi-line records into one event: a line ``start`` matches (searched: anchor it with ``^``)
    begins an event, other lines are appended to it, joined by newlines. The event ends at the
    next start line, at ``max-lines`` lines, or when the file had no new line for ``timeout``.
    Lines before any start line (the middle of a record, when reading from the end) make an
    event of their own. ``format: json`` then parses each joined event (pretty-printed
    objects), and ``_offset`` is the offset of the event's first line.
    Checkpoint: per file, device, inode, fingerprint and offset (with ``multiline``, the offset
    of the first line of the event still being gathered, so it is read again whole).
    """

    path: str | list[str]
    exclude: list[str] = []
    start_at: Literal["beginning", "end"] = "beginning"
    follow: bool = True
    format: Literal["lines", "json", "csv"] = "lines"
    header: bool = False
    columns: list[str] | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    metadata: bool = False
    poll_interval: Duration = 0.25
    glob_interval: Duration = 1.0
    rotate_wait: Duration = 2.0
    read_bytes: Size = 1 << 20
    max_line_bytes: Size = 1 << 20
    fingerprint_bytes: int = 256
    multiline: MultilineOptions | None = None
    invalid_utf8: Literal["error", "replace"] = "error"

    @model_validator(mode="after")
    def _csv(self) -> FilesOptions:
        if self.format != "csv":
            for name, value, default in (
                ("header", self.header, False),
                ("columns", self.columns, None),
                ("delimiter", self.delimiter, ","),
            ):
                if value != default:
                    raise ValueError(f"{name} applies to format: csv, not {self.format}")
        elif self.multiline is not None:
            raise ValueError("multiline does not apply to format: csv (quoted fields may "
                             "hold newlines already)")  # fmt: skip
        return self

    @property
    def globs(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


@dataclass
class _File:
    key: str
    path: str
    fh: BinaryIO
    offset: int  # just past the last complete line handed on
    fp: str = ""
    fp_len: int = 0
    partial: bytes = b""
    gone_since: float | None = None  # when it stopped matching any glob (rotated away)
    last_data: float = 0.0
    # multiline: lines of the event being gathered and the offset of its first line
    pending: list[str] | None = None
    hold: int = 0
    cutting: bool = False  # inside an over-long line being cut (counted already)
    #: size 0 yet content (/proc, /sys): its size says nothing, so it is never "truncated";
    #: it is read to its end like any file (once, with follow: false)
    virtual: bool = False
    columns: list[str] | None = None  # format: csv with header: true: this file's header
    opened_at: float = 0.0  # wall clock, to tell files rotated since from older archives


_BOM = b"\xef\xbb\xbf"
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")
_QUOTE_OR_NEWLINE = re.compile(rb'["\n]')


def _csv_record_end(data: bytes | bytearray) -> int:
    """The index of the last newline outside double quotes (-1: none): where the complete CSV
    records end (a quoted field may hold newlines; ``""`` inside quotes toggles twice)."""
    if b'"' not in data:
        return data.rfind(b"\n")
    inside, last = False, -1
    for m in _QUOTE_OR_NEWLINE.finditer(data):
        if m.group() == b'"':
            inside = not inside
        elif not inside:
            last = m.start()
    return last


def _csv_event(names: list[str], row: list[str]) -> Event:
    ev: Event = dict(zip(names, row))
    for i in range(len(names), len(row)):
        ev[f"column_{i + 1}"] = row[i]
    return ev


def _fingerprint(fh: BinaryIO, n: int) -> tuple[str, int]:
    data = os.pread(fh.fileno(), n, 0)
    return hashlib.sha1(data).hexdigest()[:16], len(data)


class FilesInput(Input):
    def __init__(self, options: FilesOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.finite = not options.follow
        self.files: dict[str, _File] = {}
        self.restored: dict[str, dict[str, Any]] | None = None
        self._last_scan = 0.0
        self.long_lines = 0  # lines cut because they were longer than max-line-bytes
        self.rotated_unread = 0  # rotated files seen gone before a byte of them was read
        self._seen: set[str] = set()  # keys of every file opened (and of those warned about)
        self._logged_long = -1e9
        ml = options.multiline
        self._ml_start = re.compile(ml.start).search if ml is not None else None

    def stats(self) -> dict[str, Any]:
        return {"long_lines": self.long_lines, "rotated_unread": self.rotated_unread}

    def chunk_refusal(self) -> str:
        o = self.options
        if o.multiline is not None:
            return "multiline gathers lines across reads"
        if o.metadata:
            return "metadata: true"
        if o.format not in ("lines", "json"):
            return f"format: {o.format}"
        if o.invalid_utf8 != "error":
            return f"invalid-utf8: {o.invalid_utf8}"
        return ""

    def chunk_format(self) -> tuple[str, int]:
        return self.options.format, self.options.max_line_bytes

    def _count_long(self, n: int, path: str) -> None:
        if n <= 0:
            return
        self.long_lines += n
        now = time.monotonic()
        if now - self._logged_long >= 10.0:  # a file of garbage must not flood the log
            self._logged_long = now
            log.warning(
                "files: line(s) of %s longer than max-line-bytes (%d) cut into pieces (%d so far)",
                path,
                self.options.max_line_bytes,
                self.long_lines,
            )

    # ------------------------------------------------------------------ checkpoint
    def restore(self, position: Any) -> None:
        if isinstance(position, dict) and isinstance(position.get("files"), dict):
            self.restored = position["files"]

    def position(self) -> dict[str, Any]:
        fpn = self.options.fingerprint_bytes
        files = {}
        for f in self.files.values():
            if f.fp_len < fpn and f.offset > f.fp_len:
                f.fp, f.fp_len = _fingerprint(f.fh, fpn)
            offset = f.offset if f.pending is None else f.hold  # never inside a pending event
            files[f.key] = {"path": f.path, "offset": offset, "fp": f.fp, "fp_len": f.fp_len}
        return {"files": files}

    def lag(self) -> int:
        total = 0
        for f in self.files.values():
            try:
                size = os.fstat(f.fh.fileno()).st_size
            except (OSError, ValueError):  # closed after the run: ask by name
                try:
                    size = os.stat(f.path).st_size
                except OSError:
                    continue
            total += max(0, size - f.offset)
        return total

    # ------------------------------------------------------------------ discovery
    def _matches(self) -> dict[str, str]:
        """key -> path of every file the globs match now."""
        found: dict[str, str] = {}
        excluded: set[str] = set()
        for pattern in self.options.exclude:
            excluded.update(glob.glob(pattern))
        for pattern in self.options.globs:
            for path in sorted(glob.glob(pattern)):
                if path in excluded:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not os.path.isfile(path):
                    continue
                found.setdefault(f"{st.st_dev}:{st.st_ino}", path)
        return found

    def _scan(self, initial: bool) -> None:
        now = time.monotonic()
        self._last_scan = now
        found = self._matches()
        held = {f.path: f for f in self.files.values()}  # where each file was last seen
        for key, path in found.items():
            f = self.files.get(key)
            if f is not None:
                f.path = path
                f.gone_since = None
                continue
            self._open(key, path, initial)
            before = held.get(path)
            if before is not None and before.key != key and before.key not in found:
                self._missed_rotations(path, before, set(found))
        for key, f in self.files.items():
            if key not in found and f.gone_since is None:
                f.gone_since = now

    def _missed_rotations(self, path: str, before: _File, found: set[str]) -> None:
        """``path`` holds a new file: were other files rotated through it unseen? A sibling
        named like it (``app.log.1``, ``app.log-2026...``; not compressed) that no glob matches,
        that was never opened, and that changed after the file we had there was opened, was
        written and rotated away between two scans: its lines were never read."""
        folder, name = os.path.split(path)
        try:
            entries = list(os.scandir(folder or "."))
        except OSError:
            return
        for entry in entries:
            if not entry.name.startswith(name) or entry.name == name:
                continue
            if entry.name[len(name)] not in ".-_" or entry.name.endswith(_COMPRESSED):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            key = f"{st.st_dev}:{st.st_ino}"
            if key in found or key in self.files or key in self._seen:
                continue
            if st.st_mtime < before.opened_at:
                continue  # an archive older than what we read: not ours to read
            self._seen.add(key)
            self.rotated_unread += 1
            log.warning(
                "files: %s was rotated away before it was read (%d bytes never read); tail the "
                "rotated names too, e.g. path: %s*",
                entry.path,
                st.st_size,
                path,
            )

    def _open(self, key: str, path: str, initial: bool) -> None:
        guard = self.ctx.guard
        if guard is not None:  # where the glob led, symlinks resolved: refused fails the pipe
            guard.read(path, "files path")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open while tailed
        except OSError as exc:
            log.warning("files: cannot open %s: %s", path, exc)
            return
        if guard is not None:
            guard.opened(fh, path, "files path", "read")
        st = os.fstat(fh.fileno())
        if f"{st.st_dev}:{st.st_ino}" != key:  # replaced between stat and open
            fh.close()
            return
        fp, fp_len = _fingerprint(fh, self.options.fingerprint_bytes)
        offset = 0
        saved = (self.restored or {}).get(key)
        if saved is not None:
            n = int(saved.get("fp_len", 0))
            same = n <= st.st_size and _fingerprint(fh, n)[0] == saved.get("fp", "")
            if same and int(saved.get("offset", 0)) <= st.st_size:
                offset = int(saved["offset"])
        elif initial and self.restored is None and self.options.start_at == "end":
            offset = st.st_size
        fh.seek(offset)
        virtual = st.st_size == 0 and fp_len > 0  # an empty file has no bytes to fingerprint
        self.files[key] = _File(
            key,
            path,
            fh,
            offset,
            fp,
            fp_len,
            last_data=time.monotonic(),
            virtual=virtual,
            opened_at=time.time(),
        )
        if len(self._seen) > 100_000:
            self._seen.clear()
        self._seen.add(key)

    # ------------------------------------------------------------------ reading
    def _read(self, f: _File) -> Batch | bool:
        """A batch of complete lines; True when bytes were read but no line completed yet."""
        o = self.options
        try:
            st = os.fstat(f.fh.fileno())
        except OSError:
            return False
        if not f.virtual and st.st_size < f.offset + len(f.partial):  # truncated (copytruncate)
            log.info("files: %s was truncated; reading it from the start", f.path)
            f.fh.seek(0)
            f.offset, f.partial, f.cutting, f.columns = 0, b"", False, None
            f.fp, f.fp_len = _fingerprint(f.fh, o.fingerprint_bytes)
            if f.pending is not None:  # the event gathered before the truncation, on its own
                return self._ml_flush(f)  # type: ignore[return-value]
        data = self._take(f, st.st_size)
        if not data:
            return False
        f.last_data = time.monotonic()
        cut = _csv_record_end(data) if o.format == "csv" else data.rfind(b"\n")
        if cut < 0:
            if len(data) <= o.max_line_bytes:
                f.partial = bytes(data)
                return True
            cut = o.max_line_bytes - 1  # cut an over-long line into pieces
            data = data[: cut + 1] + b"\n" + data[cut + 1 :]
            complete, f.partial = data[: cut + 2], bytes(data[cut + 2 :])
            consumed = cut + 1
            first_cut = not f.cutting
            batch = self._batch(f, complete, consumed, as_read=False)  # (a newline added)
            f.cutting = True  # the rest of the line follows: count it once
            if first_cut:
                self._count_long(1, f.path)
            return batch
        elif isinstance(data, bytearray):  # the fast path's buffer: cut in place, handed on
            f.partial = bytes(data[cut + 1 :])
            del data[cut + 1 :]
            complete = data
        else:
            complete, f.partial = data[: cut + 1], data[cut + 1 :]
        consumed = len(complete)
        del data  # a read's bytes, not held while the batch is made (peak RSS)
        return self._batch(f, complete, consumed)

    def _take(self, f: _File, size: int) -> bytes | bytearray:
        """The next read, after the partial line kept from the last one (empty at the end);
        ``size``: the file's size when this read began.

        For the fast path (``raw_chunks``) both go into one buffer, which is cut at its last
        newline in place and handed on as it is: one allocation of ``read-bytes`` per chunk.
        Three (the read, the partial line joined to it, the lines cut from that) made glibc
        grow its heap and give it back by 2-3 MiB for every chunk (W2's 1M lines: 50,000 page
        faults against 16,000). The buffer is no larger than what the file has left (it is
        zeroed when made: a whole ``read-bytes`` for a small file would be 1 MiB of RSS
        for nothing); what is appended meanwhile is read the next time. Everything else
        takes bytes, as it always did."""
        if not self.raw_chunks:
            data = f.fh.read(self.options.read_bytes)
            return f.partial + data if f.partial and data else data
        keep = len(f.partial)
        room = self.options.read_bytes
        if not f.virtual:  # (a file in /proc says size 0 and has bytes)
            room = min(room, size - f.offset - keep)
            if room <= 0:
                return b""
        buf = bytearray(keep + room)
        buf[:keep] = f.partial
        with memoryview(buf) as view, view[keep:] as free:
            n = f.fh.readinto(free)  # type: ignore[attr-defined]  # (BinaryIO leaves it out)
        if not n:
            return b""
        del buf[keep + n :]
        return buf

    def _batch(
        self, f: _File, complete: bytes | bytearray, consumed: int, as_read: bool = True
    ) -> Batch:
        """``complete``: lines from ``f.offset`` on; ``as_read``: exactly the file's bytes."""
        tail, f.cutting = f.cutting, False  # the first line ends a line counted already
        start = f.offset
        if start == 0 and complete.startswith(_BOM):  # a byte order mark is not data
            complete = complete[len(_BOM) :]
            start = len(_BOM)

        def cut(lines: list[int]) -> None:
            self._count_long(len(lines) - (1 if tail and lines and lines[0] == 0 else 0), f.path)

        if self.raw_chunks:  # decoded where the actions run (maybe another process)
            span = None
            if self.spans and as_read and complete and not f.virtual:
                span = FileSpan.of(f.fh.fileno(), f.key, start, complete)
            f.offset += consumed  # (never with multiline or csv: chunk_plan)
            return Batch(
                [], self.position(), consumed, raw=complete, on_cut=cut, path=f.path, span=span
            )
        complete = bytes(complete)  # bytes already (the buffer of _take is the fast path's)
        if self._ml_start is not None:
            return self._ml_batch(f, complete, consumed)
        if self.options.format == "csv":
            return self._csv_batch(f, f.offset == 0, complete, consumed)
        events, rejects = decode_chunk(
            complete,
            self.options.format,
            self.options.max_line_bytes,
            cut,
            invalid_utf8=self.options.invalid_utf8,
        )
        for r in rejects:  # rare: say where the bad line came from
            r["_path"] = f.path
        f.offset += consumed
        if self.options.metadata:
            self._add_metadata(f.path, start, complete, events)
        return Batch(events, self.position(), consumed, rejects)

    def _csv_batch(self, f: _File, first: bool, complete: bytes, consumed: int) -> Batch:
        o = self.options
        text = complete.decode("utf-8", "replace")
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=o.delimiter) if r]
        if o.header and f.columns is None:
            if first:
                f.columns = rows.pop(0) if rows else None
            else:  # resumed past the header: read it from the file's start
                f.columns = self._csv_header(f)
        names = f.columns if o.header else o.columns
        events = [_csv_event(names or [], row) for row in rows]
        f.offset += consumed
        if o.metadata:
            for ev in events:
                ev["_path"] = f.path
        return Batch(events, self.position(), consumed, [])

    def _csv_header(self, f: _File) -> list[str] | None:
        head = os.pread(f.fh.fileno(), max(self.options.max_line_bytes, 1 << 16), 0)
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        text = head.decode("utf-8", "replace")
        first = next(csv.reader(io.StringIO(text, newline=""), delimiter=self.options.delimiter),
                     None)  # fmt: skip
        return first or None

    def _add_metadata(self, path: str, start: int, complete: bytes, events: list[Event]) -> None:
        offsets = []
        pos = start
        for line in (
            complete.split(b"\n")[:-1] if complete.endswith(b"\n") else complete.split(b"\n")
        ):
            if self.options.format == "lines" or line.strip():
                offsets.append(pos)
            pos += len(line) + 1
        for ev, off in zip(events, offsets):
            ev["_path"] = path
            ev["_offset"] = off

    def _flush_partial(self, f: _File) -> Batch | None:
        if not f.partial:
            return None
        data, f.partial = f.partial, b""
        return self._batch(f, data, len(data))

    def _rest(self, f: _File) -> list[Batch]:
        """What is left of a finished file: its last line without a newline, its pending event."""
        first = self._flush_partial(f)  # may complete the pending event's last line
        return [b for b in (first, self._ml_flush(f)) if b is not None]

    # ------------------------------------------------------------------ multiline
    def _ml_batch(self, f: _File, complete: bytes, consumed: int) -> Batch:
        """Group complete lines into events; the last event stays pending in ``f``."""
        ml = self.options.multiline
        assert ml is not None and self._ml_start is not None
        start_line, max_lines = self._ml_start, ml.max_lines
        texts: list[tuple[int, str]] = []  # (offset of first line, joined text) of each event
        pos = f.offset
        raw_lines = complete.split(b"\n")
        if complete.endswith(b"\n"):
            raw_lines.pop()
        for raw in raw_lines:
            line = raw.decode("utf-8", "replace")
            if line.endswith("\r"):
                line = line[:-1]
            pending = f.pending
            if pending is None or start_line(line):
                if pending is not None:
                    texts.append((f.hold, "\n".join(pending)))
                f.pending, f.hold = [line], pos
            else:
                pending.append(line)
                if len(pending) >= max_lines:
                    texts.append((f.hold, "\n".join(pending)))
                    f.pending = None
            pos += len(raw) + 1
        f.offset += consumed
        events, rejects = self._ml_events(f, texts)
        return Batch(events, self.position(), consumed, rejects)

    def _ml_events(self, f: _File, texts: list[tuple[int, str]]) -> tuple[list[Event], list[Event]]:
        o = self.options
        rejects: list[Event] = []
        if o.format == "lines":
            events: list[Event] = [{"_raw": text} for _, text in texts]
            offsets = [off for off, _ in texts]
        else:
            events, offsets = [], []
            for off, text in texts:
                try:
                    ev = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    if text.strip():
                        rejects.append({**reject(text, f"not valid JSON: {exc}"), "_path": f.path})
                    continue
                if type(ev) is not dict:
                    msg = 'a JSON event must be an object, e.g. {"msg": "..."}'
                    rejects.append({**reject(text, msg), "_path": f.path})
                    continue
                events.append(ev)
                offsets.append(off)
        if o.metadata:
            for ev, off in zip(events, offsets):
                ev["_path"] = f.path
                ev["_offset"] = off
        return events, rejects

    def _ml_flush(self, f: _File) -> Batch | None:
        """Hand on the pending event of ``f`` (its timeout passed, or the file is done)."""
        if f.pending is None:
            return None
        texts = [(f.hold, "\n".join(f.pending))]
        f.pending = None
        events, rejects = self._ml_events(f, texts)
        return Batch(events, self.position(), 0, rejects)

    async def batches(self) -> AsyncIterator[Batch]:
        o = self.options
        ml_timeout = o.multiline.timeout if o.multiline is not None else None
        self._scan(initial=True)
        if not self.files and not o.follow:
            log.warning("files: no file matches %s", ", ".join(o.globs))
        if self.restored is None:
            # the first start decided where to begin (start-at): keep that decision even if
            # this run reads nothing, or the next start would skip to the end again
            yield Batch([], self.position())
        while True:
            produced = False
            at_end: set[Any] = set()  # files this pass found nothing more to read in
            for f in list(self.files.values()):
                batch = self._read(f)
                if batch is False:
                    at_end.add(f.key)
                    continue
                produced = True
                if batch is not True:
                    yield batch
            if ml_timeout is not None:  # pending events of files quiet for the timeout
                now = time.monotonic()
                for f in list(self.files.values()):
                    if f.pending is not None and now - f.last_data >= ml_timeout:
                        yield self._ml_flush(f)  # type: ignore[misc]
            if not produced and not o.follow:
                for f in list(self.files.values()):
                    for batch in self._rest(f):
                        yield batch
                return
            now = time.monotonic()
            # a file rotated away, read to its end and quiet for rotate-wait is done: close it
            # even while another file keeps the input busy, or its descriptor (and its disk
            # space) stays held; never while it still has lines (the consumer may have stalled)
            for key, f in list(self.files.items()):
                if (
                    key in at_end
                    and f.gone_since is not None
                    and now - max(f.gone_since, f.last_data) >= o.rotate_wait
                ):
                    for batch in self._rest(f):
                        yield batch
                    f.fh.close()
                    del self.files[key]
                    yield Batch([], self.position())
            if produced:
                if o.follow and now - self._last_scan > o.glob_interval:
                    self._scan(initial=False)
                continue
            await asyncio.sleep(o.poll_interval)
            self._scan(initial=False)

    async def close(self) -> None:
        for f in self.files.values():
            f.fh.close()


@registry.register("input", "files", FilesOptions)
def files_input(opts: FilesOptions, ctx: RunContext) -> FilesInput:
    """Read or tail files matching a glob; survives rotation and truncation."""
    return FilesInput(opts, ctx)
