"""What runs on a worker: one partition through the engine, a combine, the aggregate's tail.

A partition is run by the single-process ``Engine`` itself, given an input that reads only that
partition and outputs that write part files: the same compiled chain (``compile_chain``), the
same batching, retries and dead letters. Nothing here re-implements an action.

The pipe travels as its text and parameter values, and is validated again on the worker (once
per process): the worker's own registry builds the components, so no compiled code or pydantic
model crosses the wire.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from pipenb.cluster import partfiles
from pipenb.cluster.combine import Partial, combine, install, partial_of
from pipenb.cluster.plan import Partition
from pipenb.engine.base import Batch, Input, Output, RunContext
from pipenb.engine.build import Parts, check_capabilities, compile_chain, compile_steps
from pipenb.engine.checkpoints import MemoryCheckpointStore
from pipenb.engine.runtime import Engine
from pipenb.engine.steps import BatchStep
from pipenb.lang.spec import ComponentSpec, PipeSpec

#: events per batch handed to the engine from inline (echo) partitions
EVENTS_PER_BATCH = 1000


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to know about the run, small enough to send with every task."""

    text: str
    file: str
    params: dict[str, Any]
    builtins: dict[str, Any]
    line_offset: int
    allow: frozenset[str]
    cut: int | None  # index of the aggregate that cuts the chain
    clock: float  # the run's start: the arrival time of every event (time windows)
    n_partitions: int

    @classmethod
    def of(cls, spec: PipeSpec, allow: frozenset[str], cut: int | None, n: int) -> Job:
        params = {k: spec.values[k] for k in spec.params if k in spec.values}
        builtins = {k: v for k, v in spec.values.items() if k not in spec.params}
        return cls(
            spec.source,
            spec.file,
            params,
            builtins,
            spec.smap.line_offset,
            allow,
            cut,
            time.time(),
            n,
        )

    @property
    def key(self) -> str:
        h = hashlib.sha256(self.text.encode())
        h.update(repr(sorted(self.params.items())).encode())
        h.update(repr(sorted(self.builtins.items())).encode())
        return h.hexdigest()[:16]

    def spec(self) -> PipeSpec:
        spec = _SPECS.get(self.key)
        if spec is None:
            from pipenb.lang.validate import load_pipe

            spec = load_pipe(
                self.text, self.file, self.params, self.builtins, line_offset=self.line_offset
            )
            _SPECS.clear()  # one pipe at a time is the common case: keep the cache small
            _SPECS[self.key] = spec
        return spec


_SPECS: dict[str, PipeSpec] = {}


@dataclass
class PartitionResult:
    """A finished partition: its counters, the part files it completed, its partial aggregate."""

    index: int
    counts: dict[str, Any]
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # output/errors -> files
    partial: Partial | None = None
    seconds: float = 0.0
    worker: str = ""


class PartitionInput(Input):
    """The events of one partition: a byte range, a whole file (multiline), or inline events."""

    finite = True

    def __init__(self, spec: PipeSpec, part: Partition, ctx: RunContext):
        super().__init__(spec.input.options, ctx)
        self.spec = spec
        self.part = part
        self._inner: Input | None = None

    async def batches(self) -> AsyncIterator[Batch]:
        p, o = self.part, self.options
        if p.kind == "events":
            for i in range(0, len(p.events), EVENTS_PER_BATCH):
                yield Batch([dict(e) for e in p.events[i : i + EVENTS_PER_BATCH]])
            return
        if p.kind == "file":  # the files input itself, on one file: multiline as in one process
            import glob

            from pipenb.engine.inputs.files import FilesInput

            one = o.model_copy(update={"path": glob.escape(p.url), "exclude": [], "follow": False})
            self._inner = FilesInput(one, self.ctx)
            async for batch in self._inner.batches():
                for e in (*batch.events, *batch.rejects):  # the name the pipe's glob matched
                    if "_path" in e:
                        e["_path"] = p.label or p.url
                yield batch
            return
        from pipenb.engine.inputs.dataset import read_range

        for batch in read_range(
            p.url,
            p.start,
            p.end,
            fmt=o.format,
            metadata=o.metadata,
            read_bytes=o.read_bytes,
            max_line_bytes=o.max_line_bytes,
            label=p.label or None,
        ):
            yield batch

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class _Nothing(Output):
    """Where a partition of an aggregate pipe writes: nowhere (its result is its partial)."""

    async def write(self, events: list[Any]) -> list[tuple[Any, str]]:
        return []


class _NoInput(Input):
    finite = True

    async def batches(self) -> AsyncIterator[Batch]:
        return
        yield


def _output(c: ComponentSpec, ctx: RunContext, index: int, token: str) -> Output:
    """The component as configured, except that a file output writes this attempt's temp part."""
    if c.name != "file":
        return c.component.factory(c.options, ctx)
    opts = c.options.model_copy(
        update={"path": partfiles.temp_path(c, index, token), "merge": False, "mkdir": True}
    )
    return c.component.factory(opts, ctx)


