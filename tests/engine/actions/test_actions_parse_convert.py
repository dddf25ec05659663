"""The ``parse`` and ``convert`` actions, run through a validated pipe as users write them."""

from __future__ import annotations

import pytest

from pipenb.errors import EventError

from support.pipes import FIRST_ACTION_LINE, run_pipe_actions
from support.pipes import action_problems as problems
from support.pipes import run_action_doc as run

# ------------------------------------------------------------------------------------ parse


def test_parse_json_merges_object_keys_into_the_event():
    out, failures = run(
        "- parse: {format: json}", [{"_raw": '{"a": 1, "b": {"c": [2]}, "s": "x"}'}]
    )
    assert failures == []
    assert out == [
        {"_raw": '{"a": 1, "b": {"c": [2]}, "s": "x"}', "a": 1, "b": {"c": [2]}, "s": "x"}
    ]


def test_parse_shorthand_names_the_format():
    out, _ = run("- parse: json", [{"_raw": '{"a": 1}'}])
    assert out == [{"_raw": '{"a": 1}', "a": 1}]


def test_parse_json_target_takes_any_value_and_remove_deletes_the_source():
    out, failures = run(
        "- parse: {field: payload, format: json, target: body.data, remove: true}",
        [{"payload": "[1, 2]"}, {"payload": '"text"'}, {"payload": '{"k": null}'}],
    )
    assert failures == []
    assert out == [
        {"body": {"data": [1, 2]}},
        {"body": {"data": "text"}},
        {"body": {"data": {"k": None}}},
    ]


def test_parse_json_keeps_source_unless_remove():
    out, _ = run("- parse: {field: p, format: json, target: q}", [{"p": "3"}])
    assert out == [{"p": "3", "q": 3}]


def test_parse_json_uses_an_already_decoded_object_without_aliasing_it():
    out, failures = run("- parse: {field: p, format: json, target: q}", [{"p": {"a": {"b": 1}}}])
    assert failures == []
    assert out[0]["q"] == {"a": {"b": 1}}
    assert out[0]["q"]["a"] is not out[0]["p"]["a"]


def test_parse_json_already_decoded_object_merges():
    out, _ = run("- parse: {field: p, format: json, remove: true}", [{"p": {"a": 1}}])
    assert out == [{"a": 1}]


def test_parse_json_array_cannot_be_merged_at_top_level():
    out, failures = run("- parse: json", [{"_raw": "[1, 2]"}])
    assert out == []
    assert len(failures) == 1
    assert failures[0].stage == 0
    assert isinstance(failures[0].error, EventError)
    msg = str(failures[0].error)
    assert "an array" in msg and "not an object" in msg and "target" in msg
    assert failures[0].event == {"_raw": "[1, 2]"}


def test_parse_invalid_json_goes_to_failures_with_the_reason():
    out, failures = run("- parse: json", [{"_raw": "{nope"}, {"_raw": '{"ok": true}'}])
    assert out == [{"_raw": '{"ok": true}', "ok": True}]
    assert len(failures) == 1
    msg = str(failures[0].error)
    assert "field '_raw' is not valid json" in msg
    assert "on-error" in msg


def test_parse_json_rejects_a_number_field():
    _, failures = run("- parse: {field: n, format: json, target: x}", [{"n": 5}])
    assert "expected JSON text, got a number" in str(failures[0].error)


def test_parse_leaves_missing_and_null_fields_alone():
    events = [{"other": 1}, {"_raw": None}]
    out, failures = run("- parse: json", events)
    assert failures == []
    assert out == events


@pytest.mark.parametrize(
    ("on_error", "expected"), [("keep", [{"_raw": "bad"}, {"a": 1}]), ("drop", [{"a": 1}])]
)
def test_parse_on_error_keep_or_drop(on_error, expected):
    out, failures = run(
        f"- parse: {{format: json, remove: true, on-error: {on_error}}}",
        [{"_raw": "bad"}, {"_raw": '{"a": 1}'}],
    )
    assert failures == []
    assert out == expected


def test_parse_dotted_field():
    out, _ = run(
        "- parse: {field: http.body, format: json, remove: true}",
        [{"http": {"body": '{"status": 200}', "ip": "x"}}],
    )
    assert out == [{"http": {"ip": "x"}, "status": 200}]


def test_parse_when_limits_the_action():
    out, failures = run(
        """
        - parse: {format: json, when: 'kind == "json"'}
        """,
        [{"kind": "json", "_raw": '{"a": 1}'}, {"kind": "text", "_raw": "not json"}],
    )
    assert failures == []
    assert out == [
        {"kind": "json", "_raw": '{"a": 1}', "a": 1},
        {"kind": "text", "_raw": "not json"},
    ]


