"""What a cluster run will do, decided on the driver before anything is sent: the partitions of
the input, where the stateful action cuts the chain, and what cannot run split at all.

Every refusal is a ``PipeSyntaxError`` located at the part of the pipe that causes it, so the
message points at the line to change, as ``pipenb check`` does.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import orjson

from pipenb.engine.base import RunContext
from pipenb.errors import PipeSyntaxError
from pipenb.lang.spec import ComponentSpec, PipeSpec

#: bytes per partition of a large file, unless the run says otherwise
DEFAULT_PARTITION_BYTES = 64 << 20
#: events per partition of an ``echo`` input
ECHO_EVENTS = 10_000
BOUNDED = "a cluster run needs a bounded input: files with follow: false, dataset, or echo"


@dataclass(frozen=True)
class Partition:
    """One unit of work: a byte range of a file, a whole file, or a slice of inline events."""

    index: int
    kind: str  # "range" (read_range), "file" (the files input, whole: multiline), "events"
    url: str = ""
    start: int = 0
    end: int | None = None
    events: tuple[Any, ...] = ()
    label: str = ""  # the file as the pipe's glob matched it (``_path``); url is absolute

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def describe(self) -> str:
        if self.kind == "events":
            return f"{self.name} ({len(self.events)} inline events)"
        if self.kind == "file" or (self.start == 0 and self.end is None):
            return f"{self.name} ({self.url})"
        return f"{self.name} ({self.url} bytes {self.start}-{self.end})"

    def identity(self) -> dict[str, Any]:
        """What a manifest records to recognise this partition in a later run."""
        if self.kind == "events":
            digest = hashlib.sha1(orjson.dumps(list(self.events), default=str)).hexdigest()
            return {"kind": "events", "events": digest}
        return {"kind": self.kind, "url": self.url, "start": self.start, "end": self.end}


def _refuse(spec: PipeSpec, c: ComponentSpec | None, message: str) -> PipeSyntaxError:
    path = c.path if c is not None else ()
    return PipeSyntaxError([spec.smap.problem(path, message)])


def check(spec: PipeSpec) -> int | None:
    """Refuse what a split run cannot do the same way; return the aggregate's index, if any."""
    cut = None
    if getattr(spec, "routes", None):
        raise _refuse(
            spec,
            spec.routes[0].output,
            "outputs: (several outputs) is not supported on a cluster yet; run the pipe once "
            "per output with output:, or run it without --cluster",
        )
    for i, a in enumerate(spec.actions):
        if a.name == "dedupe":
            raise _refuse(
                spec,
                a,
                "dedupe cannot run on a cluster: it must see every event of a key in one "
                "place, which needs a shuffle by key that cluster runs do not do yet; "
                "dedupe after the run (a second pipe over its output), or run without --cluster",
            )
        if a.name == "aggregate" and cut is None:
            o = a.options
            if getattr(o, "every", None) is not None:
                raise _refuse(
                    spec,
                    a,
                    "aggregate every: N counts events in arrival order, which a split run does "
                    "not have; use window: DURATION with by: fields on a cluster",
                )
            if getattr(o, "when", None):
                raise _refuse(
                    spec,
                    a,
                    "aggregate with when: passes other events on between windows, an order a "
                    "split run does not have; filter before the aggregate instead",
                )
            cut = i
    out = spec.output
    if out.name == "file":
        check_file_output(spec, out)
    if spec.errors is not None and spec.errors.name == "file":
        check_file_output(spec, spec.errors)
    return cut


def check_file_output(spec: PipeSpec, c: ComponentSpec) -> None:
    from pipenb.engine.outputs.file import FileOptions

    o = c.options
    assert isinstance(o, FileOptions), c.name  # called for `file` outputs only
    if o.rotate is not None:
        raise _refuse(
            spec,
            c,
            "rotate: a cluster run writes one part file per partition, which are not rotated; "
            "remove rotate (or use partition size to bound the part files)",
        )
    if o.merge and "${" in o.path:
        raise _refuse(
            spec,
            c,
            "merge: true joins the part files into one path; it needs a path without ${field}",
        )


def partitions(spec: PipeSpec, partition_bytes: int = DEFAULT_PARTITION_BYTES) -> list[Partition]:
    """Split the pipe's input; the order of the list is the order of the data."""
    inp = spec.input
    o = inp.options
    parts: list[Partition] = []
    if inp.name == "files":
        from pipenb.engine.inputs.files import FilesInput, FilesOptions

        assert isinstance(o, FilesOptions)
        if o.follow:
            raise _refuse(spec, inp, f"files with follow: true never ends; {BOUNDED}")
        paths = sorted(FilesInput(o, RunContext(pipe=spec.name))._matches().values())
        whole = o.multiline is not None  # a record may span a range boundary: read files whole
        for path in paths:
            full = os.path.abspath(path)
            if whole:
                parts.append(Partition(len(parts), "file", full, label=path))
            else:
                parts.extend(
                    _ranges(len(parts), full, os.path.getsize(full), partition_bytes, path)
                )
        return parts
    if inp.name == "dataset":
        from pipenb.engine.inputs.dataset import DatasetOptions, list_files

        assert isinstance(o, DatasetOptions)
        for f in list_files(o.path, o.pattern):
            url = os.path.abspath(f.url) if "://" not in f.url else f.url
            if f.splittable:
                parts.extend(_ranges(len(parts), url, f.size, partition_bytes, f.url))
            else:
                parts.append(Partition(len(parts), "range", url, label=f.url))
        return parts
    if inp.name == "echo":
        from pipenb.engine.inputs.echo import EchoOptions

        assert isinstance(o, EchoOptions)
        if o.interval is not None and o.count is None:
            raise _refuse(spec, inp, f"echo with interval and no count never ends; {BOUNDED}")
        one = list(o.events) if o.events is not None else [{"_raw": s} for s in o.lines or []]
        events = one * (o.count or 1)
        for i in range(0, max(1, len(events)), ECHO_EVENTS):
            parts.append(Partition(len(parts), "events", events=tuple(events[i : i + ECHO_EVENTS])))
        return parts
    raise _refuse(spec, inp, f"input {inp.name} cannot be split; {BOUNDED}")


def _ranges(first: int, url: str, size: int, step: int, label: str) -> list[Partition]:
    n = max(1, math.ceil(size / max(1, step)))
    if n == 1:
        return [Partition(first, "range", url, label=label)]
    bounds = [i * step for i in range(n)] + [None]
    return [
        Partition(first + i, "range", url, bounds[i] or 0, bounds[i + 1], label=label)
        for i in range(n)
    ]
