"""Preview: run a pipe's actions on a sample and keep every stage's events, counts and errors.

Preview never builds the pipe's output, so it cannot write anywhere real. Stages run one at a time
(not fused) so each stage's events can be shown as they were when that stage finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipenb.engine.base import Event, RunContext
from pipenb.engine.build import compile_chain
from pipenb.engine.codecs.lines import decode_lines
from pipenb.engine.steps import Chain, StageCounts, deep_copy
from pipenb.errors import UsageError
from pipenb.lang.spec import PipeSpec


def to_dataframe(records: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of events (pandas is imported here, only when asked for)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - depends on the install
        from pipenb.extras import install_hint

        raise UsageError(f"DataFrames need pandas: {install_hint('jupyter')}") from None
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


@dataclass
class StagePreview(StageCounts):
    """One stage of a preview: its counters (those a run reports) and the events it emitted."""

    events: list[Event] = field(default_factory=list)

    @property
    def df(self) -> Any:
        return to_dataframe(self.events)

    def counts(self) -> dict[str, Any]:
        """The counters without the events, as a run reports a stage."""
        return self.as_dict()


#: Characters of one value the HTML display shows; the DataFrames keep the whole value. A 5 MB
#: line would otherwise go into the notebook file, which Jupyter saves with its outputs.
HTML_VALUE_CHARS = 300


def _short(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        value = orjson.dumps(value, default=str).decode()
    if isinstance(value, str) and len(value) > HTML_VALUE_CHARS:
        return f"{value[:HTML_VALUE_CHARS]}… ({len(value):,} characters)"
    return value


def _html_table(df: Any) -> str:
    """A table for the notebook, long values cut (``.df`` has them whole)."""
    return df.map(_short).to_html(index=False, max_cols=30)


@dataclass
class PreviewResult:
    """What a preview produced. ``.df`` is the output; ``.stages[i].df`` any stage's events.

    ``limit`` is how many input events the preview read at most; ``more`` says the input had
    more than that; ``total`` is how many it has (None when it stopped reading at the limit).
    """

    pipe: str
    stages: list[StagePreview]
    errors: list[Event] = field(default_factory=list)
    limit: int | None = None
    more: bool = False
    total: int | None = None
    #: with ``outputs:``: each output's events (after its own actions), by output name
    outputs: dict[str, list[Event]] = field(default_factory=dict)
    unrouted: int = 0  # events that matched no output's when:

    def output_df(self, name: str) -> Any:
        """One output's events as a DataFrame (pipes with ``outputs:``)."""
        if name not in self.outputs:
            raise KeyError(f"no output {name!r}; outputs: {', '.join(self.outputs) or 'none'}")
        return to_dataframe(self.outputs[name])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: how an agent sends a preview back (``from_dict`` makes it this again)."""
        return {
            "pipe": self.pipe,
            "stages": [{**s.counts(), "events": s.events} for s in self.stages],
            "errors": self.errors,
            "limit": self.limit,
            "more": self.more,
            "total": self.total,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreviewResult:
        """The preview an agent ran, as the same object a local preview gives."""
        stages = [
            StagePreview(
                str(s.get("stage", "")),
                int(s.get("in") or 0),
                int(s.get("out") or 0),
                int(s.get("dropped") or 0),
                int(s.get("errors") or 0),
                events=list(s.get("events") or []),
            )
            for s in data.get("stages") or []
        ]
        return cls(
            str(data.get("pipe", "")),
            stages,
            list(data.get("errors") or []),
            data.get("limit"),
            bool(data.get("more")),
            data.get("total"),
        )

    @property
    def limit_note(self) -> str:
        """ "showing 1,000 of 5,000+ events (--limit)", or "" when the whole input was read."""
        if not self.more or self.limit is None:
            return ""
        exact = self.total is not None and self.total > self.limit
        of = f"{self.total:,}" if exact else f"{self.limit:,}+"
        return f"showing {self.limit:,} of {of} input events (--limit)"

    @property
    def events(self) -> list[Event]:
        return self.stages[-1].events if self.stages else []

    @property
    def df(self) -> Any:
        return to_dataframe(self.events)

    @property
    def errors_df(self) -> Any:
        return to_dataframe(
            [
                {
                    "stage": e.get("_error", {}).get("stage"),
                    "error": e.get("_error", {}).get("message"),
                    "event": orjson.dumps(
                        {k: v for k, v in e.items() if k != "_error"}, default=str
                    ).decode(),
                }
                for e in self.errors
            ]
        )

    @property
    def counts(self) -> list[dict[str, Any]]:
        return [s.counts() for s in self.stages]

    @property
    def counts_df(self) -> Any:
        return to_dataframe(self.counts)

    def __repr__(self) -> str:
        from pipenb.terminal_tables import format_table

        out = f"Preview of {self.pipe}: {len(self.events)} event(s) out, {len(self.errors)} error(s)\n"
        if self.limit_note:
            out += self.limit_note + "\n"
        out += format_table(self.counts) + "\n"
        if self.events:
            out += format_table(self.events[:20])
            if len(self.events) > 20:
                out += f"\n... {len(self.events) - 20} more"
        for name, events in self.outputs.items():  # outputs: each output's events on its own
            out += f"\n\noutput {name}: {len(events)} event(s)\n"
            if events:
                out += format_table(events[:20])
        if self.outputs:
            out += f"\n\nunrouted (matched no output's when:): {self.unrouted}"
        return out

    def _repr_html_(self) -> str:
        parts = [
            f"<h4>Preview of <code>{self.pipe}</code>: {len(self.events)} event(s) out, "
            f"{len(self.errors)} error(s)</h4>",
        ]
        if self.limit_note:
            parts.append(f"<p><b>{html.escape(self.limit_note)}</b></p>")
        parts.append(self.counts_df.to_html(index=False))
        if self.events:
            parts.append(_html_table(self.df.head(50)))
        for name, events in self.outputs.items():  # outputs: each output's events on its own
            parts.append(
                f"<h4>Output <code>{html.escape(name)}</code>: {len(events)} event(s)</h4>"
            )
            if events:
                parts.append(_html_table(to_dataframe(events).head(50)))
        if self.outputs:
            parts.append(f"<p>unrouted (matched no output's when:): {self.unrouted}</p>")
        if self.errors:
            parts.append("<h4>Errors</h4>" + _html_table(self.errors_df.head(50)))
        return "\n".join(parts)


def sample_events(
    sample: Any, spec: PipeSpec, limit: int | None
) -> tuple[list[Event], list[Event]]:
    """Events (and rejects) from a sample: a list of events or lines, a DataFrame, a file."""
    events, rejects, _total = _sample_events(sample, spec, limit)
    return events, rejects


def _sample_events(
    sample: Any, spec: PipeSpec, limit: int | None
) -> tuple[list[Event], list[Event], int | None]:
    """``sample_events``, and how many events the sample has (None: more than ``limit``, from
    a file read only that far)."""
    rejects: list[Event] = []
    fmt = getattr(spec.input.options, "format", "lines")
    if fmt not in ("lines", "json"):
        fmt = "lines"
    if hasattr(sample, "to_dict") and hasattr(sample, "columns"):  # a pandas DataFrame
        records = sample.to_dict("records")
        events = [{k: _clean(v) for k, v in r.items()} for r in records]
    elif isinstance(sample, (str, os.PathLike)):
        path = os.fspath(sample)
        if not os.path.exists(path):
            raise UsageError(f"sample file {path!r} does not exist")
        if path.endswith((".ndjson", ".jsonl")):
            fmt = "json"
        with open(path, "rb") as fh:
            lines = []
            for line in fh:
                lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
                if limit is not None and len(lines) > limit:  # one more: there is more
                    break
        events, rejects = decode_lines(lines, fmt)
        if limit is not None and len(lines) > limit:
            return events[:limit], rejects, None
    elif isinstance(sample, (list, tuple)):
        lines = [s for s in sample if isinstance(s, str)]
        if lines and len(lines) == len(sample):
            events, rejects = decode_lines(list(lines), fmt)
        else:
            events = []
            for i, s in enumerate(sample):
                if isinstance(s, dict):
                    events.append(dict(s))
                elif isinstance(s, str):
                    good, bad = decode_lines([s], fmt)
                    events.extend(good)
                    rejects.extend(bad)
                else:
                    raise UsageError(
                        f"sample item {i} is a {type(s).__name__}; use dicts or strings"
                    )
    else:
        raise UsageError(
            "a sample is a list of events or lines, a pandas DataFrame, or a file path"
        )
    return (events[:limit] if limit is not None else events), rejects, len(events)


def _clean(v: Any) -> Any:
    try:
        if v != v:  # NaN from pandas means missing
            return None
    except (TypeError, ValueError):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


def input_sample(
    spec: PipeSpec, limit: int | None, timeout: float
) -> tuple[list[Event], list[Event]]:
    """The first ``limit`` events of the pipe's own input, read once, from the beginning."""
    events, rejects, _seen = _input_sample(spec, limit, timeout)
    return events, rejects