def test_parse_csv_names_columns_and_numbers_the_extra_ones():
    out, failures = run(
        "- parse: {format: csv, columns: [a, b], remove: true}",
        [{"_raw": "1,2,3,4"}, {"_raw": "1"}, {"_raw": 'x,"y, ""z"""'}, {"_raw": ""}],
    )
    assert failures == []
    assert out == [
        {"a": "1", "b": "2", "column_3": "3", "column_4": "4"},
        {"a": "1"},
        {"a": "x", "b": 'y, "z"'},
        {},
    ]


def test_parse_csv_without_columns_and_with_a_delimiter():
    out, _ = run("- parse: {format: csv, delimiter: ';', target: row}", [{"_raw": "a;b c;"}])
    assert out[0]["row"] == {"column_1": "a", "column_2": "b c", "column_3": ""}


def test_parse_csv_bad_lines_fail():
    _, failures = run(
        "- parse: {format: csv, columns: [a]}", [{"_raw": 'x,"unterminated'}, {"_raw": "a\nb"}]
    )
    assert len(failures) == 2
    assert "is not valid csv" in str(failures[0].error)
    assert "line break" in str(failures[1].error)


def test_parse_csv_non_string_fails():
    _, failures = run("- parse: {field: n, format: csv}", [{"n": [1, 2]}])
    assert "expected text, got an array" in str(failures[0].error)


def test_parse_kv_unquotes_values_and_ignores_other_text():
    raw = """GET done a=1 b="two words" c=x d='single q' e="say \\"hi\\"" f= g=h=i"""
    out, failures = run("- parse: {format: kv, target: kv}", [{"_raw": raw}])
    assert failures == []
    assert out[0]["kv"] == {
        "a": "1",
        "b": "two words",
        "c": "x",
        "d": "single q",
        "e": 'say "hi"',
        "f": "",
        "g": "h=i",
    }


def test_parse_kv_custom_delimiter_and_separator():
    out, _ = run(
        "- parse: {format: kv, delimiter: ',', separator: ':'}",
        [{"_raw": 'user: bob , msg:two words,tags:"a,b"'}],
    )
    assert out == [
        {
            "_raw": 'user: bob , msg:two words,tags:"a,b"',
            "user": "bob",
            "msg": "two words",
            "tags": "a,b",
        }
    ]


def test_parse_kv_text_without_pairs_is_unchanged():
    out, failures = run("- parse: kv", [{"_raw": "just words"}])
    assert failures == []
    assert out == [{"_raw": "just words"}]


def test_parse_kv_unterminated_quote_fails():
    _, failures = run("- parse: kv", [{"_raw": 'a=1 b="open'}])
    assert "unterminated quote in the value of 'b'" in str(failures[0].error)


def test_parse_logfmt():
    raw = 'level=info msg="disk \\"sda\\" full\\n" debug took=12ms empty= path=/a=b'
    out, failures = run("- parse: {format: logfmt, remove: true}", [{"_raw": raw}])
    assert failures == []
    assert out == [
        {
            "level": "info",
            "msg": 'disk "sda" full\n',
            "debug": True,
            "took": "12ms",
            "empty": "",
            "path": "/a=b",
        }
    ]


@pytest.mark.parametrize("raw", ['a="unterminated', 'a="b"c', 'x "quoted"'])
def test_parse_logfmt_malformed_fails(raw):
    out, failures = run("- parse: logfmt", [{"_raw": raw}])
    assert out == []
    assert "is not valid logfmt" in str(failures[0].error)


def test_parse_validation_reports_lines():
    probs = problems(
        """
        - parse: {format: yaml}
        - parse: {format: json, columns: [a]}
        - parse: {format: csv, delimiter: '::'}
        - parse: {format: logfmt, separator: ':'}
        - parse: {field: x}
        """
    )
    by_line = {p.line: p.message for p in probs}
    assert sorted(by_line) == [FIRST_ACTION_LINE + i for i in range(5)]
    assert "json" in by_line[FIRST_ACTION_LINE] and "logfmt" in by_line[FIRST_ACTION_LINE]
    assert "columns applies to format: csv" in by_line[FIRST_ACTION_LINE + 1]
    assert "one character" in by_line[FIRST_ACTION_LINE + 2]
    assert "separator applies to format: kv" in by_line[FIRST_ACTION_LINE + 3]
    assert "missing required option 'format'" in by_line[FIRST_ACTION_LINE + 4]


# ---------------------------------------------------------------------------------- convert


