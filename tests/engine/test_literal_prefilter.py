"""Lines dropped before the pattern runs: never a different event, count or failure.

An ``extract`` of the raw line followed by a ``filter`` that needs a captured field to equal a
string cannot keep a line that does not contain that string, so the fast path drops such lines
without running the pattern (``pushdown.needed_strings``, ``chunks._raw_first``). Properties:

- ``needed_strings`` says what an expression needs, and nothing when it could fail or when a
  line without the strings could still be kept;
- on generated lines (levels that are and are not the string, the string elsewhere in the line,
  lines the pattern misses, blanks, non-ASCII), the fast path's processor writes the bytes the
  plain chain (nothing fused, nothing pushed down) writes, fails the same events at the same
  stages with the same messages and counts every stage the same, for every ``on-miss``; and the
  skip is in its code exactly when the expression needs strings and a miss is kept;
- the batch path (fused, pushed down, skipping only events that hold nothing but a string
  line) agrees with the plain chain on bare lines, bare values that are not strings and
  events with more fields;
- ``holding`` picks exactly the lines a split and a test of each line would pick;
- a whole run (batch path, fast path, two workers) writes the same output.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from engine.test_parallel_engine import three_ways
from hypothesis import given
from hypothesis import strategies as st

from pipenb.engine.base import RunContext
from pipenb.engine.build import build, compile_chain
from pipenb.engine.chunks import PIECE, chunk_plan, holding
from pipenb.engine.codecs.lines import decode_chunk
from pipenb.engine.codecs.ndjson import ndjson
from pipenb.engine.pushdown import needed_strings
from pipenb.lang.validate import load_pipe

from support.fuzzing import fuzz_settings

GROUPS = {"ts", "level", "host", "msg", "rest"}


@pytest.mark.parametrize(
    ("expr", "needs"),
    [
        ('level == "ERROR"', ("ERROR",)),
        ('"ERROR" == level', ("ERROR",)),
        ('event.level == "ERROR"', ("ERROR",)),
        ('level in ["WARN", "ERROR"]', ("ERROR", "WARN")),
        ('level == "ERROR" and host != "db-1"', ("ERROR",)),
        ('host != "db-1" and level == "ERROR"', ("ERROR",)),
        ('level == "ERROR" and status in [500, 503]', ("ERROR",)),
        ('level == "ERROR" or host == "db-1"', ("ERROR", "db-1")),
        ('not (level == "INFO") and level == "WARN"', ("WARN",)),
        # a line without the strings could be kept: nothing
        ('level == "ERROR" or host != "db-1"', ()),
        ('not (level == "ERROR")', ()),
        ('level != "INFO"', ()),
        ('other == "x"', ()),  # not a captured field: the line's text says nothing of it
        ('_raw == "x"', ()),  # the whole line is not a capture (`_raw` is the field searched)
        ('level.sub == "x"', ()),
        ('level == ""', ()),  # every line contains it
        ('level in ["ERROR", 5]', ()),
        ('level == "ERROR" and level == level', ("ERROR",)),
        # could fail on some event: a failure must stay a failure, so nothing
        ('len(msg) > 2 and level == "ERROR"', ()),
        ('level == "ERROR" and int(rest) > 2', ()),
        ('level in "ERROR"', ()),  # a substring test, and one that fails on null
        ('level == "ERROR" and rest > "a"', ()),
        ('matches(level, "E") and level == "ERROR"', ()),
    ],
)
def test_needed_strings(expr: str, needs: tuple[str, ...]) -> None:
    assert needed_strings(expr, GROUPS) == needs


PATTERN = r'^(?P<ts>\S+) (?P<level>\S+) (?P<host>\S+) "(?P<msg>[^"]*)" (?P<rest>.*)$'
FILTERS = [
    'level == "ERROR"',
    'level in ["WARN", "ERROR"]',
    'level == "ERROR" and host != "db-1"',
    'level == "ERROR" or host == "db-1"',
    'level == "é" or msg == "ERROR"',
    'level == "ERROR" or _raw == "x y"',  # no strings: reads the line itself on a miss
    'level == "ERROR" or host != "db-1"',  # no strings: keeps lines without them
    'not (level == "ERROR")',
    'level == "ERROR" and len(msg) > 3',  # could fail: no strings
    'int(host) > 0 and level == "ERROR"',  # fails on most lines, before the level is read
    '_raw in ["x y"] and level == "ERROR"',  # fails on a bare event whose _raw is a list
]
WORDS = ["ERROR", "ERRORS", "error", "WARN", "INFO", "é", "db-1", "web-2", "x", ""]


@st.composite
def text_lines(draw: st.DrawFn) -> list[str]:
    word = st.sampled_from(WORDS)
    matching = st.builds(
        lambda ts, lvl, host, msg, rest: f'{ts} {lvl} {host} "{msg}" {rest}',
        st.sampled_from(["t1", "2026-12-05T10:00:00Z", "ERROR"]),
        word.filter(bool),
        word.filter(bool),
        st.lists(word, max_size=3).map(" ".join),
        st.lists(word, max_size=2).map(" ".join),
    )
    other = st.one_of(
        st.lists(word, max_size=4).map(" ".join),  # missed by the pattern: no quotes
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
        st.just("x y"),
    )
    return draw(st.lists(st.one_of(matching, matching, other), min_size=1, max_size=40))


def pipe_text(flt: str, on_miss: str, remove: bool, path: str = "IN", out: str = "OUT") -> str:
    return yaml.safe_dump(
        {
            "name": "prefilter",
            "input": {"files": {"path": path, "follow": False}},
            "actions": [
                {"extract": {"pattern": PATTERN, "remove": remove, "on-miss": on_miss}},
                {"filter": flt},
            ],
            "output": {"file": {"path": out}},
        },
        allow_unicode=True,
    )


def every_filter(test: Any) -> Any:
    """Run ``test`` for every filter of FILTERS with every ``on-miss``."""
    on_miss = pytest.mark.parametrize("on_miss", ["keep", "drop", "error"])
    return on_miss(pytest.mark.parametrize("flt", FILTERS)(test))


def skipping(flt: str, on_miss: str) -> bool:
    """Whether a pipe of this filter may skip the pattern at all."""
    return on_miss == "keep" and bool(needed_strings(flt, GROUPS))


@every_filter
@fuzz_settings(max_examples=30)
@given(lines=text_lines(), remove=st.booleans())
def test_the_fast_path_agrees_with_the_plain_chain(lines, remove, flt, on_miss):
    spec = load_pipe(pipe_text(flt, on_miss, remove))
    proc, why = chunk_plan(spec, build(spec, RunContext()))
    assert proc is not None, why
    skips = "not in _line" in proc.source
    # (a filter reading the line itself is pushed down reading the event: not the lazy shape)
    assert skips == (skipping(flt, on_miss) and "_raw" not in flt)

    chunk = ("\n".join(lines) + "\n").encode()
    res = proc(chunk)

    events, rejects = decode_chunk(chunk, "lines")
    assert not rejects
    batch_path = compile_chain(spec, RunContext())  # fused, pushed down, skips bare lines
    assert_same_run(batch_path, compile_chain(spec, RunContext(), fuse=False), events)
    plain = compile_chain(spec, RunContext(), fuse=False)
    out, failures = plain.run(events)
    assert res.data == ndjson(out)[0]
    assert res.events_in == len(events)
    assert res.events_out == len(out)
    assert res.drops == [c.dropped for c in plain.counts]
    # in any order: the plain chain runs stage after stage, the fused loop event after event
    assert failed(res.failures) == failed((f.event, f.stage, str(f.error)) for f in failures)


def failed(failures: Any) -> list[tuple[int, str, bytes]]:
    """(stage, message, event) of each failure, sorted: comparable whatever the order."""
    return sorted(
        (stage, msg, orjson.dumps(e, option=orjson.OPT_SORT_KEYS)) for e, stage, msg in failures
    )


def assert_same_run(fused, plain, events: list[dict]) -> None:
    """The same events out, the same counts per stage, the same failures (stage, message and
    the event the failing stage was given)."""
    out_f, fail_f = fused.run(copy.deepcopy(events))
    out_p, fail_p = plain.run(copy.deepcopy(events))
    assert out_f == out_p
    assert [c.as_dict() for c in fused.counts] == [c.as_dict() for c in plain.counts]
    assert failed((f.event, f.stage, str(f.error)) for f in fail_f) == failed(
        (f.event, f.stage, str(f.error)) for f in fail_p
    )


@st.composite
def mixed_events(draw: st.DrawFn) -> list[dict]:
    """Bare lines, bare values that are not strings, and events with more fields."""
    lines = draw(text_lines())
    out: list[dict] = []
    for line in lines:
        kind = draw(st.integers(0, 5))
        if kind == 0:
            out.append({"_raw": line, "level": draw(st.sampled_from(WORDS))})
        elif kind == 1:
            out.append({"_raw": draw(st.sampled_from([5, ["x y"], {"a": "ERROR"}, None, True]))})
        elif kind == 2:
            out.append({"level": "ERROR"})
        else:
            out.append({"_raw": line})
    return out


@every_filter
@fuzz_settings(max_examples=30)
@given(events=mixed_events(), remove=st.booleans())
def test_the_batch_path_skips_only_bare_lines(events, remove, flt, on_miss):
    spec = load_pipe(pipe_text(flt, on_miss, remove))
    fused = compile_chain(spec, RunContext())
    skips = "len(e) == 1" in fused.segments[0][1].source
    pushed = not (remove and "_raw" in flt)  # (the field removed is read by the filter: no)
    assert skips == (skipping(flt, on_miss) and pushed)
    assert_same_run(fused, compile_chain(spec, RunContext(), fuse=False), events)


@fuzz_settings(max_examples=300)
@given(
    text=st.text(st.sampled_from("ab\nE"), max_size=60),
    needles=st.lists(st.sampled_from(["E", "ab", "bE", "aa", "Eb", "b"]), min_size=1, max_size=3),
)
def test_holding_picks_the_lines_a_split_would(text: str, needles: list[str]) -> None:
    wanted = [line for line in text.split("\n") if any(n in line for n in needles)]
    assert holding(text, tuple(dict.fromkeys(needles))) == wanted


@pytest.mark.parametrize("flt", ['level == "ERROR"', 'level in ["WARN", "ERROR"]'])
def test_chunks_of_many_pieces_agree_with_the_plain_chain(flt: str) -> None:
    lines = [
        f't{i} {("ERROR", "INFO", "WARN", "ERRORS")[i % 4]} h{i % 7} "{("ERROR", "ok")[i % 3 > 0]}" r'
        if i % 5
        else f"no match {i}"
        for i in range(12_000)
    ]
    chunk = ("\n".join(lines)).encode()  # no newline at the end: a last partial line
    assert len(chunk) > 3 * PIECE
    spec = load_pipe(pipe_text(flt, "keep", True))
    proc, _ = chunk_plan(spec, build(spec, RunContext()))
    assert proc is not None
    res = proc(chunk)
    plain = compile_chain(spec, RunContext(), fuse=False)
    events, _ = decode_chunk(chunk, "lines")
    out, failures = plain.run(events)
    assert res.data == ndjson(out)[0] and not failures and not res.failures
    assert (res.events_in, res.events_out) == (len(events), len(out)) == (12_000, len(out))
    assert res.drops == [c.dropped for c in plain.counts]


def test_the_skip_is_what_w2s_shape_gets_and_a_whole_run_agrees(tmp_path: Path) -> None:
    lines = [
        't1 ERROR web-2 "disk full" a=1',
        't2 INFO web-2 "ERROR in the message" a=2',  # has the string, is dropped after the match
        't3 ERRORS web-2 "x" a=3',
        't4 WARN db-1 "slow" a=4',
        "no quotes here ERROR",  # missed, has the string: the filter drops the bare line
        "no quotes here",
        't5 ERROR db-1 "é" a=5',
    ] * 50
    src = tmp_path / "in.log"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = yaml.safe_load(pipe_text('level == "ERROR"', "keep", True, str(src), "OUT/out.ndjson"))
    doc["errors"] = {"file": {"path": "OUT/errors.ndjson"}}
    spec = load_pipe(yaml.safe_dump(doc))
    proc, _ = chunk_plan(spec, build(spec, RunContext()))
    assert proc is not None
    assert "if 'ERROR' not in _line:" in proc.source
    runs = three_ways(doc, src, tmp_path)
    assert runs["fast"]["fast"] and runs["two"]["workers"] == 2
    assert runs["batches"]["out"].count(b"\n") == 100
    for label in ("fast", "two"):
        assert runs[label]["out"] == runs["batches"]["out"]
        assert runs[label]["counts"][1] == runs["batches"]["counts"][1]  # the stages' counts