def _input_sample(
    spec: PipeSpec,
    limit: int | None,
    timeout: float,
    ctx: RunContext | None = None,
    tail: bool = False,
) -> tuple[list[Event], list[Event], int]:
    """``input_sample``, and how many events it read (more than ``limit``: the input has more).

    ``ctx``: the run context (an agent's preview brings its policy's guard and capabilities);
    ``tail``: keep the last ``limit`` events of the whole input (read to its end or the
    timeout) rather than the first: an agent previews a log file's newest lines."""
    from pipenb.engine.build import check_capabilities

    if ctx is None:
        ctx = RunContext(pipe=spec.name, preview=True, values=spec.values)
    check_capabilities(spec, ctx)
    opts = spec.input.options
    update: dict[str, Any] = {
        k: v
        for k, v in (("follow", False), ("start_at", "beginning"), ("interval", None))
        if k in type(opts).model_fields
    }
    if "count" in type(opts).model_fields and getattr(opts, "interval", None) is not None:
        update["count"] = 1
    opts = opts.model_copy(update=update)
    inp = spec.input.component.factory(opts, ctx)

    rejects: list[Event] = []
    seen = [0]  # events dropped from the front while tailing

    async def collect() -> list[Event]:
        out: list[Event] = []
        agen = inp.batches()
        try:
            async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _nullctx():
                async for batch in agen:
                    out.extend(batch.events)
                    rejects.extend(batch.rejects)
                    if limit is not None and len(out) > limit:
                        if not tail:  # one more: there is more
                            break
                        seen[0] += len(out) - limit - 1
                        del out[: len(out) - limit - 1]  # keep the newest (and one: more)
        except TimeoutError:
            pass
        finally:
            await agen.aclose()
            await inp.close()
        return out

    events = run_sync(collect())
    if tail and limit is not None:
        return events[-limit:] if limit else [], rejects, len(events) + seen[0]
    return (events if limit is None else events[:limit]), rejects, len(events)


