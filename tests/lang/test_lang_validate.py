"""Validation of pipe documents: every problem, located at file:line:column, with a useful message."""

from __future__ import annotations

import pytest

import pipenb
from pipenb.lang.registry import registry
from pipenb.lang.validate import load_pipe

from support.pipes import position, problems_of

ACTIONS = "add, aggregate, convert, dedupe, drop, extract, filter, grok, keep, lookup, mask, parse, remove, rename, sample, script, set, time, unnest"
FUNCS = "len, lower, upper, contains, startswith, endswith, matches, int, float, str, round, exists, coalesce, now"

MANY_ERRORS = """\
name: Bad Name
descripton: typo
input:
  files: {path: /tmp/x.log, strat-at: end}
actions:
  - filter: level ==
  - extract: {field: _raw, pattern: '(?P<a>[a-z'}
  - frobnicate: {}
  - set: {y: "x.upper()"}
  - filter: 'status > 3 and __import__("os")'
output:
  file: {path: out.ndjson, format: xml}
"""


def test_an_invalid_pipe_reports_every_located_problem_at_once():
    problems = problems_of(MANY_ERRORS, file="bad.yaml")
    got = [(p.line, p.column, p.message) for p in problems]
    assert got == [
        (
            1,
            7,
            "invalid name 'Bad Name': use up to 200 lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit",
        ),
        (
            2,
            1,
            "unknown key 'descripton' (did you mean 'description'?); a pipe has: name, "
            "description, labels, params, input, actions, output, outputs, route, errors, tests",
        ),
        (
            4,
            29,
            "unknown option 'strat-at' for files (did you mean 'start-at'?); allowed: exclude, "
            "fingerprint-bytes, follow, format, glob-interval, max-line-bytes, metadata, multiline, path, "
            "poll-interval, read-bytes, rotate-wait, start-at",
        ),
        (6, 13, "filter.expr: invalid expression: invalid syntax"),
        (
            7,
            37,
            "extract.pattern: invalid regular expression: unterminated character set at position 6",
        ),
        (8, 5, f"unknown action 'frobnicate'; actions: {ACTIONS}"),
        (
            9,
            15,
            f"set.fields.y: methods and computed functions cannot be called; call one of: {FUNCS}",
        ),
        (10, 29, f"filter.expr: unknown function '__import__'; allowed: {FUNCS}"),
        (12, 36, "file.format: Input should be 'ndjson', 'csv' or 'raw'"),
    ]
    # the columns point at the offending text itself
    assert position(MANY_ERRORS, "strat-at") == (4, 29)
    assert position(MANY_ERRORS, "__import__") == (10, 29)
    assert position(MANY_ERRORS, "x.upper()") == (9, 15)
    # str(problem) is the file:line:column: message form the CLI prints
    assert str(problems[0]).startswith("bad.yaml:1:7: invalid name 'Bad Name'")
    assert all(p.file == "bad.yaml" for p in problems)


def test_the_exception_message_lists_every_problem_one_per_line():
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        pipenb.Pipe.from_yaml(MANY_ERRORS, file="bad.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 9
    assert lines[-1].startswith("bad.yaml:12:36: file.format:")


def test_problem_to_dict_names_the_document_path():
    problems = problems_of(MANY_ERRORS)
    d = problems[2].to_dict()
    assert d == {
        "file": "<pipe>",
        "line": 4,
        "column": 29,
        "path": "input.files.strat-at",
        "message": problems[2].message,
    }


def test_line_offset_shifts_every_line_for_pipes_inside_a_bigger_file():
    problems = problems_of(MANY_ERRORS, file="nb.ipynb", line_offset=10)
    assert [p.line for p in problems] == [11, 12, 14, 16, 17, 18, 19, 20, 22]
    assert problems[0].column == 7


def test_missing_required_keys():
    got = [(p.line, p.column, p.message) for p in problems_of("description: x\n")]
    assert got == [
        (1, 1, "missing required key 'input'"),
        (1, 1, "missing required key 'name'"),
        (1, 1, "missing required key 'output'"),
    ]


def test_a_document_that_is_not_a_mapping():
    (p,) = problems_of("- a\n- b\n")
    assert p.message == "a pipe is a YAML mapping with name, input, actions and output"


def test_yaml_syntax_errors_are_located():
    (p,) = problems_of("name: t\ninput: {echo: {lines: [a]}\noutput: {discard: {}}\n")
    assert (p.line, p.column) == (3, 1)
    assert p.message.startswith("YAML syntax: expected ',' or '}'")


def test_duplicate_keys_are_errors():
    (p,) = problems_of("name: t\nname: u\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n")
    assert (p.line, p.column, p.message) == (2, 1, "duplicate key 'name'")


def test_wrong_option_types_bad_durations_and_sizes():
    doc = (
        "name: t\n"
        "input:\n"
        "  files: {path: /x, follow: maybe, poll-interval: soon, read-bytes: 10XB}\n"
        "output:\n"
        "  file: {path: o, batch: {size: many}}\n"
        "errors:\n"
        "  print: {format: xml}\n"
    )
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (3, 29, "files.follow: Input should be a valid boolean, unable to interpret input"),
        (3, 51, "files.poll-interval: expected a duration such as 250ms, 5s or 1m, got 'soon'"),
        (3, 69, "files.read-bytes: expected a size such as 512, 10KB or 1MiB, got '10XB'"),
        (
            5,
            33,
            "file.batch.size: Input should be a valid integer, unable to parse string as an integer",
        ),
        (7, 19, "print.format: Input should be 'ndjson' or 'pretty'"),
    ]


