"""Actions compile to steps; consecutive per-event steps are fused into one generated loop.

Why generate code: a pipe of three simple actions run as three Python callables per event costs
three calls per event, which alone would put the engine well under a hand-written loop. Fusing the
steps' source into a single ``for e in batch`` loop costs what the hand-written loop costs. Each
event runs inside ``try``, so one bad event goes to ``errors:`` and the batch goes on; the stage
that failed is recovered from the traceback's line number, which costs nothing when nothing fails.

A step's code is a list of statements over the variable ``e``. The marker statement ``DROP``
drops the event (counted as dropped by that stage). Steps that change the number of events in
ways a loop body cannot (aggregate, unnest) are ``BatchStep``s and cut the fusion.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.base import Event
from pipenb.lang.expressions import Namespace


@dataclass
class EventStep:
    """Per-event statements over ``e``; ``DROP`` drops the event. ``when`` guards them."""

    code: list[str]
    ns: Namespace
    when: str | None = None  # Python source of the guard, already compiled
    #: why this step's result depends on the events before it (``sample`` without a key
    #: counts events): such a step cannot run split across worker processes
    stateful: str = ""
    #: an extract carrying a pushed-down filter: strings one of which the searched text must
    #: contain for the filter to keep the event (``pipenb.engine.pushdown.needed_strings``);
    #: a text with none of them is dropped without running the pattern where that is exact
    needs_one_of: tuple[str, ...] = ()


@dataclass
class BatchStep:
    """A whole-batch function: ``fn(events, errors) -> events``. For stateful actions."""

    fn: Callable[[list[Event], list[tuple[Event, BaseException]]], list[Event]]
    flush: Callable[[], list[Event]] | None = None  # called when the pipe stops
    #: called about every ``tick_every`` seconds even when no events come (closing time
    #: windows); returns the events it emits
    tick: Callable[[], list[Event]] | None = None
    tick_every: float = 1.0


Step = EventStep | BatchStep


@dataclass
class StageCounts:
    """Counters of one action stage. ``in`` and ``out`` are derived for fused stages."""

    name: str
    events_in: int = 0
    events_out: int = 0
    dropped: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "in": self.events_in,
            "out": self.events_out,
            "dropped": self.dropped,
            "errors": self.errors,
        }


@dataclass
class Failure:
    event: Event
    stage: int
    error: BaseException


@dataclass
class Chain:
    """The compiled action list of a pipe: ``run(events) -> (events, failures)``."""

    names: list[str]
    segments: list[tuple[str, Any, list[int]]] = field(default_factory=list)
    counts: list[StageCounts] = field(default_factory=list)

    def run(self, events: list[Event]) -> tuple[list[Event], list[Failure]]:
        failures: list[Failure] = []
        for kind, fn, stages in self.segments:
            if not events:
                break
            n_in = len(events)
            if kind == "fused":
                dropped = [0] * len(stages)
                errs: list[tuple[Event, BaseException, int]] = []
                events = fn(events, dropped, errs)
                err_by_stage = [0] * len(stages)
                for ev, exc, local in errs:
                    err_by_stage[local] += 1
                    failures.append(Failure(ev, stages[local], exc))
                for local, idx in enumerate(stages):
                    c = self.counts[idx]
                    c.events_in += n_in
                    n_in -= dropped[local] + err_by_stage[local]
                    c.events_out += n_in
                    c.dropped += dropped[local]
                    c.errors += err_by_stage[local]
            else:
                (idx,) = stages
                errs2: list[tuple[Event, BaseException]] = []
                events = fn.fn(events, errs2)
                c = self.counts[idx]
                c.events_in += n_in
                c.events_out += len(events)
                c.errors += len(errs2)
                c.dropped += max(0, n_in - len(events) - len(errs2))
                failures.extend(Failure(ev, idx, exc) for ev, exc in errs2)
        return events, failures

    @property
    def tick_every(self) -> float | None:
        """How often ``tick`` wants to run, or None when no step needs it."""
        every = [fn.tick_every for kind, fn, _ in self.segments if kind == "batch" and fn.tick]
        return min(every) if every else None

    def tick(self) -> tuple[list[Event], list[Failure]]:
        """Let stateful steps emit what is due (closed windows), down the rest of the chain."""
        return self._emit("tick")

    def flush(self) -> tuple[list[Event], list[Failure]]:
        """Flush stateful steps (open windows) at stop, passing what they emit down the chain."""
        return self._emit("flush")

    def _emit(self, which: str) -> tuple[list[Event], list[Failure]]:
        out: list[Event] = []
        failures: list[Failure] = []
        for si, (kind, fn, _stages) in enumerate(self.segments):
            hook = getattr(fn, which, None) if kind == "batch" else None
            if hook is not None:
                emitted = hook()
                if emitted:
                    self.counts[_stages[0]].events_out += len(emitted)
                if emitted:
                    rest = Chain(self.names, self.segments[si + 1 :], self.counts)
                    evs, fails = rest.run(emitted)
                    out.extend(evs)
                    failures.extend(fails)
        return out, failures


def build_chain(names: list[str], steps: list[Step], *, fuse: bool = True) -> Chain:
    """Compile ``steps`` (one per action) into a Chain; ``fuse=False`` keeps one loop a stage."""
    chain = Chain(names=list(names), counts=[StageCounts(n) for n in names])
    pending: list[tuple[int, EventStep]] = []  # (stage index, step) of the next fused loop

    def close_pending() -> None:
        if pending:
            fused = _fuse([s for _, s in pending])
            chain.segments.append(("fused", fused, [i for i, _ in pending]))
            pending.clear()

    for i, step in enumerate(steps):
        if isinstance(step, BatchStep):
            close_pending()
            chain.segments.append(("batch", step, [i]))
        else:
            pending.append((i, step))
            if not fuse:
                close_pending()
    close_pending()
    return chain


def fused_namespace(steps: list[EventStep]) -> dict[str, Any]:
    """The globals of a generated loop: every step's helpers and constants."""
    ns: dict[str, Any] = {}
    for s in steps:
        ns.update(s.ns.values)
    # after the update: every Namespace carries an empty __builtins__ of its own
    ns["__builtins__"] = {"Exception": Exception, "len": len}
    return ns


