"""The actions that keep state or change the number of events: sample, dedupe, aggregate, unnest."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import zlib

import orjson
import pytest

import pipenb
from pipenb.engine.actions import aggregate as aggregate_module
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.lang.validate import load_pipe

from support.files import read_ndjson
from support.pipes import actions_pipe, problems_of, run_actions
from support.waiting import async_wait_until, wait_until


def preview(actions: str, events: list[dict]) -> pipenb.PreviewResult:
    """Preview an action list on ``events`` (flushes stateful actions at the end)."""
    return pipenb.Pipe.from_yaml(actions_pipe(actions)).preview(events)


def chain_of(actions: str):
    """A compiled chain, to drive a stateful step batch by batch."""
    spec = load_pipe(actions_pipe(actions))
    return compile_chain(spec, RunContext(pipe=spec.name))


def messages(result: pipenb.PreviewResult) -> list[str]:
    return [e["_error"]["message"] for e in result.errors]


# ------------------------------------------------------------------------------ sample


def test_sample_without_key_keeps_the_first_of_every_rate_events():
    out, failures, counts = run_actions("- sample: 10", [{"i": i} for i in range(25)])
    assert [e["i"] for e in out] == [0, 10, 20]
    assert failures == []
    assert counts[0]["dropped"] == 22


def test_sample_fuses_with_per_event_actions_and_keeps_counting_across_batches():
    spec = load_pipe(actions_pipe("- filter: i >= 0\n- sample: {rate: 3}\n- add: {kept: true}"))
    chain = compile_chain(spec, RunContext(pipe=spec.name))
    assert [kind for kind, _, _ in chain.segments] == ["fused"]
    first, _ = chain.run([{"i": i} for i in range(4)])
    second, _ = chain.run([{"i": i} for i in range(4, 7)])
    assert [e["i"] for e in first + second] == [0, 3, 6]
    assert all(e["kept"] for e in first + second)


def test_sample_by_key_is_deterministic_and_keeps_or_drops_a_key_whole():
    events = [{"user": f"u{i % 200}", "n": i} for i in range(2000)]
    runs = [run_actions("- sample: {rate: 10, key: user}", events)[0] for _ in range(2)]
    assert runs[0] == runs[1]
    kept_users = {e["user"] for e in runs[0]}
    # CRC-32 of the UTF-8 bytes: the same answer in every process, unlike hash()
    assert kept_users == {f"u{i}" for i in range(200) if zlib.crc32(f"u{i}".encode()) % 10 == 0}
    assert 8 <= len(kept_users) <= 40  # about 1 in 10 of 200 users
    assert len(runs[0]) == 10 * len(kept_users)  # every event of a kept user


def test_sample_by_key_hashes_non_strings_by_their_json_and_missing_keys_as_null():
    events = [{"id": 5}, {"id": "5"}, {"id": None}, {}, {"id": {"b": 1, "a": 2}}]
    keep = [zlib.crc32(b) % 3 == 0 for b in (b"5", b"5", b"null", b"null", b'{"a":2,"b":1}')]
    out, _, _ = run_actions("- sample: {rate: 3, key: id}", events)
    assert out == [e for e, k in zip(events, keep) if k]


def test_sample_with_when_only_thins_out_matching_events():
    events = [{"level": "debug" if i % 2 else "error", "i": i} for i in range(8)]
    out, _, _ = run_actions('- sample: {rate: 2, when: level == "debug"}', events)
    assert [e["i"] for e in out] == [0, 1, 2, 4, 5, 6]  # debug 1, 5 kept; 3, 7 dropped


def test_sample_rate_one_keeps_everything_and_rate_zero_is_invalid():
    events = [{"i": i} for i in range(5)]
    assert run_actions("- sample: 1", events)[0] == events
    (problem,) = problems_of(actions_pipe("- sample: 0"))
    assert "sample.rate: Input should be greater than or equal to 1" in problem.message


# ------------------------------------------------------------------------------ dedupe


def test_dedupe_drops_repeats_of_the_listed_fields():
    events = [
        {"host": "a", "message": "disk full", "n": 1},
        {"host": "a", "message": "disk full", "n": 2},
        {"host": "b", "message": "disk full", "n": 3},
        {"host": "a", "message": "disk ok", "n": 4},
        {"host": "a", "message": "disk full", "n": 5},
    ]
    result = preview("- dedupe: {fields: [host, message], window: 1m}", events)
    assert [e["n"] for e in result.events] == [1, 3, 4]
    assert result.counts[1] == {
        "stage": "0:dedupe",
        "in": 5,
        "out": 3,
        "dropped": 2,
        "errors": 0,
    }


def test_dedupe_missing_fields_count_as_null_and_objects_are_keys_too():
    events = [{}, {"m": None}, {"m": [1, 2]}, {"m": [1, 2]}, {"m": {"a": 1}}, {"m": {"a": 1}}]
    out, failures, _ = run_actions("- dedupe: m", events)
    assert out == [{}, {"m": [1, 2]}, {"m": {"a": 1}}]
    assert failures == []


def test_dedupe_forgets_a_key_when_its_window_ends_and_repeats_do_not_extend_it():
    chain = chain_of("- dedupe: {fields: [m], window: 200ms}")
    started = time.monotonic()
    assert chain.run([{"m": "x"}])[0] == [{"m": "x"}]
    assert chain.run([{"m": "x"}, {"m": "y"}])[0] == [{"m": "y"}]
    # a repeat every 10 ms, each dropped...
    wait_until(lambda: chain.run([{"m": "x"}])[0], 10, "the window to end", interval=0.01)
    assert time.monotonic() - started >= 0.2  # ...until the window of the kept one ended


def test_dedupe_max_keys_forgets_the_oldest_key_first():
    events = [{"m": m} for m in ["a", "b", "c", "a", "c"]]
    out, _, _ = run_actions("- dedupe: {fields: m, max-keys: 2}", events)
    # c evicts a; a (kept again) evicts b; c is still remembered
    assert [e["m"] for e in out] == ["a", "b", "c", "a"]


def test_dedupe_with_when_passes_other_events_unchanged_in_order():
    events = [{"m": "x", "t": t} for t in ("log", "log", "metric", "metric", "log")]
    out, _, _ = run_actions('- dedupe: {fields: [m], when: t == "log"}', events)
    assert [e["t"] for e in out] == ["log", "metric", "metric"]


def test_dedupe_needs_fields():
    (problem,) = problems_of(actions_pipe("- dedupe: []"))
    assert "dedupe.fields" in problem.message


# ------------------------------------------------------------------------------ aggregate


def test_aggregate_count_windows_with_every_function():
    events = [
        {"service": "api", "ms": 10},
        {"service": "db", "ms": 5},
        {"service": "api", "ms": 30},
        {"service": "api", "ms": 20},
        {"service": "db", "ms": 7.5},
    ]
    result = preview(
        """
        - aggregate:
            every: 3
            by: [service]
            count: n
            sum: {ms: total}
            min: {ms: lo}
            max: {ms: hi}
            avg: [ms]
        """,
        events,
    )
    rows = [{k: v for k, v in e.items() if not k.startswith("window_")} for e in result.events]
    assert rows == [
        # the first window: three events
        {"service": "api", "n": 2, "total": 40, "lo": 10, "hi": 30, "avg_ms": 20.0},
        {"service": "db", "n": 1, "total": 5, "lo": 5, "hi": 5, "avg_ms": 5.0},
        # the second, partial, flushed when the preview ends
        {"service": "api", "n": 1, "total": 20, "lo": 20, "hi": 20, "avg_ms": 20.0},
        {"service": "db", "n": 1, "total": 7.5, "lo": 7.5, "hi": 7.5, "avg_ms": 7.5},
    ]
    for e in result.events:
        assert e["window_start"].endswith("Z") and e["window_start"] <= e["window_end"]
    assert list(result.events[0]) == [
        "window_start",
        "window_end",
        "service",
        "n",
        "total",
        "lo",
        "hi",
        "avg_ms",
    ]


def test_aggregate_percentiles_are_exact_and_interpolated_like_pandas():
    values = list(range(1, 101))
    random.Random(7).shuffle(values)
    result = preview(
        "- aggregate: {every: 1000, p50: {v: p50}, p95: {v: p95}, p99: {v: p99}}",
        [{"v": v} for v in values],
    )
    (row,) = result.events
    q = statistics.quantiles(values, n=100, method="inclusive")  # numpy/pandas "linear"
    assert (row["p50"], row["p95"], row["p99"]) == (50.5, q[94], q[98])
    assert row["p95"] == pytest.approx(95.05) and row["p99"] == pytest.approx(99.01)


def test_aggregate_percentiles_of_one_value_and_of_exact_ranks():
    one = preview("- aggregate: {every: 10, p99: [v]}", [{"v": 42}]).events
    assert one[0]["p99_v"] == 42
    five = preview("- aggregate: {every: 10, p50: [v]}", [{"v": v} for v in (9, 1, 5, 3, 7)])
    assert five.events[0]["p50_v"] == 5


def test_aggregate_missing_group_fields_group_as_null_and_missing_values_are_skipped():
    events = [{"svc": "a", "ms": 1}, {"ms": 2}, {"svc": None}, {"svc": "a"}, {"svc": "b"}]
    result = preview("- aggregate: {every: 100, by: svc, count: n, avg: [ms], max: [ms]}", events)
    rows = [{k: v for k, v in e.items() if not k.startswith("window_")} for e in result.events]
    assert rows == [
        {"svc": "a", "n": 2, "avg_ms": 1.0, "max_ms": 1},
        {"svc": None, "n": 2, "avg_ms": 2.0, "max_ms": 2},
        {"svc": "b", "n": 1, "avg_ms": None, "max_ms": None},
    ]


def test_aggregate_dotted_group_and_output_fields_nest():
    events = [{"http": {"status": 200}, "ms": 3}, {"http": {"status": 200}, "ms": 5}]
    result = preview(
        "- aggregate: {every: 5, by: [http.status], count: stats.n, sum: {ms: stats.ms}}",
        events,
    )
    (row,) = result.events
    assert row["http"] == {"status": 200} and row["stats"] == {"n": 2, "ms": 8}


def test_aggregate_non_numeric_values_send_their_event_to_errors_and_count_nowhere():
    events = [{"ms": 1}, {"ms": "12"}, {"ms": True}, {"ms": 3}]
    result = preview("- aggregate: {every: 10, count: n, sum: [ms]}", events)
    assert [(e["n"], e["sum_ms"]) for e in result.events] == [(2, 4)]
    assert messages(result) == [
        "aggregate: ms is '12', not a number; the event was not counted "
        "(convert: makes numbers of strings)",
        "aggregate: ms is True, not a number; the event was not counted "
        "(convert: makes numbers of strings)",
    ]
    assert [e["ms"] for e in result.errors] == ["12", True]


def test_aggregate_more_groups_than_max_groups_go_to_errors():
    events = [{"user": f"u{i}"} for i in range(5)] + [{"user": "u0"}]
    result = preview("- aggregate: {every: 100, by: user, count: n, max-groups: 3}", events)
    assert [(e["user"], e["n"]) for e in result.events] == [("u0", 2), ("u1", 1), ("u2", 1)]
    assert messages(result) == [
        f"aggregate: this window already has 3 groups (max-groups); the event of group "
        f"user='u{i}' was not counted"
        for i in (3, 4)
    ]


def test_aggregate_empty_windows_emit_nothing():
    assert preview("- aggregate: {window: 10s, count: n}", []).events == []
    chain = chain_of("- aggregate: {window: 10s, count: n}")
    assert chain.tick() == ([], [])
    assert chain.flush() == ([], [])
    # an event that fails goes to errors: the window it would have opened stays empty
    chain = chain_of("- aggregate: {window: 10s, count: n, sum: [v]}")
    out, failures = chain.run([{"v": "x"}])
    assert (out, len(failures)) == ([], 1)
    assert chain.flush() == ([], [])
    chain.run([{"v": 1}])
    assert len(chain.flush()[0]) == 1
    assert chain.flush() == ([], [])  # flushed windows are gone


def test_aggregate_time_windows_are_aligned_and_closed_by_the_next_batch_or_a_tick(monkeypatch):
    now = [1_700_000_000.5]  # 2023-11-14T22:13:20.5Z
    monkeypatch.setattr(aggregate_module, "wall_clock", lambda: now[0])
    chain = chain_of("- aggregate: {window: 10s, by: [k], count: n}")
    assert chain.run([{"k": "a"}, {"k": "b"}, {"k": "a"}]) == ([], [])
    now[0] += 9.4  # still inside [..:20, ..:30)
    assert chain.tick() == ([], [])
    now[0] += 0.2  # past ..:30: the next batch closes the window first
    out, _ = chain.run([{"k": "c"}])
    assert out == [
        {
            "window_start": "2023-11-14T22:13:20Z",
            "window_end": "2023-11-14T22:13:30Z",
            "k": "a",
            "n": 2,
        },
        {
            "window_start": "2023-11-14T22:13:20Z",
            "window_end": "2023-11-14T22:13:30Z",
            "k": "b",
            "n": 1,
        },
    ]
    now[0] += 60  # no events for a minute: the tick closes the window of "c"
    out, _ = chain.tick()
    assert out == [
        {
            "window_start": "2023-11-14T22:13:30Z",
            "window_end": "2023-11-14T22:13:40Z",
            "k": "c",
            "n": 1,
        }
    ]
    assert chain.tick() == ([], [])  # the empty windows since emit nothing


def test_aggregate_sub_second_windows_write_milliseconds(monkeypatch):
    monkeypatch.setattr(aggregate_module, "wall_clock", lambda: 1_700_000_000.3)
    chain = chain_of("- aggregate: {window: 250ms, count: n}")
    chain.run([{}])
    (row,), _ = chain.flush()
    assert (row["window_start"], row["window_end"]) == (
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:20.500Z",
    )


def test_aggregate_with_when_passes_other_events_where_they_came():
    events = [{"t": "m", "v": 1}, {"t": "log"}, {"t": "m", "v": 2}, {"t": "m", "v": 3}]
    result = preview('- aggregate: {every: 2, sum: [v], when: t == "m"}', events)
    # the first window closes at its second event, after the log line; the second at the end
    assert [e.get("sum_v", e.get("t")) for e in result.events] == ["log", 3, 3]


def test_a_tick_closes_a_time_window_while_no_events_come(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "agg-tick",
        # one batch, then an hour of silence: only a tick can close the window
        "input": {"echo": {"events": [{"s": "a", "ms": 1}, {"s": "a", "ms": 3}], "interval": "1h"}},
        "actions": [{"aggregate": {"window": "200ms", "by": ["s"], "count": "n", "avg": ["ms"]}}],
        "output": {"file": {"path": str(out), "batch": {"timeout": "50ms"}}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        rows = await async_wait_until(lambda: read_ndjson(out), timeout=10, what="the window")
        assert engine.state == "running"  # emitted by a tick, not by the flush at stop
        engine.stop()
        await asyncio.wait_for(task, 20)
        return rows

    (row,) = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert (row["s"], row["n"], row["avg_ms"]) == ("a", 2, 2.0)
    assert read_ndjson(out) == [row]  # nothing more at stop: the window was closed


def test_the_open_window_is_flushed_when_the_pipe_stops(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "agg-flush",
        "input": {"echo": {"events": [{"v": 1}, {"v": 2}]}},
        "actions": [{"aggregate": {"window": "1h", "sum": ["v"]}}],
        "output": {"file": {"path": str(out)}},
    }
    pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).run(data_dir=data_dir)
    assert [e["sum_v"] for e in read_ndjson(out)] == [3]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{count: n}", "give either window: DURATION or every: N events (exactly one)"),
        ("{window: 1s, every: 3, count: n}", "give either window: DURATION or every: N"),
        ("{window: 0s, count: n}", "window must be longer than 0s"),
        ("{every: 3}", "nothing to compute: add count: NAME or one of sum, min, max, avg"),
        ("{every: 3, count: n, sum: {v: n}}", "output field 'n' is used twice"),
        ("{every: 3, by: [s], count: s}", "output field 's' is used twice (or is a group"),
        ("{every: 3, count: window_end}", "output field 'window_end' is used twice"),
        ("{every: 0, count: n}", "aggregate.every: Input should be greater than or equal to 1"),
    ],
)
def test_aggregate_validation(body, message):
    (problem,) = problems_of(actions_pipe(f"- aggregate: {body}"))
    assert message in problem.message


# ------------------------------------------------------------------------------ unnest


def test_unnest_emits_one_event_per_element_in_place_keeping_key_order():
    events = [{"id": 1, "items": ["a", "b", "c"], "z": 0}, {"id": 2, "items": ["d"]}]
    result = preview("- unnest: items", events)
    assert result.events == [
        {"id": 1, "items": "a", "z": 0},
        {"id": 1, "items": "b", "z": 0},
        {"id": 1, "items": "c", "z": 0},
        {"id": 2, "items": "d"},
    ]
    assert [list(e) for e in result.events[:1]] == [["id", "items", "z"]]
    assert result.counts[1]["out"] == 4


def test_unnest_copies_are_independent():
    out, _, _ = run_actions(
        "- unnest: {field: items}\n- set: {meta.item: items}",
        [{"meta": {"host": "h"}, "items": [1, 2]}],
    )
    assert out == [
        {"meta": {"host": "h", "item": 1}, "items": 1},
        {"meta": {"host": "h", "item": 2}, "items": 2},
    ]
    assert out[0]["meta"] is not out[1]["meta"]


def test_unnest_to_puts_the_element_in_another_field_and_removes_the_array():
    out, _, _ = run_actions(
        "- unnest: {field: order.lines, to: line}",
        [{"order": {"id": 7, "lines": [{"sku": "x"}, {"sku": "y"}]}}],
    )
    assert out == [
        {"order": {"id": 7}, "line": {"sku": "x"}},
        {"order": {"id": 7}, "line": {"sku": "y"}},
    ]


def test_unnest_passes_non_arrays_unchanged_and_drops_empty_arrays():
    events = [{"items": "text"}, {"items": {"a": 1}}, {"items": None}, {}, {"items": []}]
    result = preview("- unnest: items", events)
    assert result.events == events[:4]
    assert result.counts[1] == {"stage": "0:unnest", "in": 5, "out": 4, "dropped": 1, "errors": 0}


def test_unnest_with_when_leaves_other_events_alone():
    events = [{"k": "x", "items": [1, 2]}, {"k": "y", "items": [3, 4]}]
    out, _, _ = run_actions('- unnest: {field: items, when: k == "x"}', events)
    assert out == [{"k": "x", "items": 1}, {"k": "x", "items": 2}, {"k": "y", "items": [3, 4]}]


def test_unnest_then_aggregate_through_the_engine(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    doc = {
        "name": "unnest-agg",
        "input": {"echo": {"events": [{"xs": [1, 2, 3]}, {"xs": [4]}, {"xs": []}]}},
        "actions": [
            {"unnest": {"field": "xs", "to": "x"}},
            {"aggregate": {"every": 100, "count": "n", "sum": ["x"], "p50": ["x"]}},
        ],
        "output": {"file": {"path": str(out)}},
    }
    snap = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).run(data_dir=data_dir)
    ((n, total, median),) = [(e["n"], e["sum_x"], e["p50_x"]) for e in read_ndjson(out)]
    assert (n, total, median) == (4, 10, 2.5)
    assert snap["actions"][0]["out"] == 4