def test_action_problems_unknown_name_missing_option_bad_shape():
    doc = (
        "name: t\n"
        "input: {echo: {lines: [a]}}\n"
        "actions:\n"
        "  - filtr: a == 1\n"
        "  - extract: {field: x}\n"
        '  - rename: {a: ""}\n'
        "  - {filter: a, drop: b}\n"
        "  - set: {a: 1 +}\n"
        "output: {discard: {}}\n"
    )
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (4, 5, f"unknown action 'filtr' (did you mean 'filter'?); actions: {ACTIONS}"),
        (5, 14, "extract: missing required option 'pattern'"),
        (6, 13, "rename.fields: rename maps each old name to a new, non-empty name"),
        (
            7,
            5,
            "an action must be a mapping with exactly one action name, "
            f"e.g. 'filter: level == \"error\"'; actions: {ACTIONS}",
        ),
        (8, 14, "set.fields.a: invalid expression: invalid syntax"),
    ]


def test_actions_must_be_a_list():
    doc = "name: t\ninput: {echo: {lines: [a]}}\nactions: {filter: x}\noutput: {discard: {}}\n"
    (p,) = problems_of(doc)
    assert (p.line, p.column) == (3, 10)
    assert p.message.startswith("actions must be a list")


def test_input_and_output_shapes():
    doc = "name: t\ninput: {echo: {lines: [a]}, files: {path: x}}\noutput: {nowhere: {}}\n"
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (
            2,
            8,
            "the input must be a mapping with exactly one input name, "
            f"e.g. 'files: {{path: /var/log/*.log}}'; inputs: {', '.join(registry.names('input'))}",
        ),
        (3, 10, f"unknown output 'nowhere'; outputs: {', '.join(registry.names('output'))}"),
    ]


def test_labels_and_description_types():
    doc = (
        "name: t\nlabels: [1, 2]\ndescription: [x]\n"
        "input: {echo: {lines: [a]}}\noutput: {discard: {}}\n"
    )
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (2, 9, "labels must be a list of strings, e.g. labels: [web, eu]"),
        (3, 14, "description must be a string"),
    ]


def test_parameter_declarations_are_checked():
    doc = (
        "name: t\n"
        "params:\n"
        "  a: {default: x, enum: [y, z]}\n"
        "  b: {type: complex, default: 1}\n"
        "  agent: {default: 1}\n"
        "  c: {deflt: 1}\n"
        "  d: {enum: notalist, default: 1}\n"
        "input: {echo: {lines: [a]}}\n"
        "output: {discard: {}}\n"
    )
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (3, 16, "default 'x' is not one of ['y', 'z']"),
        (4, 13, "unknown type 'complex'; use one of str, int, float, bool"),
        (5, 3, "'agent' is a built-in name; choose another"),
        (
            6,
            7,
            "unknown key 'deflt' in parameter 'c' (did you mean 'default'?); "
            "allowed: default, enum, type, description, secret",
        ),
        (7, 13, "enum must be a list of allowed values"),
    ]


def test_tests_section_is_checked():
    doc = (
        "name: t\n"
        "input: {echo: {lines: [a]}}\n"
        "output: {discard: {}}\n"
        "tests:\n"
        "  - name: x\n"
        "    input: [a]\n"
        "  - name: y\n"
        "    input: a\n"
        "    expect: [{}]\n"
        "  - name: z\n"
        "    inptu: [a]\n"
        "    input: [1]\n"
        "    expect-count: -1\n"
        "    expect: [1]\n"
    )
    got = [(p.line, p.column, p.message) for p in problems_of(doc)]
    assert got == [
        (5, 5, "test 'x' needs expect, expect-count or expect-errors"),
        (8, 12, "input must be a list of lines (strings) or events"),
        (
            11,
            5,
            "unknown key 'inptu' in test (did you mean 'input'?); "
            "allowed: name, input, expect, expect-count, expect-errors, params",
        ),
        (12, 13, "each input item is a line (string) or an event"),
        (13, 19, "expect-count must be a whole number"),
        (14, 13, "expect must be a list of events (mappings)"),
    ]