class _nullctx:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *a: Any) -> None:
        return None


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion, also from inside a running loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def preview(
    spec: PipeSpec,
    sample: Any = None,
    limit: int | None = 1000,
    timeout: float = 10.0,
    *,
    ctx: RunContext | None = None,
    tail: bool = False,
) -> PreviewResult:
    """``ctx`` and ``tail``: see ``_input_sample`` (an agent's preview, pipenb.agent.preview)."""
    total: int | None
    if ctx is None:
        ctx = RunContext(pipe=spec.name, preview=True, values=spec.values)
    if sample is None:
        events, rejects, seen = _input_sample(spec, limit, timeout, ctx, tail)
        total = seen if tail or limit is None or seen <= limit else None
    else:
        events, rejects, total = _sample_events(sample, spec, limit)
    chain = compile_chain(spec, ctx, fuse=False)
    stages = [
        StagePreview(
            f"input:{spec.input.name}",
            len(events) + len(rejects),
            len(events),
            errors=len(rejects),
            events=deep_copy(events),
        )
    ]
    errors: list[Event] = list(rejects)  # lines the input format could not decode
    current = events
    for seg in chain.segments:
        (idx,) = seg[2]
        one = Chain(chain.names, [seg], chain.counts)
        before = len(current)
        current, failures = one.run(current)
        for f in failures:
            rec = dict(f.event)
            rec["_error"] = {"stage": chain.names[f.stage], "message": str(f.error)}
            errors.append(rec)
        c = chain.counts[idx]
        stages.append(
            StagePreview(
                chain.names[idx],
                before,
                len(current),
                c.dropped,
                c.errors,
                events=deep_copy(current),
            )
        )
    flushed, failures = chain.flush()
    if flushed:
        stages[-1].events.extend(deep_copy(flushed))
        stages[-1].events_out += len(flushed)
    for f in failures:
        errors.append(
            {**f.event, "_error": {"stage": chain.names[f.stage], "message": str(f.error)}}
        )
    more = limit is not None and (total is None or total > limit)
    result = PreviewResult(spec.name, stages, errors, limit, more, total)
    if spec.routes:
        _preview_routes(spec, ctx, stages[-1].events, result)
    return result


def _preview_routes(spec: PipeSpec, ctx: RunContext, events: list[Event], res: Any) -> None:
    """Each output's events, as the engine would route them (outputs are not built)."""
    from pipenb.engine.build import RouteParts, compile_when
    from pipenb.engine.routing import route_events
    from pipenb.engine.steps import build_chain

    routes = []
    for rs in spec.routes:
        steps = [a.component.factory(a.options, ctx) for a in rs.actions]
        chain = build_chain([a.label for a in rs.actions], steps, fuse=False)
        match = compile_when(rs.when) if rs.when is not None else None
        routes.append(RouteParts(rs.name, match, chain, None, rs.is_default))  # type: ignore[arg-type]
    routed = route_events(routes, spec.route, deep_copy(events))
    res.unrouted = routed.unrouted
    for e, where, exc in routed.failures:
        res.errors.append({**e, "_error": {"stage": where, "message": str(exc)}})
    for r, share in zip(routes, routed.shares):
        out, failures = r.chain.run(share) if share else ([], [])
        tail, more = r.chain.flush()
        out.extend(tail)
        for f in [*failures, *more]:
            where = r.chain.names[f.stage]
            res.errors.append({**f.event, "_error": {"stage": where, "message": str(f.error)}})
        res.outputs[r.name] = out
