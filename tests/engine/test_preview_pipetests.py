"""Preview on samples and on the pipe's own input, and the pipe's own ``tests:`` section."""

from __future__ import annotations

import asyncio
import textwrap

import pandas as pd
import pytest

import pipenb

PIPE = """\
name: pv
input: {{files: {{path: "{log}", format: json, follow: true, start-at: end}}}}
actions:
  - set: {{v: int(n)}}
  - filter: v > 1
  - add: {{big: true}}
output: {{file: {{path: "{out}"}}}}
errors: {{file: {{path: "{errors}"}}}}
"""


@pytest.fixture
def paths(tmp_path):
    return {
        "log": tmp_path / "in.ndjson",
        "out": tmp_path / "out.ndjson",
        "errors": tmp_path / "errors.ndjson",
    }


@pytest.fixture
def pipe(paths):
    return pipenb.Pipe.from_yaml(PIPE.format(**paths))


def assert_nothing_written(paths):
    assert not paths["out"].exists()
    assert not paths["errors"].exists()


# ------------------------------------------------------------------------------ samples


def test_preview_a_list_of_events(pipe, paths):
    r = pipe.preview([{"n": "1"}, {"n": "x"}, {"n": "5"}, {"n": 7}])
    assert r.pipe == "pv"
    assert r.events == [{"n": "5", "v": 5, "big": True}, {"n": 7, "v": 7, "big": True}]
    assert [s.name for s in r.stages] == ["input:files", "0:set", "1:filter", "2:add"]
    assert r.counts == [
        {"stage": "input:files", "in": 4, "out": 4, "dropped": 0, "errors": 0},
        {"stage": "0:set", "in": 4, "out": 3, "dropped": 0, "errors": 1},
        {"stage": "1:filter", "in": 3, "out": 2, "dropped": 1, "errors": 0},
        {"stage": "2:add", "in": 2, "out": 2, "dropped": 0, "errors": 0},
    ]
    assert r.errors == [
        {"n": "x", "_error": {"stage": "0:set", "message": "int() cannot convert 'x'"}}
    ]
    # each stage keeps its events as they were when that stage finished
    assert r.stages[0].events == [{"n": "1"}, {"n": "x"}, {"n": "5"}, {"n": 7}]
    assert r.stages[1].events == [{"n": "1", "v": 1}, {"n": "5", "v": 5}, {"n": 7, "v": 7}]
    assert_nothing_written(paths)


def test_preview_dataframes(pipe):
    r = pipe.preview([{"n": "1"}, {"n": "x"}, {"n": "5"}])
    assert isinstance(r.df, pd.DataFrame)
    assert r.df.to_dict("records") == [{"n": "5", "v": 5, "big": True}]
    assert list(r.stages[1].df.columns) == ["n", "v"]
    assert r.stages[1].df["v"].tolist() == [1, 5]
    assert r.stages[0].df["n"].tolist() == ["1", "x", "5"]
    assert r.errors_df.to_dict("records") == [
        {"stage": "0:set", "error": "int() cannot convert 'x'", "event": '{"n":"x"}'}
    ]
    assert r.counts_df["dropped"].tolist() == [0, 0, 1, 0]
    assert "Preview of pv: 1 event(s) out, 1 error(s)" in repr(r)
    assert "<h4>Errors</h4>" in r._repr_html_()


def test_preview_with_nothing_out_has_an_empty_dataframe(pipe):
    r = pipe.preview([{"n": "0"}])
    assert r.events == []
    assert r.df.empty
    assert r.errors == []


def test_preview_a_list_of_strings_uses_the_input_format(pipe, tmp_path):
    r = pipe.preview(['{"n": "3"}', '{"n": "4"}'])
    assert [e["v"] for e in r.events] == [3, 4]
    lines_pipe = pipenb.Pipe.from_yaml(
        "name: l\ninput: {echo: {lines: [x]}}\n"
        "actions: [{extract: {pattern: '(?P<n>\\d+)'}}]\noutput: {discard: {}}\n"
    )
    r = lines_pipe.preview(["a1", "b22", "c"])
    assert r.events == [{"_raw": "a1", "n": "1"}, {"_raw": "b22", "n": "22"}, {"_raw": "c"}]


def test_preview_a_mixed_list(pipe):
    r = pipe.preview(['{"n": "3"}', {"n": "4"}])
    assert [e["v"] for e in r.events] == [3, 4]


