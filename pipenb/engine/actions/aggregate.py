"""``aggregate``: tumbling windows by time or by count, grouped by fields, with statistics.

The step keeps one open window. Events are put in it as they arrive (event time is arrival
time, so there are no late events); a time window closes when its end has passed, whether the
next batch or the engine's ``tick`` notices first; a count window closes at its Nth event. What
is open when the pipe stops is emitted by ``flush``.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import Field, model_validator

from pipenb.engine.actions.common import set_path
from pipenb.engine.actions.timestamp import iso8601
from pipenb.engine.base import Event, RunContext
from pipenb.engine.steps import BatchStep
from pipenb.errors import EventError
from pipenb.lang.expressions import compile_expression
from pipenb.lang.paths import get_path
from pipenb.lang.registry import ActionOptions, registry
from pipenb.lang.types import Duration, FieldList, FieldName

#: statistics over a field's values, in the order their results appear in output events
FUNCTIONS = ("sum", "min", "max", "avg", "p50", "p95", "p99")
PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
RESERVED = ("window_start", "window_end")

#: the wall clock of time windows (a module attribute, so tests can move time)
wall_clock = time.time


class AggregateOptions(ActionOptions):
    """``- aggregate: {window: 10s, by: [service], count: n, avg: {latency_ms: avg_ms}}``.

    Windows: ``window: DURATION`` makes tumbling windows aligned on the clock (``10s`` windows
    start at :00, :10, ...; ``1h`` on the hour, UTC) by arrival time; ``every: N`` makes windows
    of N events (all groups together), from the arrival of the first to that of the last. Give
    exactly one. Each window emits one event per group, when it closes, in the order the groups
    first appeared: ``{window_start, window_end, <by fields>, <results>}`` with ISO 8601 UTC
    bounds (a time window flushed at stop keeps its nominal end). A window without events emits
    nothing.

    ``by`` lists the group fields; an event without one groups under null for it. ``count:
    NAME`` counts the events of a group. ``sum``, ``min``, ``max``, ``avg``, ``p50``, ``p95``
    and ``p99`` each map input fields to output names (``avg: {latency_ms: avg_latency}``), or
    list input fields (``avg: [latency_ms]`` writes ``avg_latency_ms``). Percentiles are exact,
    interpolated linearly between the two nearest values as pandas' ``quantile()`` does; they
    keep every value of the window in memory. A missing (or null) value is skipped; a result
    with no values is null. A value that is not a number (a string, a boolean) sends its event
    to ``errors:``, and that event counts nowhere: use ``convert`` first for numbers in strings.

    ``max-groups`` bounds the groups of one window: an event that would start one more goes to
    ``errors:``. With ``when``, the other events pass on unchanged and in order; a window's
    results come out where it closed (a time window that ended before a batch arrived: ahead of
    that batch). Windows live in memory: a crash loses the open one (a stop flushes it).
    """

    window: Duration | None = None
    every: int | None = Field(None, ge=1)
    by: FieldList = []
    count: FieldName | None = None
    sum: dict[str, FieldName] = {}
    min: dict[str, FieldName] = {}
    max: dict[str, FieldName] = {}
    avg: dict[str, FieldName] = {}
    p50: dict[str, FieldName] = {}
    p95: dict[str, FieldName] = {}
    p99: dict[str, FieldName] = {}
    max_groups: int = Field(100_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("count") is True:
            data["count"] = "count"
        for fn in FUNCTIONS:
            v = data.get(fn)
            if isinstance(v, str):
                v = [v]
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                data[fn] = {x: f"{fn}_{x.replace('.', '_')}" for x in v}
        return data

    @model_validator(mode="after")
    def _check(self) -> AggregateOptions:
        if (self.window is None) == (self.every is None):
            raise ValueError("give either window: DURATION or every: N events (exactly one)")
        if self.window is not None and self.window <= 0:
            raise ValueError("window must be longer than 0s")
        names = [self.count] if self.count else []
        for fn in FUNCTIONS:
            names.extend(getattr(self, fn).values())
        if not names:
            raise ValueError(
                "nothing to compute: add count: NAME or one of " + ", ".join(FUNCTIONS)
            )
        taken = {*RESERVED, *self.by}
        for name in names:
            if name in taken:
                raise ValueError(f"output field {name!r} is used twice (or is a group field)")
            taken.add(name)
        return self


class _Stats:
    """Running statistics of one field in one group."""

    __slots__ = ("max", "min", "n", "sum", "values")

    def __init__(self, keep_values: bool):
        self.n = 0
        self.sum: int | float = 0
        self.min: Any = None
        self.max: Any = None
        self.values: list[int | float] | None = [] if keep_values else None

    def add(self, v: int | float) -> None:
        if self.n == 0:
            self.min = self.max = v
        elif v < self.min:
            self.min = v
        elif v > self.max:
            self.max = v
        self.n += 1
        self.sum += v
        if self.values is not None:
            self.values.append(v)

    def result(self, fn: str) -> Any:
        if self.n == 0:
            return None
        if fn == "sum":
            return self.sum
        if fn == "min":
            return self.min
        if fn == "max":
            return self.max
        if fn == "avg":
            return self.sum / self.n
        assert self.values is not None
        self.values.sort()
        return percentile(self.values, PERCENTILES[fn])


def percentile(ordered: list[int | float], q: float) -> int | float:
    """The ``q``-th percentile of sorted values, interpolated linearly (numpy's default)."""
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    frac = pos - lo
    if frac == 0:
        return ordered[lo]
    return ordered[lo] + (ordered[lo + 1] - ordered[lo]) * frac


class _Group:
    __slots__ = ("count", "stats", "values")

    def __init__(self, values: tuple, fields: list[tuple[str, bool]]):
        self.values = values
        self.count = 0
        self.stats = {f: _Stats(keep) for f, keep in fields}


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


class Aggregator:
    """The state of one ``aggregate`` action: the open window and its groups."""

    def __init__(self, opts: AggregateOptions):
        self.opts = opts
        self.when = compile_expression(opts.when).fn if opts.when else None
        self.by = [tuple(f.split(".")) for f in opts.by]
        self.by_names = list(opts.by)
        # every input field once, with whether its values must be kept (for percentiles)
        fields: dict[str, bool] = {}
        for fn in FUNCTIONS:
            for f in getattr(opts, fn):
                fields[f] = fields.get(f, False) or fn in PERCENTILES
        self.fields = list(fields.items())
        self.paths = [(f, tuple(f.split("."))) for f in fields]
        self.outputs = [(fn, f, out) for fn in FUNCTIONS for f, out in getattr(opts, fn).items()]
        self.groups: dict[Any, _Group] = {}
        self.start: float | None = None  # the open window's start (epoch seconds)
        self.n = 0  # events in the open window (count windows)
        w = opts.window
        self.precision = "s" if w is not None and w >= 1 and w == int(w) else "ms"
        #: the clock of this aggregator; None reads the module's ``wall_clock``. A cluster run
        #: fixes it to the run's start: a data set read at once arrives all at one time.
        self.clock: Any = None

    def _now(self) -> float:
        return self.clock() if self.clock is not None else wall_clock()

    # ------------------------------------------------------------------ the step's hooks
    def run(self, events: list[Event], errors: list) -> list[Event]:
        now = self._now()
        out = self._due(now)
        every = self.opts.every
        for e in events:
            try:
                if self.when is not None and not self.when(e):
                    out.append(e)
                    continue
                self._add(e, now)
            except Exception as exc:
                errors.append((e, exc))
                continue
            if every is not None and self.n >= every:
                out.extend(self._close(self._now()))
        return out

    def tick(self) -> list[Event]:
        return self._due(self._now())

    def flush(self) -> list[Event]:
        return self._close(self._now())

    # ------------------------------------------------------------------ windows
    def _due(self, now: float) -> list[Event]:
        w = self.opts.window
        if w is not None and self.start is not None and now >= self.start + w:
            return self._close(now)
        return []

    def _add(self, e: Event, now: float) -> None:
        values = []
        for name, path in self.paths:
            v = get_path(e, path)
            if v is not None and type(v) is not int and type(v) is not float:
                raise EventError(
                    f"aggregate: {name} is {_short(v)}, not a number; the event was not "
                    "counted (convert: makes numbers of strings)"
                )
            values.append(v)
        gvals = tuple([get_path(e, p) for p in self.by])
        try:
            key: Any = gvals
            group = self.groups.get(key)
        except TypeError:  # an object or array as a group value
            key = orjson.dumps(gvals, option=orjson.OPT_SORT_KEYS, default=str)
            group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.opts.max_groups:
                where = ", ".join(f"{n}={_short(v)}" for n, v in zip(self.by_names, gvals))
                raise EventError(
                    f"aggregate: this window already has {self.opts.max_groups} groups "
                    f"(max-groups); the event of group {where} was not counted"
                )
            group = self.groups[key] = _Group(gvals, self.fields)
        if self.start is None:
            w = self.opts.window
            self.start = math.floor(now / w) * w if w is not None else now
        group.count += 1
        self.n += 1
        stats = group.stats
        for (name, _), v in zip(self.paths, values):
            if v is not None:
                stats[name].add(v)

    def _close(self, now: float) -> list[Event]:
        groups, start = self.groups, self.start
        self.groups, self.start, self.n = {}, None, 0
        if not groups or start is None:
            return []
        w = self.opts.window
        end = start + w if w is not None else now
        bounds = {"window_start": self._iso(start), "window_end": self._iso(end)}
        out = []
        for g in groups.values():
            ev: Event = dict(bounds)
            for name, v in zip(self.by_names, g.values):
                set_path(ev, tuple(name.split(".")), v)
            if self.opts.count:
                set_path(ev, tuple(self.opts.count.split(".")), g.count)
            for fn, field, name in self.outputs:
                set_path(ev, tuple(name.split(".")), g.stats[field].result(fn))
            out.append(ev)
        return out

    def _iso(self, t: float) -> str:
        return iso8601(datetime.fromtimestamp(t, timezone.utc), self.precision)


@registry.register("action", "aggregate", AggregateOptions)
def aggregate_action(opts: AggregateOptions, ctx: RunContext) -> BatchStep:
    """Tumbling windows by time or count, grouped by fields: count, sum, min, max, avg, pNN."""
    agg = Aggregator(opts)
    if opts.window is None:
        return BatchStep(agg.run, flush=agg.flush)
    tick_every = min(1.0, max(0.02, opts.window / 4))
    return BatchStep(agg.run, flush=agg.flush, tick=agg.tick, tick_every=tick_every)
