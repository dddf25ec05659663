"""Pipe documents around an action list, running actions on events, and the located problems a
rejected document reports."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.engine.steps import build_chain
from pipenb.lang.validate import load_pipe

#: A pipe for the control-plane tests, ``.format(name=..., label=...)``: a label to deploy it by
#: and an int parameter ``n``.
LABELLED_PIPE = """\
name: {name}
labels: [{label}]
params:
  n: {{default: 1, type: int}}
input: {{echo: {{lines: ['[error] disk full']}}}}
actions:
  - filter: 'True'
output: {{discard: {{}}}}
"""

#: A pipe document with three mistakes: an unknown option, a misspelt action, a file output
#: without a path (each must be reported, located).
BAD_PIPE = """\
name: bad
input: {echo: {lines: [a], bogus: 1}}
actions:
  - extrac: {pattern: x}
output: {file: {}}
"""


def actions_pipe(actions: str, *, input: str = "{echo: {events: [{}]}}") -> str:
    """A valid pipe document around an ``actions:`` block written as YAML list items."""
    body = textwrap.indent(textwrap.dedent(actions).strip("\n") + "\n", "  ")
    return f"name: t\ninput: {input}\noutput: {{discard: {{}}}}\nactions:\n{body}"


def run_actions(
    actions: str, events: list[dict[str, Any]], *, fuse: bool = True
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[dict[str, Any]]]:
    """Run an action list as users write it on ``events``.

    Returns the events out, the failures as ``(stage label, message)`` and per-stage counts.
    """
    spec = load_pipe(actions_pipe(actions))
    chain = compile_chain(spec, RunContext(pipe=spec.name), fuse=fuse)
    out, failures = chain.run([dict(e) for e in events])
    names = chain.names
    return (
        out,
        [(names[f.stage], str(f.error)) for f in failures],
        [c.as_dict() for c in chain.counts],
    )


def run_pipe_actions(yaml_text: str, events: list[dict[str, Any]]) -> tuple[list, list]:
    """A whole pipe document's actions over ``events``: (events out, failures)."""
    spec = load_pipe(yaml_text)
    ctx = RunContext(pipe=spec.name)
    steps = [a.component.factory(a.options, ctx) for a in spec.actions]
    chain = build_chain([a.label for a in spec.actions], steps)
    return chain.run([dict(e) for e in events])


ACTION_DOC_HEAD = """\
name: t
input: {echo: {events: [{}]}}
output: {discard: {}}
actions:
"""
FIRST_ACTION_LINE = 5  # the line of the first action in action_doc()


def action_doc(actions: str) -> str:
    """A whole pipe around a YAML list of actions."""
    return ACTION_DOC_HEAD + textwrap.indent(textwrap.dedent(actions).strip("\n") + "\n", "  ")


def run_action_doc(actions: str, events: list[dict[str, Any]]) -> tuple[list, list]:
    return run_pipe_actions(action_doc(actions), events)


def action_problems(actions: str) -> list[pipenb.Problem]:
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        load_pipe(action_doc(actions))
    return info.value.problems


def write_pipe(directory: Path, text: str, name: str = "pipe.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(text: str, **kwargs: Any) -> list[pipenb.Problem]:
    """The problems a pipe document is rejected with (fails the test if it is accepted)."""
    with pytest.raises(pipenb.PipeSyntaxError) as info:
        pipenb.Pipe.from_yaml(text, **kwargs)
    return info.value.problems


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the ``occurrence``-th ``needle`` in ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column
