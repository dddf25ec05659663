"""The ``time`` and ``mask`` actions, run through a validated pipe as users write them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipenb.engine.base import RunContext
from pipenb.engine.steps import build_chain
from pipenb.errors import EventError
from pipenb.lang.validate import load_pipe

from support.pipes import FIRST_ACTION_LINE
from support.pipes import action_doc as pipe
from support.pipes import action_problems as problems
from support.pipes import run_action_doc as run

# ------------------------------------------------------------------------------------- time


def test_time_spec_examples():
    out, failures = run(
        """
        - time: {field: time, format: "%a %b %d %H:%M:%S %Y", to: timestamp}
        - time: {field: ts, format: "%d/%b/%Y:%H:%M:%S %z"}
        """,
        [{"time": "Sun Dec 04 04:47:44 2005", "ts": "10/Oct/2000:13:55:36 -0700"}],
    )
    assert failures == []
    assert out == [
        {
            "time": "Sun Dec 04 04:47:44 2005",
            "timestamp": "2005-12-04T04:47:44Z",
            "ts": "2000-10-10T20:55:36Z",
        }
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2017-06-09T22:10:40+02:00", "2017-06-09T20:10:40.000Z"),
        ("2017-06-09T20:10:40.000Z", "2017-06-09T20:10:40.000Z"),
        ("2017-06-09T20:10:40.000Z", "2017-06-09T20:10:40.000Z"),
        ("2017-06-09T20:10:40.12Z", "2017-06-09T20:10:40.120Z"),
        ("2017-06-09T20:10:40.123456Z", "2017-06-09T20:10:40.123Z"),
        ("2017-06-09 20:10:40", "2017-06-09T20:10:40.000Z"),
        ("2017-06-09", "2017-06-09T00:00:00.000Z"),
    ],
)
def test_time_iso8601_to_utc(value, expected):
    out, failures = run("- time: {field: t, format: iso8601}", [{"t": value}])
    assert failures == []
    assert out == [{"t": expected}]


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("epoch", 1497039040, "2017-06-09T20:10:40.000Z"),
        ("epoch", 1497039040.25, "2017-06-09T20:10:40.250Z"),
        ("epoch", "1497039040", "2017-06-09T20:10:40.000Z"),
        ("epoch_ms", 1497039040123, "2017-06-09T20:10:40.123Z"),
        ("epoch_ms", "1497039040123", "2017-06-09T20:10:40.123Z"),
        ("auto", "2017-06-09T20:10:40.000Z", "2017-06-09T20:10:40.000Z"),
        ("auto", 1497039040, "2017-06-09T20:10:40.000Z"),
        ("auto", "1497039040.5", "2017-06-09T20:10:40.500Z"),
    ],
)
def test_time_epoch_and_auto_inputs(fmt, value, expected):
    out, failures = run(f"- time: {{field: t, format: {fmt}}}", [{"t": value}])
    assert failures == []
    assert out[0]["t"] == expected


def test_time_format_defaults_to_auto():
    out, _ = run("- time: {field: t}", [{"t": 0}, {"t": "1970-01-02T00:00:00.000Z"}])
    assert out == [{"t": "1970-01-01T00:00:00.000Z"}, {"t": "1970-01-02T00:00:00.000Z"}]


@pytest.mark.parametrize(
    ("output", "value", "expected"),
    [
        ("epoch", "2017-06-09T20:10:40Z", 1497039040),
        ("epoch", "2017-06-09T20:10:40.5Z", 1497039040.5),
        ("epoch_ms", "2017-06-09T20:10:40Z", 1497039040000),
        ("epoch_ms", "2017-06-09T20:10:40.1239Z", 1497039040123),
        ("epoch_ms", "1969-12-31T23:59:59Z", -1000),
    ],
)
def test_time_epoch_outputs(output, value, expected):
    out, _ = run(f"- time: {{field: t, output: {output}}}", [{"t": value}])
    assert out[0]["t"] == expected
    assert type(out[0]["t"]) is type(expected)


def test_time_naive_times_are_in_the_given_timezone():
    out, failures = run(
        "- time: {field: t, format: '%Y-%m-%d %H:%M', timezone: Europe/Paris}",
        [{"t": "2017-06-09 22:10"}, {"t": "2017-01-09 22:10"}],
    )
    assert failures == []
    assert out == [{"t": "2017-06-09T20:10:00Z"}, {"t": "2017-01-09T21:10:00Z"}]


def test_time_explicit_offset_wins_over_timezone():
    out, _ = run(
        "- time: {field: t, format: iso8601, timezone: America/New_York}",
        [{"t": "2017-06-09T20:10:40+00:00"}, {"t": "2017-06-09T20:10:40"}],
    )
    assert out == [{"t": "2017-06-09T20:10:40.000Z"}, {"t": "2017-06-10T00:10:40.000Z"}]


def _yearless(delta: timedelta) -> tuple[str, datetime]:
    when = (datetime.now(timezone.utc) + delta).replace(microsecond=0)
    if when.month == 2 and when.day == 29:  # keep the expectation simple in leap years
        when += timedelta(days=1)
    return when.strftime("%b %d %H:%M:%S"), when


def test_time_without_year_takes_this_year_or_the_last():
    past_text, past = _yearless(timedelta(days=-2))
    future_text, future = _yearless(timedelta(days=2))
    out, failures = run(
        "- time: {field: t, format: '%b %d %H:%M:%S', output: epoch}",
        [{"t": past_text}, {"t": future_text}],
    )
    assert failures == []
    assert out[0]["t"] == int(past.timestamp())
    # two days ahead is not believable for a log line: it is from the year before
    assert out[1]["t"] == int(future.replace(year=future.year - 1).timestamp())


def test_time_to_another_field_keeps_the_source():
    out, _ = run("- time: {field: raw.ts, to: meta.time, format: epoch}", [{"raw": {"ts": 1}}])
    assert out == [{"raw": {"ts": 1}, "meta": {"time": "1970-01-01T00:00:01.000Z"}}]


def test_time_leaves_missing_and_null_alone():
    events = [{"x": 1}, {"t": None}]
    out, failures = run("- time: {field: t}", events)
    assert failures == []
    assert out == events


@pytest.mark.parametrize(
    ("fmt", "value", "reason"),
    [
        ("'%d/%b/%Y'", "2017-06-09", "does not match format '%d/%b/%Y'"),
        ("'%d/%b/%Y'", 5, "is not a text to read with format"),
        ("iso8601", "yesterday", "is not ISO 8601"),
        ("epoch", "soon", "is not a number of epoch seconds"),
        ("epoch", True, "is not a number of epoch seconds"),
        ("auto", "garbage", "is neither ISO 8601 nor epoch seconds"),
        ("epoch", 1e20, "out of the range"),
        ("auto", {"a": 1}, "holds an object, not a time"),
    ],
)
def test_time_bad_values_go_to_failures(fmt, value, reason):
    out, failures = run(f"- time: {{field: t, format: {fmt}}}", [{"t": value}])
    assert out == []
    assert len(failures) == 1
    assert isinstance(failures[0].error, EventError)
    msg = str(failures[0].error)
    assert "field 't'" in msg
    assert reason in msg
    assert "on-error" in msg


@pytest.mark.parametrize(
    ("on_error", "expected"),
    [
        ("keep", [{"t": "bad"}, {"t": "1970-01-01T00:00:00.000Z"}]),
        ("drop", [{"t": "1970-01-01T00:00:00.000Z"}]),
        ("null", [{"t": None}, {"t": "1970-01-01T00:00:00.000Z"}]),
    ],
)
def test_time_on_error(on_error, expected):
    out, failures = run(
        f"- time: {{field: t, format: epoch, on-error: {on_error}}}", [{"t": "bad"}, {"t": 0}]
    )
    assert failures == []
    assert out == expected


def test_time_on_error_null_sets_the_target_only():
    out, _ = run("- time: {field: t, to: ts, format: epoch, on-error: null}", [{"t": "bad"}])
    assert out == [{"t": "bad", "ts": None}]


def test_time_when():
    out, failures = run(
        """
        - time: {field: t, format: epoch, when: 'kind == "epoch"'}
        """,
        [{"kind": "epoch", "t": 0}, {"kind": "text", "t": "whenever"}],
    )
    assert failures == []
    assert out == [
        {"kind": "epoch", "t": "1970-01-01T00:00:00.000Z"},
        {"kind": "text", "t": "whenever"},
    ]


def test_time_caches_repeated_inputs():
    spec = load_pipe(pipe("- time: {field: t, format: '%d/%b/%Y:%H:%M:%S %z'}"))
    step = spec.actions[0].component.factory(spec.actions[0].options, RunContext())
    chain = build_chain(["time"], [step])
    line = "10/Oct/2000:13:55:36 -0700"
    out, _ = chain.run([{"t": line} for _ in range(5)])
    assert [e["t"] for e in out] == ["2000-10-10T20:55:36Z"] * 5
    (cached,) = [v for v in step.ns.values.values() if hasattr(v, "cache_info")]
    info = cached.cache_info()
    assert (info.misses, info.hits) == (1, 4)
    assert info.maxsize is not None  # bounded


def test_time_validation_reports_lines():
    probs = problems(
        """
        - time: {field: t, timezone: Europe/Pariss}
        - time: {field: t, format: iso}
        - time: {field: t, format: '%Y-%q'}
        - time: {field: t, output: rfc3339}
        - time: {format: epoch}
        """
    )
    by_line = {p.line: p.message for p in probs}
    assert sorted(by_line) == [FIRST_ACTION_LINE + i for i in range(5)]
    assert (
        "unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"
        in by_line[FIRST_ACTION_LINE]
    )
    assert "unknown format 'iso' (did you mean 'iso8601'?)" in by_line[FIRST_ACTION_LINE + 1]
    assert "bad directive" in by_line[FIRST_ACTION_LINE + 2]
    assert (
        "iso8601" in by_line[FIRST_ACTION_LINE + 3] and "epoch_ms" in by_line[FIRST_ACTION_LINE + 3]
    )
    assert "missing required option 'field'" in by_line[FIRST_ACTION_LINE + 4]


def test_time_validation_accepts_on_error_null_and_zones():
    spec = load_pipe(pipe("- time: {field: t, on-error: null, timezone: America/Sao_Paulo}"))
    assert spec.actions[0].options.on_error == "null"


# ------------------------------------------------------------------------------------- mask


def test_mask_regex_with_default_replacement():
    out, failures = run(
        r"- mask: {fields: [message], pattern: '\d{3}-\d{2}-\d{4}'}",
        [{"message": "ssn 123-45-6789 and 987-65-4321"}],
    )
    assert failures == []
    assert out == [{"message": "ssn *** and ***"}]


def test_mask_with_is_literal():
    out, _ = run(
        r"- mask: {fields: msg, pattern: '(\w+)@(\w+)', with: '\1 [gone]'}",
        [{"msg": "mail bob@example"}],
    )
    assert out == [{"msg": r"mail \1 [gone]"}]


def test_mask_only_touches_strings_and_existing_fields():
    events = [{"a": 12345, "b": ["12345"], "c": None, "d": "x12345"}]
    out, failures = run(r"- mask: {fields: [a, b, c, d, e], pattern: '\d+', with: N}", events)
    assert failures == []
    assert out == [{"a": 12345, "b": ["12345"], "c": None, "d": "xN"}]


def test_mask_dotted_field_and_when():
    out, _ = run(
        """
        - mask: {fields: user.email, pattern: email, when: 'env == "prod"'}
        """,
        [
            {"env": "prod", "user": {"email": "ann.lee+x@mail.example.org"}},
            {"env": "dev", "user": {"email": "ann@example.org"}},
        ],
    )
    assert out == [
        {"env": "prod", "user": {"email": "***"}},
        {"env": "dev", "user": {"email": "ann@example.org"}},
    ]


@pytest.mark.parametrize(
    ("preset", "text", "expected"),
    [
        ("email", "from bob.smith@corp.example.com: hi", "from ***: hi"),
        ("ipv4", "peer 10.0.0.1, 192.168.1.254.", "peer ***, ***."),
        ("ipv4", "version 1.2.3.4.5 and 999.1.1.1", "version 1.2.3.4.5 and 999.1.1.1"),
        ("ipv6", "from 2001:db8::1 and ::1 at 12:30:45", "from *** and *** at 12:30:45"),
        ("ipv6", "fe80:0:0:0:202:b3ff:fe1e:8329 ok", "*** ok"),
        ("ipv6", "mac 00:1a:2b:3c:4d:5e, std::vector", "mac 00:1a:2b:3c:4d:5e, std::vector"),
        ("credit-card", "card 4111 1111 1111 1111 ok", "card *** ok"),
        ("credit-card", "card 5500-0000-0000-0004", "card ***"),
        ("credit-card", "order 4111111111111112", "order 4111111111111112"),  # fails Luhn
        ("ssn", "ssn 123-45-6789, not 000-12-3456", "ssn ***, not 000-12-3456"),
        ("bearer-token", "Authorization: Bearer abc.DEF-123_x==", "Authorization: Bearer ***"),
        ("bearer-token", "authorization: bearer tok", "authorization: bearer ***"),
    ],
)
def test_mask_presets(preset, text, expected):
    out, failures = run(f"- mask: {{fields: m, pattern: {preset}}}", [{"m": text}])
    assert failures == []
    assert out == [{"m": expected}]


def test_mask_validation_reports_lines():
    probs = problems(
        """
        - mask: {fields: m, pattern: '(unclosed'}
        - mask: {fields: m, pattern: 'x*'}
        - mask: {fields: m, pattern: email, wiht: '#'}
        - mask: {pattern: email}
        """
    )
    by_line = {p.line: p.message for p in probs}
    assert sorted(by_line) == [FIRST_ACTION_LINE + i for i in range(4)]
    assert (
        "invalid regular expression" in by_line[FIRST_ACTION_LINE]
        and "credit-card" in by_line[FIRST_ACTION_LINE]
    )
    assert "matches the empty text" in by_line[FIRST_ACTION_LINE + 1]
    assert "unknown option 'wiht' for mask (did you mean 'with'?)" in by_line[FIRST_ACTION_LINE + 2]
    assert "missing required option 'fields'" in by_line[FIRST_ACTION_LINE + 3]


@pytest.mark.parametrize(
    ("fmt", "precision", "values", "expected"),
    [
        # auto: a strptime format without %f writes whole seconds
        ("'%Y-%m-%d %H:%M:%S'", "auto", ["2017-06-09 20:10:40"], ["2017-06-09T20:10:40Z"]),
        # auto: a format that may carry fractions writes milliseconds on every event, so the
        # strings of one pipe sort in time order (".000Z" < ".5Z" would not hold for "40Z")
        (
            "iso8601",
            "auto",
            ["2017-06-09T20:10:40Z", "2017-06-09T20:10:40.5Z"],
            ["2017-06-09T20:10:40.000Z", "2017-06-09T20:10:40.500Z"],
        ),
        (
            "'%Y-%m-%d %H:%M:%S,%f'",
            "auto",
            ["2015-07-29 19:28:22,000", "2015-07-29 19:28:22,747"],
            ["2015-07-29T19:28:22.000Z", "2015-07-29T19:28:22.747Z"],
        ),
        ("iso8601", "s", ["2017-06-09T20:10:40.987Z"], ["2017-06-09T20:10:40Z"]),
        ("iso8601", "us", ["2017-06-09T20:10:40.5Z"], ["2017-06-09T20:10:40.500000Z"]),
    ],
)
def test_time_precision_is_fixed_per_pipe(fmt, precision, values, expected):
    out, failures = run(
        f"- time: {{field: t, format: {fmt}, precision: {precision}}}", [{"t": v} for v in values]
    )
    assert failures == []
    assert [e["t"] for e in out] == expected
    assert sorted(e["t"] for e in out) == [e["t"] for e in out]
