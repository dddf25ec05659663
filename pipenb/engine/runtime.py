"""The engine: input -> actions -> output in batches, on asyncio, with checkpoints and drain.

One reader task pulls batches from the input into a bounded queue (the bound is what holds the
input back when the output is slow). The main loop runs the compiled action chain on each batch,
gathers events until the output's ``batch.size`` or ``batch.timeout``, writes them (retrying with
backoff), writes dead letters, and only then saves the input position. So a crash replays at
most the batches in flight, and nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.base import Batch, Event, Output, RunContext
from pipenb.engine.build import Parts, build
from pipenb.engine.checkpoints import CheckpointStore, MemoryCheckpointStore
from pipenb.engine.inflight import InFlight
from pipenb.engine.steps import Chain, Failure, deep_copy
from pipenb.errors import PipeRuntimeError, RetryableOutputError
from pipenb.lang.spec import PipeSpec

log = logging.getLogger("pipenb.engine")


def resolve_more(requested: int | str | None) -> bool:
    """Were several worker processes asked for?"""
    return requested not in (None, "", 1, "1")


_END = object()
_NO_POS = object()  # no checkpoint waits to be saved
RETRYABLE = (OSError, RetryableOutputError, ConnectionError, asyncio.TimeoutError)


@dataclass
class OutputCounts:
    events: int = 0
    bytes: int = 0
    batches: int = 0
    errors: int = 0
    retries: int = 0
    write_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        avg = self.write_seconds / self.batches * 1000 if self.batches else 0.0
        return {
            "events": self.events,
            "batches": self.batches,
            "errors": self.errors,
            "retries": self.retries,
            "latency_ms": round(avg, 3),
        }


@dataclass
class Capture:
    """A tap: the next ``limit`` events at one stage of the running pipe."""

    stage: int | str  # "input", "output", or an action index
    limit: int
    events: list[Event] = field(default_factory=list)
    done: asyncio.Future[list[Event]] | None = None

    def take(self, events: list[Event]) -> None:
        if self.done is None or self.done.done():
            return
        room = self.limit - len(self.events)
        if room > 0 and events:
            self.events.extend(deep_copy(events[:room]))
        if len(self.events) >= self.limit:
            self.done.set_result(self.events)


@dataclass
class Metrics:
    """Per-stage counters of one run; ``snapshot()`` is what agents report."""

    pipe: str
    started: float = field(default_factory=time.time)
    input_events: int = 0
    input_bytes: int = 0
    input_errors: int = 0
    output: OutputCounts = field(default_factory=OutputCounts)
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    checkpoints: int = 0
    last_checkpoint: float | None = None
    #: with ``outputs:``: each output's own counters (``output`` then sums them all)
    outputs: dict[str, OutputCounts] = field(default_factory=dict)
    unrouted: int = 0  # events that matched no output's when: (a default output took them)


class Engine:
    """Runs one pipe. ``await run()`` until the input ends or ``stop()`` is called."""

    def __init__(
        self,
        spec: PipeSpec,
        ctx: RunContext | None = None,
        *,
        checkpoints: CheckpointStore | None = None,
        parts: Parts | None = None,
        queue_batches: int = 4,
        drain_timeout: float = 30.0,
        workers: int | str | None = None,
        fast: bool = True,
    ):
        self.spec = spec
        self.ctx = ctx or RunContext(pipe=spec.name, values=spec.values)
        self.parts = parts or build(spec, self.ctx)
        self.checkpoints = checkpoints or MemoryCheckpointStore()
        self.metrics = Metrics(spec.name)
        self.state = "created"
        self.error: str | None = None
        self.drain_timeout = drain_timeout
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._room = asyncio.Semaphore(queue_batches)
        self._stopping = False
        self._reader: asyncio.Task | None = None
        self._reader_error: BaseException | None = None
        self._ended = False
        opts = getattr(spec.output.options, "batch", None)
        self.batch_size = getattr(opts, "size", 1000)
        self.batch_timeout = getattr(opts, "timeout", 0.25)
        self._dead: list[Event] = []
        self._last_position: Any = None
        self._captures: list[Capture] = []
        self._staged: Chain | None = None  # unfused twin of the chain, used while tapping
        for r in self.parts.routes:
            self.metrics.outputs[r.name] = OutputCounts()
        #: ``concurrency: N`` on the (single) output: N writes in flight, committed in order
        n = getattr(self.parts.output, "concurrency", 1)
        self._inflight = InFlight(n, self._commit) if n > 1 and not self.parts.routes else None
        #: ``workers:`` of the pipe, unless the caller (``pipenb run --workers``) says otherwise
        self.workers_requested = spec.workers if workers is None else workers
        self.workers = 1  # how many processes run the actions (decided when the run starts)
        self.workers_reason = ""  # why one, when more were asked for
        self._allow_fast = fast
        #: the fast path (``pipenb.engine.chunks``): (processor, worker pool or None), and the
        #: output bytes, their event count and the input position waiting to be written
        self._fast: tuple[Any, Any] | None = None
        #: chunks of a parallel run: ``read`` by the workers from the file themselves,
        #: ``changed`` there (run in this process instead, from the bytes it read), ``sent`` to
        #: the workers as bytes (not a plain file, or the workers cannot open the pipe's files)
        self.worker_chunks = {"read": 0, "changed": 0, "sent": 0}
        self._out_data: list[bytes] = []
        self._out_events = 0
        self._out_pos: Any = _NO_POS

    # ------------------------------------------------------------------ taps
    def resolve_stage(self, stage: str | int | None) -> int | str:
        """``input``, ``output``, an action index, its label (``2:extract``) or unique name."""
        names = self.parts.chain.names
        if stage is None or stage == "output":
            return "output"
        if stage == "input":
            return "input"
        if isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit()):
            i = int(stage)
            if 0 <= i < len(names):
                return i
        elif stage in names:
            return names.index(stage)
        else:
            matches = [i for i, n in enumerate(names) if n.split(":", 1)[1] == stage]
            if len(matches) == 1:
                return matches[0]
        choices = ", ".join(["input", *names, "output"])
        raise PipeRuntimeError(f"no stage {stage!r} in pipe {self.spec.name}; stages: {choices}")

    def capture(self, stage: str | int | None, limit: int) -> asyncio.Future[list[Event]]:
        """Start a tap; the future resolves with the next ``limit`` events at that stage."""
        cap = Capture(self.resolve_stage(stage), max(1, limit))
        cap.done = asyncio.get_running_loop().create_future()
        self._captures.append(cap)
        return cap.done

    def _run_chain(self, events: list[Event]) -> tuple[list[Event], list[Failure]]:
        if not self._captures:  # the common case: no tap, nothing to do per batch
            return self.parts.chain.run(events)
        self._captures = [c for c in self._captures if c.done is not None and not c.done.done()]
        if not self._captures:
            return self.parts.chain.run(events)
        for c in self._captures:
            if c.stage == "input":
                c.take(events)
        if any(isinstance(c.stage, int) for c in self._captures):
            out, failures = self._run_staged(events)
        else:
            out, failures = self.parts.chain.run(events)
        for c in self._captures:
            if c.stage == "output":
                c.take(out)
        return out, failures

    def _run_staged(self, events: list[Event]) -> tuple[list[Event], list[Failure]]:
        """Stage by stage, so a tap can see an action's output; same results as the chain."""
        from pipenb.engine.build import compile_chain

        if self._staged is None:
            # the same step objects as the running chain: stateful actions keep one state
            self._staged = compile_chain(self.spec, self.ctx, fuse=False, steps=self.parts.steps)
            self._staged.counts = self.parts.chain.counts  # one set of counters
        failures: list[Failure] = []
        for seg in self._staged.segments:
            if not events:
                break
            one = Chain(self._staged.names, [seg], self._staged.counts)
            events, fails = one.run(events)
            failures.extend(fails)
            for c in self._captures:
                if c.stage == seg[2][0]:
                    c.take(events)
        return events, failures

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the engine to stop: the input stops, what was read is written, then it returns."""
        self._stopping = True
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def run(self) -> Metrics:
        inp, out = self.parts.input, self.parts.output
        # Everything alive now (modules, compiled pipe) lives as long as the run: keep it out
        # of the cyclic collector's way, so full collections only walk the events in flight.
        gc.freeze()
        position = self.checkpoints.load()
        if position is not None:
            inp.restore(position)
            self._last_position = position
        self.state = "running"
        outs = [r.output for r in self.parts.routes] or [out]
        for o in outs:
            await self._open(o)
        if self.parts.errors is not None:
            await self._open(self.parts.errors)
        pool = self._plan_fast()
        self._reader = asyncio.create_task(self._read(), name=f"pipenb-read-{self.spec.name}")
        # a reader cancelled before it ever ran skips its finally: end the queue for it
        self._reader.add_done_callback(lambda _t: self._end_queue())
        try:
            if self._fast is None:
                await self._run_events()
            else:
                await self._run_chunks(*self._fast)
            if self._reader_error is not None:
                raise self._reader_error
            self.state = "stopped" if self._stopping else "finished"
        except asyncio.CancelledError:
            self.state = "stopped"
            raise
        except BaseException as exc:
            self.state = "failed"
            self.error = str(exc) or type(exc).__name__
            raise
        finally:
            if self._inflight is not None:
                self._inflight.cancel()
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            with contextlib.suppress(Exception):
                await inp.close()
            for o in outs:
                with contextlib.suppress(Exception):
                    await o.close()
            if self.parts.errors is not None:
                with contextlib.suppress(Exception):
                    await self.parts.errors.close()
            self.checkpoints.close()  # (a file store keeps its file open while the run saves)
        return self.metrics

    async def _run_events(self) -> None:
        """Event batch by event batch: any input, any actions, any outputs."""
        chain = self.parts.chain
        pending: list[Event] = []
        pending_pos: Any = None
        have_pos = False
        since = 0.0
        tick_every = chain.tick_every
        next_tick = time.monotonic() + (tick_every or 0)
        while True:
            timeout = None
            if pending or self._dead:
                timeout = max(0.0, self.batch_timeout - (time.monotonic() - since))
            if self._inflight is not None and self._inflight.busy:
                # commit writes that finished, even while the input is quiet
                timeout = min(self.batch_timeout, timeout or self.batch_timeout)
            if tick_every is not None:
                until_tick = max(0.0, next_tick - time.monotonic())
                timeout = until_tick if timeout is None else min(timeout, until_tick)
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                if tick_every is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick_every
                    emitted, failures = chain.tick()
                    if failures:
                        self._dead_letter(failures)
                    if emitted:
                        if not pending:
                            since = time.monotonic()
                        pending.extend(emitted)
                    if len(pending) < self.batch_size and (
                        time.monotonic() - since < self.batch_timeout
                    ):
                        continue
                await self._flush(pending, pending_pos, have_pos)
                pending, have_pos = [], False
                continue
            if item is _END:
                break
            self._room.release()
            batch: Batch = item
            m = self.metrics
            m.input_events += len(batch.events)
            m.input_bytes += batch.bytes
            if batch.rejects:
                m.input_errors += len(batch.rejects)
                self._dead.extend(batch.rejects)
            events, failures = self._run_chain(batch.events)
            if failures:
                self._dead_letter(failures)
            if not pending and not self._dead:
                since = time.monotonic()
            if events:
                if not pending:
                    since = time.monotonic()
                pending.extend(events)
            if batch.position is not None:
                pending_pos, have_pos = batch.position, True
            if len(pending) >= self.batch_size or (have_pos and not pending):
                await self._flush(pending, pending_pos, have_pos)
                pending, have_pos = [], False
        if self._reader_error is None:
            tail, failures = chain.flush()
            pending.extend(tail)
            if failures:
                self._dead_letter(failures)
        # what was read is written and checkpointed even when the input then failed
        await self._flush(pending, pending_pos, have_pos, final=True)

    # ------------------------------------------------------------------ fast path
    def _plan_fast(self) -> Any:
        """Take the fast path when the pipe allows it; the worker pool (or None) it runs on."""
        from pipenb.engine.chunks import chunk_plan, parallel_plan, stateful_reason

        proc, why = chunk_plan(self.spec, self.parts) if self._allow_fast else (None, "")
        self.workers, self.workers_reason = 1, ""
        if proc is None:
            if resolve_more(self.workers_requested):
                self.workers_reason = stateful_reason(self.spec, self.parts) or why or "fast=False"
                log.info("pipe %s runs in one process: %s", self.spec.name, self.workers_reason)
            return None
        self.workers, self.workers_reason = parallel_plan(
            self.spec, self.parts, self.workers_requested
        )
        if self.workers_reason:
            log.info("pipe %s runs in one process: %s", self.spec.name, self.workers_reason)
        pool = None
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from pipenb.engine.chunks import init_worker

            # fork: the workers start with the compiled pipe already in memory (no import,
            # no validation); the processor is handed over by the fork, never pickled
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=init_worker,
                initargs=(proc,),
            )
        self.parts.input.raw_chunks = True
        self.parts.input.spans = pool is not None
        self._fast = (proc, pool)
        # read ahead only what the workers can take: each chunk read is 1 MiB held (one
        # process reads and runs in turn: one chunk at a time is enough)
        self._room = asyncio.Semaphore(2 * self.workers if pool is not None else 1)
        return pool

    async def _run_chunks(self, proc: Any, pool: Any) -> None:
        """Chunks of lines to output bytes, in worker processes when there is a ``pool``. The
        results are taken in input order and written as the output's ``batch:`` says (when
        ``size`` events wait, or the oldest waited ``timeout``), each write followed by its
        checkpoint, so a crash replays at most what was in flight or waiting. Up to two chunks
        per worker are in flight."""
        from pipenb.engine.chunks import work, work_span

        loop = asyncio.get_running_loop()
        inflight: collections.deque[tuple[Any, Any, Batch]] = collections.deque()
        limit = 2 * self.workers
        getter: asyncio.Future[Any] | None = None
        ended = False
        self._out_data, self._out_events, self._out_pos = [], 0, _NO_POS
        since = 0.0  # when the oldest waiting output (or dead letter) came
        try:
            while inflight or not ended:
                head = inflight[0][0] if inflight else None
                if inflight and (head is None or head.done() or ended or len(inflight) >= limit):
                    waiting = bool(self._out_data or self._dead)
                    await self._commit_chunk(*inflight.popleft())
                    if not waiting:
                        since = time.monotonic()
                    if self._out_events >= self.batch_size or (
                        self._out_pos is not _NO_POS and not self._out_data
                    ):
                        await self._flush_chunks()
                    continue
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                waits: set[Any] = {getter} if head is None else {getter, head}
                timeout = None
                if self._out_data or self._dead:
                    timeout = max(0.0, self.batch_timeout - (time.monotonic() - since))
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    if timeout is not None and time.monotonic() - since >= self.batch_timeout:
                        await self._flush_chunks()
                    continue
                item = await getter
                getter = None
                if item is _END:
                    ended = True
                    continue
                self._room.release()
                batch: Batch = item
                if pool is not None and batch.raw is not None and not self._captures:
                    if batch.span is not None:  # only where it lies crosses to the worker
                        fut = loop.run_in_executor(pool, work_span, batch.span)
                    else:
                        fut = loop.run_in_executor(pool, work, batch.raw)
                        self.worker_chunks["sent"] += 1
                    inflight.append((fut, None, batch))
                else:
                    inflight.append((None, self._process_here(proc, batch), batch))
                    batch.raw = None  # processed: its bytes are not held while the next is read
            # what was read is written and checkpointed even when the input then failed
            await self._flush_chunks()
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            for fut, _, _ in inflight:
                if fut is not None:
                    fut.cancel()

    async def _flush_chunks(self) -> None:
        """Write the waiting output in one write, then dead letters, then the checkpoint."""
        data, n, pos = self._out_data, self._out_events, self._out_pos
        self._out_data, self._out_events, self._out_pos = [], 0, _NO_POS
        if data:
            m = self.metrics
            t0 = time.perf_counter()
            out = self.parts.output
            blob = b"".join(data) if len(data) > 1 else data[0]
            rejects = await self._retry(out.write_ndjson, "write", blob)
            m.output.write_seconds += time.perf_counter() - t0
            m.output.batches += 1
            m.output.events += n - len(rejects)
            self._refused(rejects)
        await self._write_dead()
        if pos is not _NO_POS:
            self._save(pos)

    def _process_here(self, proc: Any, batch: Batch) -> Any:
        """One chunk in this process; through the staged chain when a tap is watching."""
        from pipenb.engine.chunks import ChunkResult
        from pipenb.engine.codecs.lines import decode_chunk
        from pipenb.engine.codecs.ndjson import ndjson

        if batch.raw is not None and not self._captures:
            return proc(batch.raw)
        events, rejects = list(batch.events), list(batch.rejects)
        cut: list[int] = []
        if batch.raw is not None:
            raw = bytes(batch.raw)  # (a tap is watching: the input's buffer, copied once)
            events, rejects = decode_chunk(raw, proc.fmt, proc.max_line, cut.extend)
        n_in = len(events)
        out, failures = self._run_chain(events)  # counts its stages itself
        data, unwritable = ndjson(out) if out else (b"", [])
        fails = [(f.event, f.stage, str(f.error) or type(f.error).__name__) for f in failures]
        return ChunkResult(
            data, n_in, len(out) - len(unwritable), [], fails, rejects, unwritable, cut
        )

    async def _commit_chunk(self, fut: Any, res: Any, batch: Batch) -> None:
        """Count, write and checkpoint one chunk's result (the oldest in flight)."""
        if fut is not None:
            from concurrent.futures.process import BrokenProcessPool

            try:
                res = await fut
            except BrokenProcessPool as exc:
                raise PipeRuntimeError(f"a worker process of the pipe died: {exc}") from exc
            if res is None or res is False:  # the bytes read here, run here
                self.worker_chunks["changed"] += 1
                if res is False:  # the workers cannot open the pipe's files: send the bytes
                    self.parts.input.spans = False
                assert self._fast is not None
                res = self._process_here(self._fast[0], batch)
            elif batch.span is not None:
                self.worker_chunks["read"] += 1
        m = self.metrics
        m.input_bytes += batch.bytes
        m.input_events += res.events_in
        if res.rejects:
            m.input_errors += len(res.rejects)
            if batch.path is not None:  # rare: say where the bad line came from
                for r in res.rejects:
                    r["_path"] = batch.path
            self._dead.extend(res.rejects)
        if res.cut and batch.on_cut is not None:
            batch.on_cut(res.cut)
        if res.drops:  # counted here; an empty list: the staged chain counted them
            n = res.events_in
            errs = [0] * len(res.drops)
            for _e, stage, _msg in res.failures:
                errs[stage] += 1
            for c, dropped, failed in zip(self.parts.chain.counts, res.drops, errs):
                c.events_in += n
                n -= dropped + failed
                c.events_out += n
                c.dropped += dropped
                c.errors += failed
        if res.failures:
            self._dead_letter([Failure(e, stage, Exception(msg)) for e, stage, msg in res.failures])
        if res.data:  # written by _flush_chunks, with what waits before it
            self._out_data.append(res.data)
            self._out_events += res.events_out
        self._refused(res.unwritable)
        if batch.position is not None:
            self._out_pos = batch.position

    # ------------------------------------------------------------------ reading
    async def _read(self) -> None:
        try:
            if self._stopping:  # stop() came before the run got going
                return
            # room first, then read: a batch read while the queue is full would be held here
            # beside it (with the fast path's 1 MiB chunks, ~2 MiB of peak RSS)
            batches = self.parts.input.batches()
            while True:
                await self._room.acquire()
                try:
                    batch = await batches.__anext__()
                except StopAsyncIteration:
                    break
                self._queue.put_nowait(batch)
                del batch
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # an input failure fails the pipe, after a drain
            log.error("pipe %s: input failed: %s", self.spec.name, exc)
            self._reader_error = (
                exc
                if isinstance(exc, PipeRuntimeError)
                else PipeRuntimeError(f"input {self.spec.input.name}: {exc}")
            )
        finally:
            self._end_queue()

    def _end_queue(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)

    # ------------------------------------------------------------------ writing
    async def _open(self, out: Output) -> None:
        await self._retry(out.open, "open")

    async def _retry(
        self, fn: Any, what: str, *args: Any, counts: OutputCounts | None = None
    ) -> Any:
        delay = 0.05
        deadline = None
        while True:
            try:
                return await fn(*args)
            except RETRYABLE as exc:
                self.metrics.output.retries += 1
                if counts is not None:
                    counts.retries += 1
                if self._stopping:
                    deadline = deadline or time.monotonic() + self.drain_timeout
                    if time.monotonic() > deadline:
                        raise PipeRuntimeError(
                            f"output could not {what} while stopping: {exc}; "
                            "unwritten events stay in the input for the next run"
                        ) from exc
                log.warning(
                    "pipe %s: output %s failed (%s); retrying in %.2fs",
                    self.spec.name,
                    what,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)

    def _dead_letter(self, failures: list[Failure], names: list[str] | None = None) -> None:
        names = self.parts.chain.names if names is None else names
        for f in failures:
            ev = f.event if isinstance(f.event, dict) else {"_value": f.event}
            rec = dict(ev)
            rec["_error"] = {
                "stage": names[f.stage] if f.stage < len(names) else str(f.stage),
                "message": str(f.error) or type(f.error).__name__,
            }
            self._dead.append(rec)

    async def _write(
        self, out: Output, events: list[Event], counts: OutputCounts | None = None, label: str = ""
    ) -> None:
        """Write ``events`` to one output in ``batch.size`` parts, retrying until each is taken."""
        m = self.metrics
        size = max(1, self.batch_size)
        for i in range(0, len(events), size):  # batch.size caps every write
            part = events[i : i + size] if len(events) > size else events
            t0 = time.perf_counter()
            rejects = await self._retry(out.write, f"write{label}", part, counts=counts)
            took = time.perf_counter() - t0
            m.output.write_seconds += took
            m.output.batches += 1
            m.output.events += len(part) - len(rejects)
            if counts is not None:
                counts.write_seconds += took
                counts.batches += 1
                counts.events += len(part) - len(rejects)
                counts.errors += len(rejects)
            self._refused(rejects, label)

    def _refused(self, rejects: list[tuple[Event, str]], label: str = "") -> None:
        """Events an output can never write: counted, and to ``errors:`` with why."""
        if not rejects:
            return
        self.metrics.output.errors += len(rejects)
        for ev, why in rejects:
            rec = dict(ev)
            rec["_error"] = {"stage": f"output{label}", "message": why}
            self._dead.append(rec)

    def _route(self, events: list[Event], final: bool) -> list[tuple[Any, list[Event]]]:
        """Each output's share of ``events`` after its own actions (``route: all|first``)."""
        from pipenb.engine.routing import route_events

        routes = self.parts.routes
        routed = route_events(routes, self.spec.route, events)
        self.metrics.unrouted += routed.unrouted
        for e, where, exc in routed.failures:
            self._dead_letter([Failure(e, 0, exc)], [where])
        out = []
        for r, share in zip(routes, routed.shares):
            if r.chain.segments:
                share, failures = r.chain.run(share) if share else ([], [])
                if final:
                    tail, more = r.chain.flush()
                    share.extend(tail)
                    failures.extend(more)
                if failures:
                    self._dead_letter(failures, r.chain.names)
            out.append((r, share))
        return out

    async def _flush(
        self, events: list[Event], position: Any, have_pos: bool, *, final: bool = False
    ) -> None:
        if self._inflight is not None:
            await self._flush_in_flight(events, position, have_pos, final)
            return
        m = self.metrics
        if not self.parts.routes:
            await self._write(self.parts.output, events)
        else:
            # every output that received a share confirms it before the input moves on
            jobs = [
                self._write(r.output, share, m.outputs[r.name], f" ({r.name})")
                for r, share in self._route(events, final)
                if share
            ]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
        await self._write_dead()
        if have_pos:
            self._save(position)

    async def _write_dead(self) -> None:
        """Dead letters gathered so far to ``errors:`` (or counted and logged without one)."""
        m = self.metrics
        if self._dead:
            dead, self._dead = self._dead, []
            m.dead_letters += len(dead)
            if self.parts.errors is not None:
                lost = await self._retry(self.parts.errors.write, "write errors", dead)
                if lost:  # not even the dead-letter output could take them: count, say why
                    m.dead_letters_dropped += len(lost)
                    log.warning(
                        "pipe %s: %d dead letter(s) could not be written (first: %s)",
                        self.spec.name,
                        len(lost),
                        lost[0][1],
                    )
            else:
                m.dead_letters_dropped += len(dead)
                first = dead[0].get("_error", {})
                log.warning(
                    "pipe %s: %d event(s) failed (first: %s: %s); set errors: to keep them",
                    self.spec.name,
                    len(dead),
                    first.get("stage"),
                    first.get("message"),
                )

    def _save(self, position: Any) -> None:
        """Everything up to ``position`` was written: checkpoint it."""
        m = self.metrics
        self.checkpoints.save(position)
        self.parts.input.committed(position)
        self._last_position = position
        m.checkpoints += 1
        m.last_checkpoint = time.time()

    async def _flush_in_flight(
        self, events: list[Event], position: Any, have_pos: bool, final: bool
    ) -> None:
        """``concurrency: N``: start the writes, commit in input order (``InFlight``)."""
        assert self._inflight is not None
        if events or have_pos:
            # one write per batch.size part, so the parts of a large input batch overlap too;
            # only the last carries the position (committed once all before it are written)
            size = max(1, self.batch_size)
            parts = [events[i : i + size] for i in range(0, len(events), size)] or [[]]
            for k, part in enumerate(parts):
                last = k == len(parts) - 1
                write = self._write(self.parts.output, part) if part else None
                await self._inflight.add(write, position if last else None, have_pos and last)
        elif not self._inflight.busy:
            await self._write_dead()  # dead letters alone
        await self._inflight.settle(everything=final)

    async def _commit(self, position: Any, have_pos: bool) -> None:
        """A batch in flight and all before it were written: dead letters, then its position."""
        await self._write_dead()
        if have_pos:
            self._save(position)

    # ------------------------------------------------------------------ reporting
    def snapshot(self) -> dict[str, Any]:
        """Metrics as plain data: per stage in/out/dropped/errors, output, lag, checkpoint."""
        m = self.metrics
        lag = None
        extra: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            lag = self.parts.input.lag()
        with contextlib.suppress(Exception):
            extra = dict(self.parts.input.stats())
        return {
            "pipe": self.spec.name,
            "state": self.state,
            "error": self.error,
            "uptime_s": round(time.time() - m.started, 3),
            "input": {
                "name": self.spec.input.name,
                "events": m.input_events,
                "bytes": m.input_bytes,
                "errors": m.input_errors,
                "lag": lag,
                **extra,
            },
            "actions": [c.as_dict() for c in self.parts.chain.counts],
            "output": {
                "name": self.spec.output.name,
                **m.output.as_dict(),
                **({"in_flight_most": self._inflight.most} if self._inflight is not None else {}),
            },
            **(
                {
                    "outputs": {
                        r.name: {
                            "name": spec.output.name,
                            **m.outputs[r.name].as_dict(),
                            "actions": [c.as_dict() for c in r.chain.counts],
                        }
                        for r, spec in zip(self.parts.routes, self.spec.routes)
                    },
                    "unrouted": m.unrouted,
                }
                if self.parts.routes
                else {}
            ),
            "dead_letters": m.dead_letters,
            "dead_letters_dropped": m.dead_letters_dropped,
            "checkpoints": m.checkpoints,
            "position": self._last_position,
        }
