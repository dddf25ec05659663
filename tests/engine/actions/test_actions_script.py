"""The ``script`` action: a user's Python ``process(event)``, allowed only where scripts are."""

from __future__ import annotations

import textwrap

import orjson
import pytest

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.lang.validate import load_pipe

from support.files import read_ndjson
from support.pipes import actions_pipe, position, problems_of


def script_pipe(code: str, *, when: str | None = None) -> pipenb.Pipe:
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "      ")
    extra = f"\n    when: {when}" if when else ""
    return pipenb.Pipe.from_yaml(actions_pipe(f"- script:\n    code: |\n{body}{extra}"))


def messages(result: pipenb.PreviewResult) -> list[str]:
    return [e["_error"]["message"] for e in result.errors]


def test_process_may_change_the_event_return_a_new_one_a_list_or_none():
    pipe = script_pipe(
        """
        def process(event):
            kind = event.get("kind")
            if kind == "drop":
                return None
            if kind == "split":
                return [{"part": p} for p in event["parts"]]
            if kind == "none-left":
                return []
            if kind == "new":
                return {"replaced": True}
            event["seen"] = True
            return event
        """
    )
    result = pipe.preview(
        [
            {"kind": "keep"},
            {"kind": "drop"},
            {"kind": "split", "parts": [1, 2]},
            {"kind": "none-left"},
            {"kind": "new"},
        ]
    )
    assert result.events == [
        {"kind": "keep", "seen": True},
        {"part": 1},
        {"part": 2},
        {"replaced": True},
    ]
    assert result.errors == []


def test_an_exception_in_process_sends_the_event_to_errors_with_its_message():
    pipe = script_pipe(
        """
        def process(event):
            if event["n"] == 2:
                raise ValueError(f"bad n {event['n']}")
            return {"inverse": 1 / event["n"]}
        """
    )
    result = pipe.preview([{"n": 1}, {"n": 0}, {"n": 2}, {}, {"n": 4}])
    assert result.events == [{"inverse": 1.0}, {"inverse": 0.25}]
    assert messages(result) == [
        "script: ZeroDivisionError: division by zero (script line 4)",
        "script: ValueError: bad n 2 (script line 3)",
        "script: KeyError: 'n' (script line 2)",
    ]
    assert [{k: v for k, v in e.items() if k != "_error"} for e in result.errors] == [
        {"n": 0},
        {"n": 2},
        {},
    ]
    assert result.counts[1]["errors"] == 3


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("42", "script: process returned int; return the event (a dict), a list of events, or"),
        ("'text'", "script: process returned str; return the event"),
        ("[event, 1]", "script: process returned a list with an item of type int; return"),
    ],
)
def test_returning_anything_else_is_an_error_for_that_event(returned, message):
    result = script_pipe(f"def process(event):\n    return {returned}").preview([{"a": 1}])
    assert result.events == []
    (got,) = messages(result)
    assert got.startswith(message)


def test_the_code_is_loaded_once_so_module_state_lives_across_events_and_batches():
    pipe = script_pipe(
        """
        import itertools
        counter = itertools.count(1)

        def process(event):
            event["seq"] = next(counter)
            return event
        """
    )
    spec = pipe.spec
    chain = compile_chain(spec, RunContext(pipe=spec.name))
    first, _ = chain.run([{}, {}])
    second, _ = chain.run([{}])
    assert [e["seq"] for e in first + second] == [1, 2, 3]


def test_when_limits_the_script_to_some_events():
    pipe = script_pipe("def process(event):\n    return None", when='level == "debug"')
    result = pipe.preview([{"level": "debug"}, {"level": "error"}, {"level": "debug", "x": 1}])
    assert result.events == [{"level": "error"}]


def test_the_short_form_takes_the_code():
    pipe = pipenb.Pipe.from_yaml(
        actions_pipe('- script: "def process(event):\\n    return [event, event]"')
    )
    assert len(pipe.preview([{"a": 1}]).events) == 2


