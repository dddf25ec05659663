"""Grok: the pattern library, custom patterns, type suffixes, located errors, pushdown, and the
loghub examples rewritten with grok (examples/*-grok.yml) at the same 100% agreement."""

from __future__ import annotations

import dataclasses

import pytest

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.errors import PipeSyntaxError
from pipenb.lang.grok import GrokError, compile_grok, library
from pipenb.lang.validate import load_pipe

from support.loghub import BY_PIPE, events_of, ground_truth, text

COMBINED = (
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
    '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
)


def pipe(actions: str, tests: str = "") -> pipenb.Pipe:
    return pipenb.Pipe.from_yaml(
        f"name: g\ninput: {{stdin: {{}}}}\nactions:\n{actions}\noutput: {{print: {{}}}}\n{tests}"
    )


def run(actions: str, lines: list[str]) -> pipenb.PreviewResult:
    return pipe(actions).preview(lines, limit=None)


# ------------------------------------------------------------------ the library


def test_combined_apache_log_with_parse_format_grok():
    r = run('  - parse: {format: grok, pattern: "%{COMBINEDAPACHELOG}", remove: true}', [COMBINED])
    assert r.events == [
        {
            "clientip": "127.0.0.1",
            "ident": "-",
            "auth": "frank",
            "timestamp": "10/Oct/2000:13:55:36 -0700",
            "verb": "GET",
            "request": "/apache_pb.gif",
            "httpversion": "1.0",
            "response": "200",
            "bytes": "2326",
            "referrer": '"http://www.example.com/start.html"',
            "agent": '"Mozilla/4.08 [en] (Win98; I ;Nav)"',
        }
    ]


def test_type_suffixes_convert():
    r = run(
        '  - grok: "%{IP:client} %{WORD:method} %{NUMBER:bytes:int} %{NUMBER:secs:float}"',
        ["10.0.0.1 GET 512 0.25", "10.0.0.2 PUT 12.9 3"],
    )
    assert [(e["bytes"], e["secs"]) for e in r.events] == [(512, 0.25), (12, 3.0)]
    assert isinstance(r.events[1]["secs"], float)


def test_custom_patterns_refer_to_the_library_and_override_it():
    r = run(
        "  - grok:\n"
        "      patterns: {TICKET: 'T-%{INT}', WORD: '[a-z]+'}\n"
        "      pattern: '%{TICKET:ticket} %{WORD:who}'",
        ["T-42 alice", "T-x bob", "T-7 Bob"],
    )
    assert [e.get("ticket") for e in r.events] == ["T-42", None, None]
    assert r.events[0]["who"] == "alice"


def test_a_field_captured_in_two_alternatives_is_one_field():
    r = run(
        '  - grok: {pattern: "%{HTTPD_ERRORLOG}", remove: true}',
        [
            "[Sun Dec 04 04:47:44 2005] [error] mod_jk child in error state 6",
            "[Wed Oct 11 14:32:52 2000] [core:error] [pid 35708:tid 4328636416] "
            "[client 72.15.99.187:47926] File does not exist: /x",
        ],
    )
    assert [e["loglevel"] for e in r.events] == ["error", "error"]
    assert [e["timestamp"] for e in r.events] == [
        "Sun Dec 04 04:47:44 2005",
        "Wed Oct 11 14:32:52 2000",
    ]
    assert r.events[1]["clientip"] == "72.15.99.187" and r.events[1]["module"] == "core"
    assert not any(k.startswith("_grok") for e in r.events for k in e)


def test_syslog_haproxy_and_java_stack_frames():
    r = run(
        '  - grok: "%{SYSLOGLINE}"',
        ["Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186"],
    )
    e = r.events[0]
    assert (e["logsource"], e["program"], e["pid"], e["message"]) == (
        "LabSZ",
        "sshd",
        "24200",
        "Invalid user webmaster from 173.234.31.186",
    )
    hap = (
        "Sep 14 06:30:01 lb1 haproxy[1234]: 10.0.0.5:50123 [14/Sep/2024:06:30:01.123] www "
        "app/web1 10/0/30/69/109 200 2750 - - ---- 1/1/0/0/0 0/0 "
        '"GET /index.html HTTP/1.1"'
    )
    e = run('  - grok: "%{HAPROXYHTTP}"', [hap]).events[0]
    assert (e["client_ip"], e["backend_name"], e["server_name"], e["http_status_code"]) == (
        "10.0.0.5",
        "app",
        "web1",
        "200",
    )
    assert (e["http_verb"], e["http_request"], e["http_version"]) == ("GET", "/index.html", "1.1")
    frame = "\tat org.example.Foo.bar(Foo.java:42)"
    e = run('  - grok: "%{JAVASTACKTRACEPART}"', [frame]).events[0]
    assert (e["class"], e["method"], e["file"], e["line"]) == (
        "org.example.Foo",
        "bar",
        "Foo.java",
        "42",
    )