def fused_body(steps: list[EventStep], indent: str) -> tuple[list[str], list[int]]:
    """The steps' statements over ``e`` at ``indent``, and each generated line's local stage."""
    lines: list[str] = []
    line_stage: list[int] = []  # generated line -> local stage index
    for local, step in enumerate(steps):
        body = step.code or ["pass"]
        ind = indent
        if step.when:
            lines.append(f"{ind}if {step.when}:")
            line_stage.append(local)
            ind += "    "
        for stmt in body:
            for sub in stmt.split("\n"):
                # "@+N " attributes a line to the Nth next stage (a pushed-down filter);
                # "DROP+N" counts the drop there.
                stage = local
                lead, rest = _leading(sub), sub.lstrip()
                if rest.startswith("@+"):
                    marker, _, rest = rest.partition(" ")
                    stage = local + int(marker[2:])
                    lead, rest = lead + _leading(rest), rest.lstrip()
                if rest.strip().startswith("DROP"):
                    target = local + int(rest.strip()[5:] or 0) if "+" in rest else stage
                    lines.append(f"{ind}{lead}_drops[{target}] += 1")
                    line_stage.append(stage)
                    lines.append(f"{ind}{lead}continue")
                else:
                    lines.append(f"{ind}{lead}{rest}")
                line_stage.append(stage)
    return lines, line_stage


def stage_finder(first: int, line_stage: list[int]) -> Callable[[BaseException], int]:
    """The local stage an exception raised in the generated ``_run`` came from, by line number
    (``first``: the 1-based line of the first step statement). Costs nothing until one fails."""

    def stage_of(exc: BaseException) -> int:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_name != "_run":
            tb = tb.tb_next
        if tb is None:
            return 0
        i = tb.tb_lineno - first
        return line_stage[i] if 0 <= i < len(line_stage) else 0

    return stage_of


def compile_run(src: str, ns: dict[str, Any]) -> Callable[..., Any]:
    """Compile generated source defining ``_run`` in ``ns``; the source stays on the function."""
    code = compile(src, "<pipenb-actions>", "exec")
    exec(code, ns)
    fn = ns["_run"]
    fn.source = src  # for debugging: print(chain.segments[0][1].source)
    return fn


def _fuse(steps: list[EventStep]) -> Callable[..., list[Event]]:
    ns = fused_namespace(steps)
    lines = [
        "def _run(batch, _drops, _errs):",
        "    _out = []",
        "    _ap = _out.append",
        "    for e in batch:",
        "        try:",
    ]
    first = len(lines) + 1  # 1-based line of the first step statement
    body, line_stage = fused_body(steps, "            ")
    lines += body
    lines += [
        "        except Exception as _x:",
        "            _errs.append((e, _x, _stage_of(_x)))",
        "            continue",
        "        _ap(e)",
        "    return _out",
    ]
    ns["_stage_of"] = stage_finder(first, line_stage)
    return compile_run("\n".join(lines), ns)


def _leading(s: str) -> str:
    return s[: len(s) - len(s.lstrip())]


def deep_copy(events: list[Event]) -> list[Event]:
    """Independent copies, so a preview can show each stage's events as they were."""
    try:
        import orjson

        return [orjson.loads(orjson.dumps(e)) for e in events]
    except TypeError:
        return copy.deepcopy(events)