def test_convert_the_spec_example():
    out, failures = run(
        "- convert: {status: int, bytes: size, took: duration}",
        [{"status": "200", "bytes": "10KB", "took": "250ms"}],
    )
    assert failures == []
    assert out == [{"status": 200, "bytes": 10000, "took": 0.25}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("42", 42), ("42.0", 42), (42.7, 42), (" 7 ", 7), ("-3", -3), ("1e3", 1000), (5, 5)],
)
def test_convert_int(value, expected):
    out, _ = run("- convert: {n: int}", [{"n": value}])
    assert out[0]["n"] == expected
    assert type(out[0]["n"]) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("Yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("on", True),
        ("Off", False),
        (1, True),
        (0, False),
        (True, True),
    ],
)
def test_convert_bool(value, expected):
    out, failures = run("- convert: {b: bool}", [{"b": value}])
    assert failures == []
    assert out[0]["b"] is expected


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("float", "1.5", 1.5),
        ("float", 3, 3.0),
        ("str", 5, "5"),
        ("str", True, "true"),
        ("str", {"a": [1]}, '{"a":[1]}'),
        ("size", "10KiB", 10240),
        ("size", "1.5MB", 1500000),
        ("size", 512, 512),
        ("duration", "1m", 60.0),
        ("duration", "2", 2.0),
    ],
)
def test_convert_other_types(type_name, value, expected):
    out, failures = run(f"- convert: {{v: {type_name}}}", [{"v": value}])
    assert failures == []
    assert out[0]["v"] == expected
    assert type(out[0]["v"]) is type(expected)


def test_convert_leaves_missing_and_null_alone():
    out, failures = run("- convert: {a: int, b: bool}", [{"b": None}])
    assert failures == []
    assert out == [{"b": None}]


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("int", "abc"),
        ("int", "nan"),
        ("float", "x1"),
        ("bool", "maybe"),
        ("bool", 2),
        ("size", "10XB"),
        ("duration", "soon"),
        ("int", [1]),
    ],
)
def test_convert_bad_value_goes_to_failures(type_name, value):
    out, failures = run(f"- convert: {{v: {type_name}}}", [{"v": value}])
    assert out == []
    assert len(failures) == 1
    msg = str(failures[0].error)
    assert isinstance(failures[0].error, EventError)
    assert f"field 'v' value {value!r} is not a valid {type_name}" in msg
    assert "on-error" in msg


def test_convert_on_error_null_and_keep():
    out, failures = run(
        """
        - convert: {a: int, on-error: null}
        - convert: {b: int, on-error: keep}
        """,
        [{"a": "x", "b": "y"}, {"a": "1", "b": "2"}],
    )
    assert failures == []
    assert out == [{"a": None, "b": "y"}, {"a": 1, "b": 2}]


def test_convert_long_form_can_name_reserved_fields():
    out, _ = run(
        "- convert: {fields: {when: int, on-error: bool}}", [{"when": "3", "on-error": "no"}]
    )
    assert out == [{"when": 3, "on-error": False}]


def test_convert_dotted_fields_and_when():
    out, _ = run(
        """
        - convert: {http.status: int, when: 'http.status != "-"'}
        """,
        [{"http": {"status": "404"}}, {"http": {"status": "-"}}],
    )
    assert out == [{"http": {"status": 404}}, {"http": {"status": "-"}}]


def test_convert_validation_names_the_allowed_types_on_the_right_line():
    probs = problems(
        """
        - convert: {a: int}
        - convert:
            status: integer
            ok: bool
        - convert: {b: int, on-error: drop}
        """
    )
    assert len(probs) == 2
    assert probs[0].line == FIRST_ACTION_LINE + 2
    assert "unknown type 'integer' (did you mean 'int'?)" in probs[0].message
    assert "int, float, bool, str, size, duration" in probs[0].message
    assert probs[1].line == FIRST_ACTION_LINE + 4
    assert "on-error" in probs[1].message


def test_parse_syslog_rfc5424_and_rfc3164():
    out, failures = run_pipe_actions(
        """
        name: t
        input: {echo: {events: [{}]}}
        actions:
          - parse: {field: line, format: syslog, remove: true}
        output: {discard: {}}
        """,
        [
            {"line": "<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed"},
            {"line": "<13>Feb  5 17:32:18 web-1 sshd[4242]: Accepted password for bob"},
            {"line": "not syslog at all"},
        ],
    )
    assert out[0]["severity"] == "crit" and out[0]["host"] == "mymachine"
    assert out[0]["app"] == "su" and out[0]["message"] == "'su root' failed"
    assert out[1]["app"] == "sshd" and out[1]["pid"] == 4242 and out[1]["host"] == "web-1"
    assert len(failures) == 1 and "syslog" in str(failures[0].error)
