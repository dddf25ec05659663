"""Fuzzing the pipe language: generated pipe documents against the validator and the builder.

Documents come from three places:

- *structured*: built from the component registry itself (every input, action and output, with
  option names and values drawn from each option's pydantic type), so most of them are valid;
- *mutated*: a structured document with wrong types, unknown keys, bad expressions, broken
  templates, deep nesting, huge or odd numbers, then dumped to YAML and damaged as text
  (anchors and aliases, tags, duplicate keys, merge keys, tabs, NULs, BOMs, cuts);
- *raw*: any text, and text from YAML's own punctuation.

Properties: ``load_pipe`` (and ``Pipe.from_file`` on bytes that need not be UTF-8) either returns
a spec or raises ``PipeSyntaxError`` whose every problem has a line and column (or a field path);
it never takes long (a SIGALRM deadline per document); and a pipe it accepts is never refused by
the engine when it is built (``build`` and the unfused preview chain compile).

Hypothesis is deterministic here (``derandomize=True``), so CI runs the same examples each time.
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import build, compile_chain
from pipenb.errors import PipeRuntimeError, PipeSyntaxError
from pipenb.lang import types as lang_types
from pipenb.lang import units
from pipenb.lang.registry import registry
from pipenb.lang.validate import load_pipe

from support.fuzzing import fuzz_settings, time_limit, valid_expressions

FUZZ = fuzz_settings(max_examples=120)

# ------------------------------------------------------------------------------ option values

NAMES = st.sampled_from(["a", "b", "level", "msg", "http.status", "_raw", "x.y", "n", "ts"])
# valid values here; invalid ones come from the mutations (ODD_VALUES, TEXT_DAMAGE)
REGEXES = st.sampled_from([r"(?P<level>\w+): (?P<msg>.*)", r"^(?P<a>\d+)$", r"(?P<n>x)?"])
DURATIONS = st.sampled_from(["250ms", "1s", "5s", "1m", 0.5, 2, "0s", "1 d"])
SIZES = st.sampled_from(["512", "10KB", "1MiB", 4096, 1, "1.5kb"])
SCRIPTS = st.sampled_from(
    [
        "def process(event):\n    return event\n",
        "def process(event):\n    event['n'] = len(event)\n    return [event, event]\n",
        "process = lambda event: None\n",
        "def process(event):\n  return event\nbreak\n",  # only the compiler refuses this
        "def process(event):\n    return " + "-" * 3000 + "1\n",
    ]
)
BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "path": st.sampled_from(["/tmp/pipenb-fuzz/out.ndjson", "/tmp/pipenb-fuzz/${a}.log", "x"]),
    "address": st.sampled_from(["127.0.0.1:9", "[::1]:9", "localhost:65535"]),
    "url": st.sampled_from(["http://127.0.0.1:9/x", "https://localhost/"]),
    "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
    "command": st.sampled_from(["echo hi", ["echo", "hi"]]),
    "cron": st.sampled_from(["*/5 * * * *", "0 3 * * mon-fri"]),
    "code": SCRIPTS,
    "delimiter": st.sampled_from([",", ";", "\t"]),
    "separator": st.sampled_from(["=", ":"]),
    "with": st.sampled_from(["***", "\\1", ""]),
}
BY_COMPONENT: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("time", "format"): st.sampled_from(["auto", "iso8601", "epoch", "%Y-%m-%d %H"]),
    ("mask", "pattern"): st.sampled_from(["email", "ipv4", "bearer-token", r"\d+"]),
    ("convert", "fields"): st.dictionaries(
        NAMES, st.sampled_from(["int", "float", "bool", "str", "size", "duration"])
    ),
    ("http-server", "address"): st.sampled_from(["127.0.0.1:0", ":8080"]),
    ("tcp", "address"): st.sampled_from(["127.0.0.1:9", "localhost:5140"]),
    ("udp", "address"): st.sampled_from(["127.0.0.1:9", "localhost:5140"]),
}
JSONISH = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _validator(meta: Any) -> Any:
    return getattr(meta, "func", None)


def for_type(tp: Any, meta: tuple = (), where: tuple[str, str] = ("", "")) -> st.SearchStrategy:
    """Values for an option of type ``tp`` (pydantic metadata ``meta``), mostly valid ones."""
    funcs = {_validator(m) for m in meta}
    if lang_types._check_expr in funcs:
        return valid_expressions
    if lang_types._check_regex in funcs:
        return REGEXES
    if units.parse_duration in funcs:
        return DURATIONS
    if units.parse_size in funcs:
        return SIZES
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return for_type(args[0], (*meta, *args[1:]), where)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([for_type(a, meta, where) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(for_type(args[0], (), where), max_size=3)
    if origin is dict:
        return st.dictionaries(NAMES, for_type(args[1], (), where), max_size=3)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(0, 20)
    if tp is float:
        return st.floats(0, 10)
    if tp is str:
        return NAMES
    if tp is Any:
        return JSONISH
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return options_of(tp, where[0])
    raise AssertionError(f"no strategy for option type {tp!r}")  # a new kind of option


def options_of(model: type[BaseModel], component: str) -> st.SearchStrategy[dict[str, Any]]:
    """An options mapping for ``model``: every required option, some of the optional ones."""
    required: dict[str, st.SearchStrategy] = {}
    optional: dict[str, st.SearchStrategy] = {}
    for name, f in model.model_fields.items():
        key = f.alias or name
        value = BY_COMPONENT.get((component, key))
        if value is None:
            value = BY_NAME.get(key)
        if value is None:
            value = for_type(f.annotation, tuple(f.metadata), (component, key))
        (required if f.is_required() else optional)[key] = value
    return st.fixed_dictionaries(required, optional=optional)


def components(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        [
            options_of(c.options, c.name).map(lambda o, n=c.name: {n: o})
            for c in registry.all()
            if c.kind == kind
        ]
    )


SHORT_ACTIONS = st.one_of(
    valid_expressions.map(lambda e: {"filter": e}),
    valid_expressions.map(lambda e: {"drop": e}),
    st.dictionaries(NAMES, valid_expressions, min_size=1, max_size=2).map(lambda d: {"set": d}),
    st.dictionaries(NAMES, JSONISH, min_size=1, max_size=2).map(lambda d: {"add": d}),
    st.lists(NAMES, min_size=1, max_size=3).map(lambda f: {"remove": f}),
    st.lists(NAMES, min_size=1, max_size=3).map(lambda f: {"keep": f}),
    st.dictionaries(NAMES, NAMES, min_size=1, max_size=2).map(lambda d: {"rename": d}),
    st.sampled_from([{"parse": "json"}, {"sample": 3}, {"unnest": "items"}, {"dedupe": ["a"]}]),
)
PARAMS = st.dictionaries(
    st.sampled_from(["p", "level", "path", "n"]),
    st.one_of(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
        st.fixed_dictionaries(
            {},
            optional={
                "default": JSONISH,
                "type": st.sampled_from(["str", "int", "float", "bool", "list"]),
                "enum": st.lists(JSONISH, max_size=3),
                "description": st.text(max_size=10),
            },
        ),
    ),
    max_size=2,
)
TESTS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=8),
            "input": st.lists(st.one_of(st.text(max_size=8), st.dictionaries(NAMES, JSONISH))),
            "expect-count": st.integers(0, 3),
        },
        optional={
            "expect": st.lists(st.dictionaries(NAMES, JSONISH, max_size=2), max_size=2),
            "expect-errors": st.integers(0, 3),
            "params": st.dictionaries(st.sampled_from(["p", "q"]), JSONISH, max_size=1),
        },
    ),
    max_size=2,
)

structured_docs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["fuzz", "a-b_c", "0x"]),
        "input": components("input"),
        "actions": st.lists(st.one_of(components("action"), SHORT_ACTIONS), max_size=4),
        "output": components("output"),
    },
    optional={
        "description": st.text(max_size=10),
        "labels": st.lists(st.sampled_from(["web", "eu"]), max_size=2),
        "params": PARAMS,
        "errors": components("output"),
        "tests": TESTS,
    },
)

# ------------------------------------------------------------------------------ mutations

ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            10**30,
            -(10**30),
            float("inf"),
            float("-inf"),
            float("nan"),
            1e308,
            "",
            " ",
            [],
            {},
            [None],
            {"": None},
            "{{nope}}",
            "{{ p }}",
            "{{agent.name}}",
            "{{",
            "}}{{",
            "${",
            "${a}",
            "${}",
            "__import__('os').system('true')",
            "().__class__.__bases__",
            "a ==",
            "x" * 10_000,
            "(",
            "a{2,1}",
            "soon",
            "-1s",
            "lots",
            "nohost",
            "1.2.3.4:99999",
            "ftp://x",
            "Nope/Zone",
            "../../etc/passwd",
            "99 * * * *",
            "%Q",
            "def process(event) return event\n",
            "\x00",
            "\t",
            "\ufeff",
            "\ud7ff\ue000",
        ]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.integers(1, 80).map(lambda n: _nested(n)),
    valid_expressions,
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated_tree(draw: st.DrawFn) -> Any:
    # copies: drawn values may be shared objects (sampled_from), and are changed in place here
    doc = copy.deepcopy(draw(structured_docs))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        how = draw(st.sampled_from(["replace", "unknown-key", "delete", "wrap"]))
        if not path:
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if how == "replace":
            parent[key] = copy.deepcopy(draw(ODD_VALUES))
        elif how == "unknown-key" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(["colour", "filtr", "when", "fields", 1, ""]))] = 1
        elif how == "delete" and isinstance(parent, dict):
            del parent[key]
        elif how == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
    return doc


def dump(doc: Any, flow: bool | None = False) -> str:
    return yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=100
    )


TEXT_DAMAGE = [
    "\t",
    "\x00",
    "\ufeff",
    "\x85",
    "\u2028",
    "&a ",
    "*a",
    "*nope",
    "!!python/object:os.system ",
    "!!python/name:os.system ",
    "!!binary ",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!set ",
    "!foo ",
    "<<: ",
    "<<: *a\n",
    "? ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "|\n",
    ">-\n",
    "#",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "2020-13-45",
    "0x" + "f" * 5000,
    "9" * 5000,
    "1e999",
    ".nan",
    "{{",
    "${",
]
LAUGHS = "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(9)
)


@st.composite
def damaged_text(draw: st.DrawFn) -> str:
    text = dump(draw(mutated_tree()), draw(st.sampled_from([False, None, True])))
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(
            st.sampled_from(["value", "insert", "value", "dup-line", "value", "drop-line", "cut"])
            | st.just("prefix")
        )
        values = [i + 2 for i in range(len(text)) if text.startswith((": ", "- "), i)]
        if how == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(TEXT_DAMAGE)) + text[at:]
        elif how == "value" and values:  # where a value starts: tags, anchors, odd scalars
            at = draw(st.sampled_from(values))
            text = text[:at] + draw(st.sampled_from(TEXT_DAMAGE)) + text[at:]
        elif how == "dup-line" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
        elif how == "drop-line" and lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "".join(lines)
        elif how == "cut":
            text = text[: draw(st.integers(0, len(text)))]
        else:
            text = (
                draw(
                    st.sampled_from(
                        [
                            "x: &a {name: t}\n",
                            "<<: {name: t}\n",
                            "name: t\nname: u\n",
                            LAUGHS,
                            "? [a, b]\n: 1\n",
                            "? {a: 1}\n: 1\n",
                            "1: one\n",
                            "null: 1\n",
                            "%TAG !e! tag:example.com,2000:\n---\n",
                        ]
                    )
                )
                + text
            )
    return text


YAMLISH = st.text(alphabet=" \n\t-:{}[],'\"&*!|>#%@`?abc01\x00\ufeff\\.", max_size=120)

# ------------------------------------------------------------------------------ the property


def check(text: str, *, file: Path | None = None) -> str:
    """Validate ``text`` (or the bytes in ``file``) and, when valid, build it.

    Returns ``valid`` or ``invalid`` for the statistics; any other outcome fails the test.
    """
    with time_limit(10, "validating a pipe"):
        try:
            spec = pipenb.Pipe.from_file(file).spec if file else load_pipe(text)
        except PipeSyntaxError as exc:
            assert exc.problems, "a PipeSyntaxError without problems"
            nlines = text.count("\n") + 2
            for p in exc.problems:
                assert (p.line >= 1 and p.column >= 1) or p.path, f"unlocated: {p!r}"
                assert p.line <= nlines + 1, f"line {p.line} is past the end: {p}"
                assert p.message.strip()
            return "invalid"
    with time_limit(10, "building a pipe"):
        ctx = RunContext(pipe=spec.name, values=spec.values)
        try:
            build(spec, ctx)  # what the engine runs; must not refuse what validation accepted
            compile_chain(spec, ctx, fuse=False)  # what preview and taps run
        except PipeRuntimeError as exc:
            # the one thing validation cannot know: a script file on the host that runs it
            files = [a.options.file for a in spec.actions if a.name == "script"]
            assert any(files) and "cannot read" in str(exc), exc
            return "valid, needs a script file"
    return "valid"


@FUZZ
@given(doc=structured_docs)
@example(doc={"name": "t", "input": {"echo": {"events": [{}]}}, "output": {"discard": {}},
              "actions": [{"set": {"x": "not " * 300 + "a"}}]})  # fmt: skip
@example(doc={"name": "t", "input": {"echo": {"events": [{}]}}, "output": {"discard": {}},
              "actions": [{"add": {"x": float("inf"), "y": 10**4000}}]})  # fmt: skip
@example(doc={"name": "t", "input": {"echo": {"events": [{}]}}, "output": {"discard": {}},
              "actions": [{"script": "def process(e):\n    return e\nbreak\n"}]})  # fmt: skip
@example(doc={"name": "t", "input": {"echo": {"events": [{}]}}, "output": {"discard": {}},
              "actions": [{"script": {"file": "/nonexistent/x.py"}}]})  # fmt: skip
def test_structured_documents_are_valid_or_rejected_and_valid_ones_build(doc):
    import hypothesis

    hypothesis.event(check(dump(doc)))


@FUZZ
@given(text=damaged_text())
@example(text="name: !!python/object:os.system x\n")  # regression: ConstructorError escaped
@example(text="<<: {name: t}\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n")
@example(text="description: 2020-13-45\n")  # regression: ValueError from the timestamp
@example(text="name: t\ninput: {echo: {events: [{}], count: " + "9" * 5000 + "}}\n")
@example(text="name: " + "[" * 3000 + "]" * 3000 + "\n")  # regression: RecursionError
@example(text=LAUGHS)  # regression: aliases expanded to 9**9 values (minutes)
@example(text="? " + "[" * 60 + "]" * 60 + "\n: 1\n" + LAUGHS + "? *l8\n: 1\n")
@example(text="name: t\ninput: {echo: {events: [{}], interval: " + "9" * 400 + "}}\n")
@example(text="name: t\ninput: {files: {path: /x, read-bytes: .inf}}\n")
@example(text="name: t\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n"
              "actions: [{add: {y: 0x" + "f" * 5000 + "}}]\n")  # fmt: skip
@example(text="name: t\ninput: {files: {path: /x, read-bytes: 9999999999999999999999999999PB}}\n"
              "output: {discard: {}}\n")  # fmt: skip
def test_mutated_documents_never_escape_the_validator(text):
    import hypothesis

    hypothesis.event(check(text))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), YAMLISH))
def test_raw_text_never_escapes_the_validator(text):
    check(text)


@settings(FUZZ, max_examples=40)
@given(
    doc=structured_docs,
    junk=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])),
        max_size=3,
    ),
)
@example(doc={"name": "t"}, junk=[(3, b"\xff")])  # regression: UnicodeDecodeError escaped
def test_files_that_are_not_utf8_are_located_problems(doc, junk, tmp_path_factory):
    data = dump(doc).encode()
    for at, junk_bytes in junk:
        at = min(at, len(data))
        data = data[:at] + junk_bytes + data[at:]
    path = tmp_path_factory.mktemp("fuzz") / "pipe.yaml"
    path.write_bytes(data)
    check(data.decode("utf-8", "replace"), file=path)


def test_a_non_utf8_file_is_reported_at_its_line_and_column(tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_bytes(b"name: t\ninput: {echo: {lines: [caf\xe9]}}\n")
    with pytest.raises(PipeSyntaxError) as info:
        pipenb.Pipe.from_file(path)
    (p,) = info.value.problems
    assert (p.line, p.column) == (2, 27)
    assert "not UTF-8" in p.message


def test_every_registered_component_has_a_strategy():
    """A new option type makes this fail, rather than silently leaving the option unfuzzed."""
    for c in registry.all():
        options_of(c.options, c.name)  # raises AssertionError for an option type it cannot fill
