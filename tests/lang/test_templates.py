"""``{{param}}`` templates (rendered once per deployment) and ``${field}`` (per event)."""

from __future__ import annotations

import socket

import pipenb
from pipenb.lang.expressions import Namespace
from pipenb.lang.templates import field_template_source, render

from support.pipes import position, problems_of, run_actions

PIPE = """\
name: tpl
params:
  n: {default: 3}
  level: {default: error, enum: [warn, error]}
  path: {default: /tmp/x}
  verbose: {default: false}
input:
  echo: {lines: ["x"], count: "{{n}}"}
actions:
  - filter: '"{{level}}" in ["warn", "error"]'
  - add:
      lvl: "{{level}}"
      host: "{{agent.name}}"
      aid: "{{agent.id}}"
      pipe: "{{pipe.name}}"
      dep: "{{deployment.id}}"
      p: "{{path}}/{{ n }}"
      v: "{{verbose}}"
      vs: "v={{verbose}}"
output:
  discard: {}
"""


def test_defaults_and_local_builtins():
    pipe = pipenb.Pipe.from_yaml(PIPE)
    assert pipe.spec.input.options.count == 3  # a whole "{{n}}" keeps the int type
    events = pipe.preview().events
    assert len(events) == 3
    assert events[0] == {
        "_raw": "x",
        "lvl": "error",
        "host": socket.gethostname(),
        "aid": "local",
        "pipe": "tpl",
        "dep": "local",
        "p": "/tmp/x/3",
        "v": False,
        "vs": "v=false",
    }


def test_given_params_are_converted_to_the_declared_type_and_builtins_can_be_set():
    pipe = pipenb.Pipe.from_yaml(
        PIPE,
        {"n": "2", "level": "warn", "verbose": "yes"},
        builtins={"agent.id": "A1", "agent.name": "web-1", "deployment.id": "D9"},
    )
    assert pipe.spec.values["n"] == 2
    assert pipe.spec.values["verbose"] is True
    events = pipe.preview().events
    assert len(events) == 2
    assert events[0]["host"] == "web-1"
    assert events[0]["aid"] == "A1"
    assert events[0]["dep"] == "D9"
    assert events[0]["pipe"] == "tpl"  # pipe.name defaults to the pipe's own name
    assert events[0]["lvl"] == "warn"
    assert events[0]["p"] == "/tmp/x/2"


def test_unknown_template_name_is_located_with_a_suggestion():
    doc = PIPE.replace('vs: "v={{verbose}}"', 'vs: "v={{verbos}}"')
    (p,) = problems_of(doc)
    assert (p.line, p.column) == position(doc, '"v={{verbos}}"')
    assert p.message == (
        "unknown parameter {{verbos}} (did you mean {{verbose}}?); declare it under params: "
        "(declared: level, n, path, verbose; built-ins: agent.id, agent.name, pipe.name, "
        "deployment.id)"
    )


def test_a_parameter_outside_its_enum_is_rejected():
    problems = problems_of(PIPE, params={"level": "info"})
    assert str(problems[0]) == (
        "<pipe>:4:3: parameter 'level' must be one of ['warn', 'error'], got 'info'"
    )


def test_a_parameter_of_the_wrong_type_is_rejected():
    problems = problems_of(PIPE, params={"n": "many"})
    assert str(problems[0]) == "<pipe>:3:3: parameter 'n' expects int, got 'many'"
    problems = problems_of(PIPE, params={"verbose": "maybe"})
    assert str(problems[0]) == "<pipe>:6:3: parameter 'verbose' expects bool, got 'maybe'"


def test_a_bad_parameter_value_is_reported_once():
    problems = problems_of(PIPE, params={"level": "info"})
    assert [p.message for p in problems] == [
        "parameter 'level' must be one of ['warn', 'error'], got 'info'"
    ]


def test_unknown_given_parameter_is_an_error():
    (p,) = problems_of(PIPE, params={"levl": "warn"})
    assert p.message == (
        "unknown parameter 'levl' (did you mean 'level'?); declared: n, level, path, verbose"
    )


def test_templates_reach_expressions_and_tests():
    doc = """\
name: t
params:
  want: {default: error}
input: {echo: {lines: [a]}}
actions:
  - filter: level == "{{want}}"
output: {discard: {}}
tests:
  - name: keeps {{want}}
    input: [{level: "{{want}}"}]
    expect: [{level: "{{want}}"}]
"""
    pipe = pipenb.Pipe.from_yaml(doc, {"want": "warn"})
    assert pipe.spec.actions[0].options.expr == 'level == "warn"'
    assert pipe.spec.tests[0].name == "keeps warn"
    assert pipe.spec.tests[0].input == [{"level": "warn"}]
    assert pipe.test().passed


def test_render_directly():
    values = {"x": 5, "y": True, "f": 1.5, "n": None}
    out, errors = render({"a": "{{x}}", "b": "p-{{ x }}-{{y}}-{{n}}", "c": ["{{f}}", 3]}, values)
    assert errors == []
    assert out == {"a": 5, "b": "p-5-true-", "c": [1.5, 3]}
    out, errors = render({"k": ["{{nope}}"]}, {"nop": 1}, ("root",))
    assert out == {"k": ["{{nope}}"]}
    (err,) = errors
    assert err.path == ("root", "k", 0)
    assert "(did you mean {{nop}}?)" in str(err)


def test_render_leaves_field_references_alone():
    assert render("${x}/{{a}}", {"a": "A"}) == ("${x}/A", [])


def _field_template(text: str):
    ns = Namespace()
    src = field_template_source(text, ns)
    return eval(f"lambda e: {src}", ns.values)


def test_field_templates_render_per_event():
    fn = _field_template("x/${a.b}/${ c }/${d}/${e}/${missing}")
    event = {"a": {"b": 1}, "c": None, "d": True, "e": {"k": [1]}}
    assert fn(event) == 'x/1//true/{"k":[1]}/'


def test_a_whole_field_template_keeps_the_value_type():
    fn = _field_template("${a.b}")
    assert fn({"a": {"b": [1, 2]}}) == [1, 2]
    assert fn({}) is None


def test_field_templates_through_add():
    out, failures, _ = run_actions(
        "- add: {copy: '${n}', path: '/logs/${svc}/${n}.log', deep: '${a.b}'}",
        [{"n": 7, "svc": "web", "a": {"b": "z"}}, {}],
    )
    assert failures == []
    assert out == [
        {"n": 7, "svc": "web", "a": {"b": "z"}, "copy": 7, "path": "/logs/web/7.log", "deep": "z"},
        {"copy": None, "path": "/logs//.log", "deep": None},
    ]