def test_preview_lists_undecodable_sample_lines_as_errors(pipe):
    r = pipe.preview(['{"n": "3"}', "not json"])
    assert [e["v"] for e in r.events] == [3]
    assert [e["_raw"] for e in r.errors] == ["not json"]


def test_preview_a_pandas_dataframe(pipe):
    df = pd.DataFrame(
        {
            "n": ["2", None, "7"],
            "t": pd.to_datetime(["2020-01-01", "2020-01-02", None]),
            "f": [1.5, float("nan"), 2.0],
        }
    )
    r = pipe.preview(df)
    assert r.stages[0].events == [
        {"n": "2", "t": "2020-01-01T00:00:00", "f": 1.5},
        {"n": None, "t": "2020-01-02T00:00:00", "f": None},  # NaN and NaT are missing
        {"n": "7", "t": None, "f": 2.0},
    ]
    assert [e["v"] for e in r.events] == [2, 7]


def test_preview_a_file_of_lines_and_a_file_of_ndjson(tmp_path, paths):
    lines_pipe = pipenb.Pipe.from_yaml(
        f'name: l\ninput: {{echo: {{lines: [x]}}}}\noutput: {{file: {{path: "{paths["out"]}"}}}}\n'
    )
    sample = tmp_path / "sample.log"
    sample.write_text("a\nb\r\nc\n")
    assert lines_pipe.preview(str(sample)).events == [{"_raw": "a"}, {"_raw": "b"}, {"_raw": "c"}]
    # .ndjson / .jsonl samples are events whatever the input's format
    nd = tmp_path / "sample.jsonl"
    nd.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    assert lines_pipe.preview(nd, limit=2).events == [{"a": 1}, {"a": 2}]
    assert_nothing_written(paths)


def test_preview_the_pipes_own_input_from_the_beginning_and_once(pipe, paths):
    # the pipe tails from the end; a preview reads the existing lines instead, and finishes
    paths["log"].write_text("".join(f'{{"n": "{i}"}}\n' for i in range(10)))
    r = pipe.preview(limit=5, timeout=10)
    assert [e["n"] for e in r.stages[0].events] == ["0", "1", "2", "3", "4"]
    assert [e["v"] for e in r.events] == [2, 3, 4]
    assert_nothing_written(paths)


def test_preview_the_own_input_of_a_repeating_echo_reads_it_once():
    p = pipenb.Pipe.from_yaml(
        "name: e\ninput: {echo: {lines: [a, b], interval: 1h}}\noutput: {discard: {}}\n"
    )
    assert p.preview(timeout=10).events == [{"_raw": "a"}, {"_raw": "b"}]


def test_preview_the_own_input_of_exec(tmp_path):
    p = pipenb.Pipe.from_yaml(
        "name: x\ninput: {exec: {command: 'seq 3', interval: 1h}}\n"
        "actions: [{set: {n: int(_raw)}}]\noutput: {discard: {}}\n"
    )
    assert [e["n"] for e in p.preview(timeout=10).events] == [1, 2, 3]


def test_preview_from_inside_a_running_event_loop(pipe):
    async def in_a_kernel():
        return pipe.preview([{"n": "9"}])

    r = asyncio.run(in_a_kernel())
    assert r.events == [{"n": "9", "v": 9, "big": True}]


def test_preview_limit(pipe):
    r = pipe.preview([{"n": str(i)} for i in range(100)], limit=10)
    assert r.counts[0]["in"] == 10


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (42, "a sample is a list of events or lines, a pandas DataFrame, or a file path"),
        ([{"n": 1}, 3], "sample item 1 is a int; use dicts or strings"),
        ("/no/such/sample.log", "sample file '/no/such/sample.log' does not exist"),
    ],
)
def test_preview_bad_samples(pipe, sample, message):
    with pytest.raises(pipenb.UsageError) as info:
        pipe.preview(sample)
    assert str(info.value) == message


# ------------------------------------------------------------------------------ pipe tests


TESTED = """\
name: tested
params:
  level: {default: error, enum: [warn, error]}
input: {echo: {lines: [x]}}
actions:
  - extract: {pattern: '^\\[(?P<level>\\w+)\\] (?P<message>.*)$', on-miss: drop}
  - filter: level == "{{level}}"
  - set: {len: len(message), code: int(message)}
output: {discard: {}}
tests:
  - name: keeps an error line
    input: ['[error] 42']
    expect: [{level: error, message: "42", code: 42}]
  - name: drops other levels and noise
    input: ['[warn] 1', 'noise', {_raw: '[error] 7'}]
    expect-count: 1
  - name: a bad code is an error
    input: ['[error] abc', '[error] 1']
    expect: [{code: 1}]
    expect-errors: 1
  - name: warn when asked
    params: {level: warn}
    input: ['[warn] 5', '[error] 6']
    expect: [{level: warn, code: 5, len: 1}]
"""


