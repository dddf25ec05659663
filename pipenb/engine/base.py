"""The small contracts at the engine's seams: inputs yield batches, outputs write them.

An input is an async iterator of ``Batch`` objects. ``Batch.position`` is the input's checkpoint
*after* that batch (or None for inputs that cannot resume); the engine persists it only once the
output confirmed every event of the batch, which is what makes delivery at-least-once.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pipenb.capabilities import ALL_CAPABILITIES

Event = dict[str, Any]
_Bytes = bytes  # inside Batch, ``bytes`` is the field


@dataclass(slots=True)
class Batch:
    events: list[Event]
    position: Any = None
    bytes: int = 0
    rejects: list[Event] = field(default_factory=list)  # undecodable input, already dead-lettered
    #: the fast path (``pipenb.engine.chunks``): the complete lines as read, not yet decoded
    #: (``events`` is then empty), and what to call with the indices of over-long lines cut
    raw: _Bytes | bytearray | None = None
    on_cut: Any = None
    path: str | None = None  # the file ``raw`` came from: undecodable lines name it (``_path``)
    #: where in its file ``raw`` lies, when it is exactly the file's bytes there: worker
    #: processes then read it themselves instead of being sent it (``chunks.read_span``)
    span: FileSpan | None = None


@dataclass(frozen=True, slots=True)
class FileSpan:
    """Bytes of an open file, named so another process can read them: through
    ``/proc/<pid>/fd/<fd>`` (the same file, even renamed), checked to be the same file
    (``key``: device and inode) holding the same bytes (``length``, ``head``, ``tail``)."""

    pid: int
    fd: int
    key: str  # "dev:ino"
    offset: int
    length: int
    head: _Bytes  # the first and last bytes (up to SPAN_PROBE of each), to check with
    tail: _Bytes

    @classmethod
    def of(cls, fd: int, key: str, offset: int, data: _Bytes | bytearray) -> FileSpan:
        """The span of ``data``, read from this process's descriptor ``fd`` at ``offset``."""
        return cls(
            os.getpid(), fd, key, offset, len(data), bytes(data[:SPAN_PROBE]),
            bytes(data[-SPAN_PROBE:]),
        )  # fmt: skip


#: bytes at each end of a span compared after reading it again
SPAN_PROBE = 64


@dataclass
class RunContext:
    """What a component may know about the run it belongs to."""

    pipe: str = "pipe"
    data_dir: str | None = None
    preview: bool = False
    allow: frozenset[str] = ALL_CAPABILITIES  # capabilities this run permits
    values: dict[str, Any] = field(default_factory=dict)
    #: the worker host's policy, checked where files and sockets are opened
    #: (``pipenb.policy.guard.Guard``); None when the user runs a pipe on their own machine
    guard: Any = None
    #: where the table files pushed with a deployed pipe were written (``lookup: {table:}``)
    files_dir: str | None = None


class Input:
    """Base class of inputs. Subclasses implement ``batches``; the rest has sane defaults."""

    #: True when ``batches`` ends by itself (a file read once, an echo without interval)
    finite: bool = False
    #: set by the engine on its fast path: batches carry the lines' bytes (``Batch.raw``), not
    #: events; only for an input whose ``chunk_refusal`` is empty
    raw_chunks: bool = False
    #: set by the engine when worker processes run the chunks: batches may then also say where
    #: in a file their bytes lie, for the workers to read them themselves (``Batch.span``)
    spans: bool = False

    def __init__(self, options: Any, ctx: RunContext):
        self.options = options
        self.ctx = ctx

    def chunk_refusal(self) -> str:
        """Why this input cannot hand the engine's fast path its bytes as chunks of whole lines
        (``raw_chunks``), decoded there as ``chunk_format`` says; empty when it can."""
        return "it makes its events itself"

    def chunk_format(self) -> tuple[str, int]:
        """How the fast path decodes this input's chunks: ``lines`` or ``json``, and the longest
        line before it is cut (0: never), exactly as the input's own batches would."""
        raise NotImplementedError  # pragma: no cover

    def restore(self, position: Any) -> None:
        """Resume from a checkpoint written by an earlier run. Inputs without one ignore it."""

    def committed(self, position: Any) -> None:
        """The output wrote everything up to ``position`` and its checkpoint is saved; an input
        holding data for replay (a disk buffer) may now let go of what lies before it."""

    async def batches(self) -> AsyncIterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def stats(self) -> dict[str, Any]:
        """Counters of this input worth reporting (udp datagrams dropped, lines cut, ...)."""
        return {}

    def lag(self) -> int | None:
        """How far behind the source this input is (bytes for files), for the lag metric."""
        return None

    async def close(self) -> None:
        """Release what ``batches`` opened. Called once, after the input stopped."""


class Output:
    """Base class of outputs. ``write`` returns only when the batch is durably handed over."""

    #: writes the engine may have in flight at once (``http-post`` ``concurrency``); the input's
    #: checkpoint still advances in order, only past batches whose predecessors were all written
    concurrency: int = 1

    def __init__(self, options: Any, ctx: RunContext):
        self.options = options
        self.ctx = ctx

    async def open(self) -> None:
        """Prepare to write (open files, connect). Failures here are retried by the engine."""

    async def write(self, events: list[Event]) -> list[tuple[Event, str]]:
        """Write ``events``; return the ones that can never be written, with why.

        Raise ``OSError`` (or ``pipenb.errors.RetryableOutputError``) for trouble that may pass: the engine
        retries with backoff and holds the input back meanwhile.
        """
        raise NotImplementedError  # pragma: no cover

    def lines_refusal(self) -> str:
        """Why this output cannot take NDJSON lines encoded elsewhere (``write_ndjson``, the
        engine's fast path, where worker processes encode); empty when it can. An output that
        shapes what it sends from the events themselves says so here."""
        return "it writes events, not NDJSON lines"

    async def write_ndjson(self, data: bytes) -> list[tuple[Event, str]]:
        """Write whole NDJSON lines, exactly as ``write`` would have encoded its events; return
        the events (decoded again) that can never be written, with why. Retries as ``write``."""
        raise NotImplementedError  # pragma: no cover

    async def close(self) -> None:
        """Flush and release. Called once, after the last write."""
