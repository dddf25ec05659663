"""Predicate pushdown (extract + filter) must not change a single event or count."""

from __future__ import annotations

import pytest

from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.engine.pushdown import always_set_groups
from pipenb.lang.validate import load_pipe

EVENTS = [
    {"_raw": "t1 ERROR hello world"},
    {"_raw": "t2 INFO hi"},
    {"_raw": "nomatch"},
    {"_raw": "t3 ERROR x y"},
    {"_raw": 5},
    {"other": 1},
    {"_raw": "t4 WARN w", "level": "ERROR"},
    {"_raw": None, "level": "ERROR", "msg": "kept as is"},
]

CASES = [
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$'}",
        'filter: level == "ERROR"',
    ),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$', remove: true}",
        'filter: level == "ERROR"',
    ),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$', on-miss: drop}",
        'drop: level == "INFO"',
    ),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$', on-miss: error}",
        "filter: len(msg) > 2",
    ),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+)(?: (?P<opt>x))? (?P<msg>.*)$'}",
        'filter: opt == "x" or level == "WARN"',
    ),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$', remove: true}",
        "filter: _raw is null",
    ),
    ("extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$'}", "filter: exists(level)"),
    (
        "extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$'}",
        "filter: event.level == 'ERROR'",
    ),
    ("extract: {pattern: '^(?P<ts>\\S+) (?P<level>\\S+) (?P<msg>.*)$'}", "filter: level > 3"),
]


@pytest.mark.parametrize(("extract", "flt"), CASES)
def test_pushdown_changes_nothing(extract: str, flt: str) -> None:
    spec = load_pipe(
        f"name: t\ninput: {{echo: {{lines: [a]}}}}\nactions:\n  - {extract}\n  - {flt}\n"
        "output: {discard: {}}\n"
    )
    fused = compile_chain(spec, RunContext(), fuse=True)
    plain = compile_chain(spec, RunContext(), fuse=False)
    out_f, fail_f = fused.run([dict(e) for e in EVENTS])
    out_p, fail_p = plain.run([dict(e) for e in EVENTS])
    assert out_f == out_p
    # the event a failing stage was given too: a pushed-down filter that fails on the match
    # runs again on the built event (test_literal_prefilter.py fuzzes this)
    assert [(f.event, f.stage, str(f.error)) for f in fail_f] == [
        (f.event, f.stage, str(f.error)) for f in fail_p
    ]
    assert [c.as_dict() for c in fused.counts] == [c.as_dict() for c in plain.counts]


def test_pushdown_is_used_for_the_common_shape() -> None:
    spec = load_pipe(
        "name: t\ninput: {echo: {lines: [a]}}\nactions:\n"
        "  - extract: {pattern: '^(?P<level>\\S+) (?P<msg>.*)$', remove: true}\n"
        '  - filter: level == "ERROR"\noutput: {discard: {}}\n'
    )
    source = compile_chain(spec, RunContext()).segments[0][1].source
    assert "_m['level'] == 'ERROR'" in source
    assert source.index("_m['level']") < source.index("groupdict")


def test_always_set_groups() -> None:
    assert always_set_groups(r"(?P<a>x)(?P<b>y)?(?:(?P<c>z)|w)(?P<d>\d+)") == {"a", "d"}
    assert always_set_groups(r"(?P<a>x)(?:(?P<b>y))*") == {"a"}
    assert always_set_groups(r"(?P<a>x)(?:(?P<b>y))+") == {"a", "b"}


GROK_LINES = ["INFO abc", "x 5", "x abc", "INFO 7", "x 7.5", "x", "", "ERROR 12", "x -3"]
GROK_CASES = [
    ("%{WORD:level} %{WORD:n:int}", 'level == "x"'),  # a word does not convert: failures
    ("%{WORD:level} %{NUMBER:n:int}", 'level == "x"'),
    ("%{WORD:level} %{NOTSPACE:n:float}", 'level in ["x", "ERROR"]'),
    ("%{WORD:level} %{WORD:n:int}", "n > 3"),  # reads a converted field: not pushed
]


@pytest.mark.parametrize(("pattern", "flt"), GROK_CASES)
def test_a_pushed_filter_never_hides_a_failed_conversion(pattern: str, flt: str) -> None:
    """grok converts typed fields after the match; a filter pushed before that must not drop
    an event the conversion fails (unpushed, grok fails it first). On the batch path and on
    the fast path of a ``lines`` input: the events, the failures (with their events) and the
    counts of the plain chain."""
    from pipenb.engine.build import build
    from pipenb.engine.chunks import chunk_plan
    from pipenb.engine.codecs.lines import decode_chunk
    from pipenb.engine.codecs.ndjson import ndjson

    spec = load_pipe(
        f"name: t\ninput: {{files: {{path: IN, follow: false}}}}\nactions:\n"
        f"  - grok: {{field: _raw, pattern: '{pattern}'}}\n  - filter: '{flt}'\n"
        "output: {file: {path: OUT}}\n"
    )
    chunk = ("\n".join(GROK_LINES) + "\n").encode()
    events, _ = decode_chunk(chunk, "lines")
    plain = compile_chain(spec, RunContext(), fuse=False)
    out_p, fail_p = plain.run([dict(e) for e in events])
    failures = [(f.event, f.stage, str(f.error)) for f in fail_p]
    counts = [c.as_dict() for c in plain.counts]
    assert out_p  # something is kept, for both to agree on

    fused = compile_chain(spec, RunContext())
    out_f, fail_f = fused.run([dict(e) for e in events])
    assert out_f == out_p
    assert [(f.event, f.stage, str(f.error)) for f in fail_f] == failures
    assert [c.as_dict() for c in fused.counts] == counts

    proc, why = chunk_plan(spec, build(spec, RunContext()))
    assert proc is not None, why
    res = proc(chunk)
    assert res.data == ndjson(out_p)[0]
    assert sorted(map(repr, res.failures)) == sorted(map(repr, failures))
    assert res.drops == [c["dropped"] for c in counts]