def test_a_script_from_a_file(tmp_path):
    path = tmp_path / "enrich.py"
    path.write_text("def process(event):\n    event['from_file'] = True\n    return event\n")
    pipe = pipenb.Pipe.from_yaml(actions_pipe(f"- script: {{file: {path}}}"))
    assert pipe.preview([{"a": 1}]).events == [{"a": 1, "from_file": True}]


def test_a_missing_or_broken_script_file_fails_when_the_pipe_is_built(tmp_path, data_dir):
    missing = pipenb.Pipe.from_yaml(actions_pipe(f"- script: {{file: {tmp_path}/nope.py}}"))
    with pytest.raises(pipenb.PipeRuntimeError, match=r"script: cannot read .*nope\.py"):
        missing.engine(data_dir=data_dir)
    broken = tmp_path / "broken.py"
    broken.write_text("def process(event):\n    return (\n")
    pipe = pipenb.Pipe.from_yaml(actions_pipe(f"- script: {{file: {broken}}}"))
    with pytest.raises(pipenb.PipeRuntimeError, match="Python syntax error in the script at line"):
        pipe.engine(data_dir=data_dir)


def test_a_failure_while_loading_the_code_fails_the_build(data_dir):
    pipe = script_pipe("raise RuntimeError('no config')\ndef process(event):\n    return event")
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        pipe.engine(data_dir=data_dir)
    assert str(info.value) == "script: the code failed while loading: RuntimeError: no config"


def test_validation_compiles_the_code_but_never_runs_it(tmp_path):
    marker = tmp_path / "ran"
    pipe = script_pipe(f"open({str(marker)!r}, 'w').close()\ndef process(event):\n    return event")
    assert pipe.spec.capabilities == {"script"}
    assert not marker.exists()


def test_a_syntax_error_is_a_validation_problem_located_at_the_code():
    text = actions_pipe("- script:\n    code: |\n      def process(event)\n          return event")
    (problem,) = problems_of(text)
    assert problem.message == (
        "script.code: Python syntax error in the script at line 1, column 19: expected ':'"
    )
    assert (problem.line, problem.column) == position(text, "|")  # the code's block


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{code: 'x = 1'}", "script.code: the script must define a function process(event)"),
        ("{}", "script: give either code: (Python source) or file: (a .py path)"),
        ("{code: 'process = print', file: a.py}", "script: give either code: (Python source)"),
    ],
)
def test_script_validation(body, message):
    (problem,) = problems_of(actions_pipe(f"- script: {body}"))
    assert problem.message.startswith(message)


def test_scripts_are_refused_where_they_are_not_allowed(tmp_path, data_dir):
    pipe = script_pipe("def process(event):\n    return event")
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        pipe.engine(data_dir=data_dir, allow=frozenset())
    assert "uses script, which is disabled here" in str(info.value)
    assert "--allow-scripts" in str(info.value)
    # the action itself refuses too, for callers that build it without the engine's check
    spec = load_pipe(pipe.yaml)
    with pytest.raises(pipenb.PipeRuntimeError) as info:
        compile_chain(spec, RunContext(pipe=spec.name, allow=frozenset({"exec"})))
    assert str(info.value) == (
        "the script action is disabled here; start the agent with --allow-scripts"
    )


def test_a_script_in_a_running_pipe_dead_letters_its_failures(tmp_path, data_dir):
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    doc = {
        "name": "script-run",
        "input": {"echo": {"events": [{"n": 1}, {"n": 0}, {"n": 5}]}},
        "actions": [
            {"script": {"code": "def process(event):\n    return {'x': 10 // event['n']}"}},
            {"add": {"ok": True}},
        ],
        "output": {"file": {"path": str(out)}},
        "errors": {"file": {"path": str(errors)}},
    }
    snap = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"x": 10, "ok": True}, {"x": 2, "ok": True}]
    (dead,) = read_ndjson(errors)
    assert dead["n"] == 0
    assert dead["_error"] == {
        "stage": "0:script",
        "message": "script: ZeroDivisionError: integer division or modulo by zero (script line 2)",
    }
    assert snap["actions"][0] == {
        "stage": "0:script",
        "in": 3,
        "out": 2,
        "dropped": 0,
        "errors": 1,
    }