def test_echo_needs_events_or_lines():
    (p,) = problems_of("name: t\ninput: {echo: {}}\noutput: {discard: {}}\n")
    assert p.message == "echo: give either events: [...] (objects) or lines: [...] (strings)"


def test_the_errors_output_is_validated_like_the_output():
    doc = "name: t\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\nerrors: {file: {pth: x}}\n"
    messages = [p.message for p in problems_of(doc)]
    assert any(
        m.startswith("unknown option 'pth' for file (did you mean 'path'?)") for m in messages
    )
    assert "file: missing required option 'path'" in messages


def test_a_valid_pipe_with_units_and_shorthands():
    doc = """\
name: web-errors_1
description: d
labels: web
input:
  files: {path: /var/log/x.log, poll-interval: 250ms, read-bytes: 10KB, rotate-wait: 1m}
actions:
  - filter: level == "error"
  - drop: {expr: 'status == 200', when: 'exists(status)'}
  - remove: password
  - keep: [a, b]
  - add: {env: prod, overwrite: false}
output:
  file: {path: out.ndjson, batch: {size: 10, timeout: 1.5}}
errors:
  discard: {}
"""
    pipe = pipenb.Pipe.from_yaml(doc)
    spec = pipe.spec
    assert pipe.name == "web-errors_1"
    assert spec.labels == ["web"]
    o = spec.input.options
    assert (o.poll_interval, o.read_bytes, o.rotate_wait) == (0.25, 10_000, 60.0)
    assert [a.label for a in spec.actions] == ["0:filter", "1:drop", "2:remove", "3:keep", "4:add"]
    assert spec.actions[1].options.when == "exists(status)"
    assert spec.actions[2].options.fields == ["password"]
    assert spec.actions[4].options.fields == {"env": "prod"}
    assert spec.actions[4].options.overwrite is False
    assert spec.output.options.batch.size == 10
    assert spec.output.options.batch.timeout == 1.5
    assert spec.errors is not None and spec.errors.name == "discard"
    assert spec.capabilities == set()
    assert repr(pipe) == "Pipe('web-errors_1', input=files, actions=5, output=file)"
    assert pipe.yaml == doc


def test_yaml_1_1_booleans_are_strings_but_true_false_are_booleans():
    doc = (
        "name: t\ninput: {echo: {events: [{a: no, b: on, c: yes, d: true, e: False}]}}\n"
        "output: {discard: {}}\n"
    )
    ev = pipenb.Pipe.from_yaml(doc).spec.input.options.events[0]
    assert ev == {"a": "no", "b": "on", "c": "yes", "d": True, "e": False}


def test_filter_true_in_yaml_is_the_expression_true():
    doc = (
        "name: t\ninput: {echo: {lines: [a]}}\nactions:\n  - filter: true\noutput: {discard: {}}\n"
    )
    assert pipenb.Pipe.from_yaml(doc).spec.actions[0].options.expr == "true"


def test_exec_pipes_need_the_exec_capability():
    doc = "name: t\ninput: {exec: {command: 'echo hi'}}\noutput: {discard: {}}\n"
    assert pipenb.Pipe.from_yaml(doc).spec.capabilities == {"exec"}


def test_from_file_uses_the_path_in_problems(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\nbogus: 1\n")
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        pipenb.Pipe.from_file(path)
    (p,) = info.value.problems
    assert str(p).startswith(f"{path}:4:1: unknown key 'bogus'")


def test_required_parameters_only_required_when_asked():
    doc = "name: t\nparams:\n  n: {type: int}\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}\n"
    spec = load_pipe(doc)
    assert spec.values["n"] == 0  # a typed placeholder so `check` can validate the pipe
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        load_pipe(doc, require_params=True)
    (p,) = info.value.problems
    assert (p.line, p.column) == (3, 3)
    assert p.message == (
        "parameter 'n' has no default and no value was given; pass it (e.g. --param n=...)"
    )
    assert load_pipe(doc, params={"n": "7"}, require_params=True).values["n"] == 7


def test_check_accepts_a_pipe_whose_required_int_parameter_must_be_positive():
    doc = (
        "name: t\nparams:\n  n: {type: int}\n"
        'input: {echo: {lines: [a], count: "{{n}}"}}\noutput: {discard: {}}\n'
    )
    assert load_pipe(doc).name == "t"


@pytest.mark.parametrize("size", [0, -1])
def test_batch_size_must_be_positive(size):
    doc = f"name: t\ninput: {{echo: {{lines: [a]}}}}\noutput: {{discard: {{batch: {{size: {size}}}}}}}\n"
    (p,) = problems_of(doc)
    assert p.message.startswith("discard.batch.size: ")