def test_passing_pipe_tests():
    report = pipenb.Pipe.from_yaml(TESTED).test()
    assert isinstance(report, pipenb.PipeTestReport)
    assert report.pipe == "tested"
    assert report.passed
    assert [r.name for r in report.results] == [
        "keeps an error line",
        "drops other levels and noise",
        "a bad code is an error",
        "warn when asked",
    ]
    assert all(isinstance(r, pipenb.PipeTestResult) and r.passed for r in report.results)
    assert [r.line for r in report.results] == [11, 14, 17, 21]
    assert report.results[0].output == [
        {"level": "error", "message": "42", "len": 2, "code": 42, "_raw": "[error] 42"}
    ]
    assert report.results[2].errors == [{"stage": "2:set", "message": "int() cannot convert 'abc'"}]
    assert repr(report).splitlines()[0] == "tested: 4/4 passed"


FAILING = """\
name: failing
input: {echo: {lines: [x]}}
actions:
  - set: {n: int(_raw)}
output: {discard: {}}
tests:
  - name: wrong value
    input: ['1', '2']
    expect: [{n: 1}, {n: 3}]
  - name: wrong count
    input: ['1']
    expect: [{n: 1}, {n: 2}]
  - name: count only
    input: ['1', '2']
    expect-count: 3
  - name: errors not expected
    input: ['x']
    expect-count: 1
  - name: too few errors
    input: ['1']
    expect-errors: 1
  - name: subset and types
    input: ['1']
    expect: [{n: 1.0, _raw: '1'}]
  - name: bool is not int
    input: ['1']
    expect: [{n: true}]
"""


def test_failing_pipe_tests_say_why():
    report = pipenb.Pipe.from_yaml(FAILING).test()
    assert not report.passed
    by_name = {r.name: r for r in report.results}
    assert by_name["wrong value"].message == "event 1: expected {'n': 3}, differs in {'n': 2}"
    assert by_name["wrong count"].message == "expected 2 event(s), got 1"
    assert by_name["count only"].message == "expected 3 event(s), got 2"
    assert by_name["errors not expected"].message == (
        "expected 1 event(s), got 0\nerrors: 0:set: int() cannot convert 'x'"
    )
    assert by_name["too few errors"].message == "expected 1 error(s), got 0"
    assert by_name["subset and types"].passed  # a float equal to the int matches
    assert not by_name["bool is not int"].passed
    assert [r.passed for r in report.results] == [False, False, False, False, False, True, False]
    text = repr(report)
    assert text.splitlines()[0] == "failing: 1/7 passed"
    assert "  FAIL wrong value" in text
    assert "      expected 3 event(s), got 2" in text
    assert by_name["wrong value"].as_dict()["passed"] is False
    assert "<table>" in report._repr_html_()


def test_test_params_override_the_pipe_params_for_that_test_only():
    doc = textwrap.dedent(
        """\
        name: p
        params:
          min: {default: 10}
        input: {echo: {lines: [x]}}
        actions:
          - set: {n: int(_raw)}
          - filter: n >= {{min}}
        output: {discard: {}}
        tests:
          - name: default min
            input: ['5', '15']
            expect-count: 1
          - name: lower min
            params: {min: 1}
            input: ['5', '15']
            expect-count: 2
          - name: default again
            input: ['5', '15']
            expect: [{n: 15}]
        """
    )
    report = pipenb.Pipe.from_yaml(doc).test()
    assert [r.passed for r in report.results] == [True, True, True], repr(report)
    # the pipe's own params (given when it was loaded) are the base the tests override
    report = pipenb.Pipe.from_yaml(doc, {"min": "20"}).test()
    assert [r.passed for r in report.results] == [False, True, False]


def test_a_pipe_without_tests_has_an_empty_passing_report():
    report = pipenb.Pipe.from_yaml(
        "name: n\ninput: {echo: {lines: [x]}}\noutput: {discard: {}}\n"
    ).test()
    assert report.results == []
    assert report.passed