def _run_engine(spec: PipeSpec, ctx: RunContext, parts: Parts) -> Engine:
    engine = Engine(spec, ctx, checkpoints=MemoryCheckpointStore(), parts=parts)
    try:
        asyncio.run(engine.run())
    finally:
        gc.unfreeze()  # the engine freezes what is alive at its start; a worker lives on
    return engine


def _counts(engine: Engine, n_actions: int, first: int, with_input: bool) -> dict[str, Any]:
    """The engine's counters, with its stages placed at their index in the whole pipe."""
    m = engine.metrics
    actions = [
        {"stage": "", "in": 0, "out": 0, "dropped": 0, "errors": 0} for _ in range(n_actions)
    ]
    for i, c in enumerate(engine.parts.chain.counts):
        actions[first + i] = c.as_dict()
    return {
        "input": {
            "events": m.input_events if with_input else 0,
            "bytes": m.input_bytes if with_input else 0,
            "errors": m.input_errors if with_input else 0,
        },
        "actions": actions,
        "output": {
            "events": m.output.events,
            "batches": m.output.batches,
            "errors": m.output.errors,
            "retries": m.output.retries,
            "write_seconds": m.output.write_seconds,
        },
        "dead_letters": m.dead_letters,
        "dead_letters_dropped": m.dead_letters_dropped,
    }


def _commit(spec: PipeSpec, index: int, token: str) -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {}
    for role, c in (("output", spec.output), ("errors", spec.errors)):
        if c is not None and c.name == "file":
            files[role] = partfiles.commit(c, index, token)
    return files


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_partition(job: Job, part: Partition) -> PartitionResult:
    """Run one partition through the pipe; raise on failure (the driver reports which)."""
    t0 = time.perf_counter()
    spec = job.spec()
    token = uuid.uuid4().hex[:12]  # made here: a re-run after a worker died never appends
    ctx = RunContext(pipe=spec.name, values=spec.values, allow=job.allow)
    check_capabilities(spec, ctx)
    agg = None
    if job.cut is None:
        sub = spec
        steps = compile_steps(sub, ctx)
        output = _output(spec.output, ctx, part.index, token)
    else:
        sub = replace(spec, actions=spec.actions[: job.cut + 1])
        steps = compile_steps(sub, ctx)
        agg = steps[job.cut].fn.__self__  # type: ignore[union-attr]
        clock = job.clock
        agg.clock = lambda: clock
        steps[job.cut] = BatchStep(agg.run)  # no flush, no tick: the window stays open
        output = _Nothing(None, ctx)
    errors = _output(spec.errors, ctx, part.index, token) if spec.errors else None
    parts = Parts(
        PartitionInput(spec, part, ctx),
        compile_chain(sub, ctx, steps=steps),
        output,
        errors,
        steps,
    )
    engine = _run_engine(sub, ctx, parts)
    return PartitionResult(
        part.index,
        _counts(engine, len(spec.actions), 0, True),
        _commit(spec, part.index, token),
        partial_of(agg) if agg is not None else None,
        time.perf_counter() - t0,
        _worker(),
    )


def combine_partials(a: PartitionResult | Partial, b: PartitionResult | Partial) -> Partial:
    """One step of the tree reduction, run on a worker next to its inputs."""
    pa = a.partial if isinstance(a, PartitionResult) else a
    pb = b.partial if isinstance(b, PartitionResult) else b
    return combine(pa or Partial(), pb or Partial())


def run_tail(job: Job, partial: PartitionResult | Partial | None) -> PartitionResult:
    """Emit the combined window and run the rest of the chain and the output, once.

    The engine runs with an empty input and the aggregate step holding the combined state: its
    own stop-time flush emits the window down the remaining actions to the output.
    """
    t0 = time.perf_counter()
    spec = job.spec()
    assert job.cut is not None
    p = partial.partial if isinstance(partial, PartitionResult) else partial
    token = uuid.uuid4().hex[:12]
    ctx = RunContext(pipe=spec.name, values=spec.values, allow=job.allow)
    sub = replace(spec, actions=spec.actions[job.cut :])
    steps = compile_steps(sub, ctx)
    agg = steps[0].fn.__self__  # type: ignore[union-attr]
    clock = job.clock
    agg.clock = lambda: clock
    install(agg, p or Partial())
    steps[0] = BatchStep(agg.run, flush=agg.flush)
    index = job.n_partitions  # after every partition's part: errors of the tail go there
    parts = Parts(
        _NoInput(None, ctx),
        compile_chain(sub, ctx, steps=steps),
        _output(spec.output, ctx, index, token),
        _output(spec.errors, ctx, index, token) if spec.errors else None,
        steps,
    )
    engine = _run_engine(sub, ctx, parts)
    return PartitionResult(
        index,
        _counts(engine, len(spec.actions), job.cut, False),
        _commit(spec, index, token),
        None,
        time.perf_counter() - t0,
        _worker(),
    )