def test_every_library_pattern_compiles():
    for name in library():
        assert compile_grok(f"%{{{name}:x}}").regex


# ------------------------------------------------------------------ errors


def test_unknown_pattern_is_located_with_did_you_mean():
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(
            "name: g\ninput: {stdin: {}}\nactions:\n"
            '  - parse: {format: grok, pattern: "%{COMBINEDAPACHLOG}"}\n'
            "output: {print: {}}\n"
        )
    (p,) = err.value.problems
    assert p.line == 4
    assert "unknown grok pattern 'COMBINEDAPACHLOG'" in p.message
    assert "did you mean 'COMBINEDAPACHELOG'" in p.message


@pytest.mark.parametrize(
    "expr, words",
    [
        ("%{IP:a:bool}", "use one of int, float"),
        ("%{IP}", "keeps no field"),
        ("%{IP:a.b}", "field name 'a.b'"),
        ("%{LOOP:x}", "refers to itself"),
        ("%{ZZQQ:x}", "define it under patterns"),
    ],
)
def test_bad_expressions_say_what_to_fix(expr: str, words: str):
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(
            "name: g\ninput: {stdin: {}}\nactions:\n"
            f"  - grok: {{pattern: '{expr}', patterns: {{LOOP: '%{{LOOP}}'}}}}\n"
            "output: {print: {}}\n"
        )
    assert words in str(err.value)
    assert err.value.problems[0].line == 4


def test_pattern_only_applies_to_format_grok():
    with pytest.raises(PipeSyntaxError, match="apply to format: grok"):
        load_pipe(
            "name: g\ninput: {stdin: {}}\nactions:\n"
            "  - parse: {format: json, pattern: x}\noutput: {print: {}}\n"
        )
    with pytest.raises(GrokError):
        compile_grok("%{BAD NAME}")


# ------------------------------------------------------------------ pushdown


def test_a_filter_after_grok_is_pushed_down_with_the_same_results():
    actions = (
        "  - grok: {pattern: '^%{WORD:level} %{NUMBER:n:int} %{GREEDYDATA:msg}', on-miss: drop}\n"
        "  - filter: level == 'ERROR'"
    )
    p = pipe(actions)
    chain = compile_chain(p.spec, RunContext())
    src = chain.segments[0][1].source
    assert "_m['level']" in src  # the filter reads the match, before the event is built
    lines = ["ERROR 1 a", "INFO 2 b", "junk", "ERROR 3.5 c"]
    events, _ = chain.run([{"_raw": x} for x in lines])
    assert [(e["level"], e["n"]) for e in events] == [("ERROR", 1), ("ERROR", 3)]
    assert [c.as_dict()["dropped"] for c in chain.counts] == [1, 1]  # junk; INFO
    unfused = compile_chain(p.spec, RunContext(), fuse=False)
    assert unfused.run([{"_raw": x} for x in lines])[0] == events
    assert [c.as_dict() for c in unfused.counts] == [c.as_dict() for c in chain.counts]


def test_a_filter_on_a_converted_field_is_not_pushed_down():
    p = pipe("  - grok: '%{WORD:level} %{NUMBER:n:int}'\n  - filter: n > 1")
    chain = compile_chain(p.spec, RunContext())
    assert "_m[" not in chain.segments[0][1].source.split("_m = ")[1].split("e.update")[0]
    events, _ = chain.run([{"_raw": "a 1"}, {"_raw": "b 2"}])
    assert [e["n"] for e in events] == [2]


# ------------------------------------------------------------------ loghub ground truth


@pytest.mark.parametrize("name", ["apache", "openssh", "linux"])
def test_grok_examples_agree_with_ground_truth(name: str):
    sample = dataclasses.replace(BY_PIPE[name], pipe=f"{name}-grok")
    events = events_of(sample)
    rows = ground_truth(sample)
    assert len(events) == len(rows) == 2000
    for fld, column in sample.columns.items():
        wrong = [
            i for i, (e, r) in enumerate(zip(events, rows), 1) if text(e.get(fld)) != r[column]
        ]
        assert wrong == [], (fld, wrong[:5])
    # and the same events, field for field, as the hand-written regexes give
    assert events == events_of(BY_PIPE[name])
