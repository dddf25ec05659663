"""The safe expression language: semantics, and that the sandbox stays closed."""

from __future__ import annotations

import re

import pytest

import pipenb
from pipenb.errors import EventError
from pipenb.lang.expressions import FUNCTIONS, ExpressionError, compile_expression, parse

from support.pipes import actions_pipe, problems_of, run_actions

EVENT = {
    "a": 1,
    "b": None,
    "s": "Hello",
    "n": "42",
    "http": {"status": 500, "list": [1, 2]},
    "odd key": 3,
    "__class__": "just a key",
}


def ev(text: str, event: dict | None = None):
    return compile_expression(text).fn(EVENT if event is None else event)


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + 1", 2),
        ("a - 3", -2),
        ("a * 4", 4),
        ("10 / 4", 2.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ** 3", 8),
        ("-a", -1),
        ("+a", 1),
        ('s + "!"', "Hello!"),
        ("http.status", 500),
        ("http.list[1]", 2),
        ("http.list[-1]", 2),
        ("http.list[5]", None),
        ('http["status"]', 500),
        ('event["odd key"]', 3),
        ("event.a", 1),
        ("missing", None),
        ("missing.x.y", None),
        ("s.x", None),  # a path through a string is null, not an attribute
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("None", None),
        ("a == 1 and s == 'Hello'", True),
        ("a == 2 or s == 'Hello'", True),
        ("not missing", True),
        ("a != 1", False),
        ("b == null", True),
        ("b is null", True),
        ("a is not None", True),
        ("0 < a < 2", True),
        ("1 < a < 3", False),
        ("a in [1, 2]", True),
        ("a not in [1, 2]", False),
        ("s in ['x']", False),
        ("'ell' in s", True),
        ("3 in n", False),
        ("2 in n", True),  # a number in a string: compared as text
        ("2 in http.list", True),
        ("'status' in http", True),
        ("missing in [1]", False),
        ("1 in missing", False),
        ("a if a > 0 else 0", 1),
        ("[a, s]", [1, "Hello"]),
        ("{'k': a}", {"k": 1}),
        ("len(s)", 5),
        ("len(http)", 2),
        ("len(missing)", None),
        ("lower(s)", "hello"),
        ("upper(s)", "HELLO"),
        ("upper(b)", None),
        ("contains(s, 'ell')", True),
        ("contains(http.list, 2)", True),
        ("contains(missing, 'x')", None),
        ("startswith(s, 'He')", True),
        ("endswith(s, 'lo')", True),
        ("matches(s, '^H.l')", True),
        ("matches(s, '^x')", False),
        ("int(n) + 1", 43),
        ("int('ff', 16)", 255),
        ("int('2.5')", 2),
        ("float('1.5')", 1.5),
        ("str(true)", "true"),
        ("str(a)", "1"),
        ("str(http)", '{"status":500,"list":[1,2]}'),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("exists(http.status)", True),
        ("exists(b)", True),  # present but null
        ("exists(missing)", False),
        ("exists(http.list[1])", True),
        ("exists(http.list[9])", False),
        ("coalesce(b, missing, 7)", 7),
        ("coalesce(null)", None),
    ],
)
def test_expression_values(text, expected):
    got = ev(text)
    assert got == expected
    assert type(got) is type(expected)


def test_null_operands_make_null_and_ordering_with_null_is_false():
    assert ev("b + 1") is None
    assert ev("missing * 2") is None
    assert ev("-missing") is None
    assert ev("a < b") is False
    assert ev("b >= a") is False
    assert ev("missing > 0") is False


def test_now_is_an_iso_utc_timestamp():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ev("now()"))


def test_multiline_expressions_are_joined():
    assert ev("a == 1\n and s == 'Hello'") is True


@pytest.mark.parametrize(
    ("text", "event", "message"),
    [
        ('a < "x"', {"a": 1}, "cannot compare int 1 < str 'x'; convert one side first"),
        ("a >= s", {"a": 1, "s": "x"}, "cannot compare int 1 >= str 'x'"),
        ("a / 0", {"a": 1}, "division by zero in 1 / 0"),
        ("a // b", {"a": 1, "b": 0}, "division by zero in 1 // 0"),
        ("-s", {"s": "x"}, "cannot negate str 'x'"),
        ("a + s", {"a": 1, "s": "x"}, "cannot compute int 1 + str 'x'"),
        ("1 in d", {"d": 5}, "cannot test 1 in int"),
        ("round(s)", {"s": "x"}, "round() needs a number, got 'x'"),
        ("float(s)", {"s": "x"}, "float() cannot convert 'x'"),
        ("int(s)", {"s": "abc"}, "int() cannot convert 'abc'"),
    ],
)
def test_runtime_errors_are_event_errors(text, event, message):
    with pytest.raises(EventError) as info:
        ev(text, event)
    assert str(info.value).startswith(message)


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ('__import__("os")', "unknown function '__import__'; allowed: ", 0),
        ('__import__("os").system("id")', "methods and computed functions cannot be called", 0),
        ('"x".upper()', "methods and computed functions cannot be called", 0),
        ("s.upper()", "methods and computed functions cannot be called", 0),
        ("event.get('a')", "methods and computed functions cannot be called", 0),
        ("().__class__.__bases__", "attribute access is not allowed", 0),
        ('"".__class__', "attribute access is not allowed", 0),
        ("[].__class__.__mro__[1].__subclasses__()", "methods and computed functions", 0),
        ("(1).real", "attribute access is not allowed", 0),
        ("lambda: 1", "lambda is not allowed", 0),
        ("a and (lambda x: x)", "lambda is not allowed", 7),
        ("[x for x in y]", "comprehensions are not allowed", 0),
        ("{x for x in y}", "comprehensions are not allowed", 0),
        ("{x: 1 for x in y}", "comprehensions are not allowed", 0),
        ("len(x for x in y)", "comprehensions are not allowed", 3),
        ("open('/etc/passwd')", "unknown function 'open'", 0),
        ("eval('1')", "unknown function 'eval'", 0),
        ("getattr(a, 'b')", "unknown function 'getattr'", 0),
        ("print(a)", "unknown function 'print'", 0),
        ("_path(event, ('a',))", "unknown function '_path'", 0),
        ("lenn(s)", "unknown function 'lenn' (did you mean 'len'?)", 0),
        ("len(s)(1)", "methods and computed functions cannot be called", 0),
        ("(x := 1)", "assignment (:=) is not allowed", 1),
        ('f"{a}"', "f-strings are not allowed; use str() and +", 0),
        ('b"x"', "unsupported literal b'x'", 0),
        ("...", "unsupported literal Ellipsis", 0),
        ("{**a}", "** unpacking is not supported", 0),
        ("[*a]", "* unpacking is not supported", 1),
        ("a | b", "bitwise operators are not supported; use and/or/not", 0),
        ("~a", "bitwise operators are not supported", 0),
        ("x[1:2]", "slices are not supported", 0),
        ("a is 1", "'is' only compares with null; use == instead", 0),
        ("len(a, b)", "len() takes 1 argument(s), got 2", 0),
        ("now(1)", "now() takes 0 argument(s), got 1", 0),
        ("int(x=1)", "int() takes no keyword arguments", 0),
        ("exists(1)", "exists() takes a field name, e.g. exists(http.status)", 0),
        ("matches(a, '[')", "invalid regular expression", 0),
        ("matches(a, 1)", "matches() takes a regular expression string", 0),
        ("a b", "invalid expression: invalid syntax", 2),
        ("   ", "the expression is empty", 0),
        ("await a", "await is not allowed", 0),
    ],
)
def test_unsafe_or_invalid_expressions_are_rejected(text, message, offset):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert message in str(info.value)
    assert info.value.offset == offset


@pytest.mark.parametrize(
    ("expr", "needle", "message"),
    [
        ("__import__('os').system('true')", "__import__", "methods and computed functions"),
        ("__import__('os')", "__import__", "unknown function '__import__'"),
        ("'x'.upper() == 'X'", "'x'.upper()", "methods and computed functions cannot be called"),
        ("().__class__.__bases__", "().__class__", "attribute access is not allowed"),
        ("(lambda: 1)() == 1", "(lambda", "methods and computed functions cannot be called"),
        ("a == 1 or (lambda: 1)", "lambda", "lambda is not allowed"),
        ("len([c for c in s]) > 1", "[c for", "comprehensions are not allowed"),
        ("secret(a)", "secret", "unknown function 'secret'"),
    ],
)
def test_unsafe_expressions_fail_validation_with_pipe_syntax_error(expr, needle, message):
    doc = actions_pipe(f'- filter: "{expr}"')
    (p,) = problems_of(doc)
    assert p.message.startswith("filter.expr: ")
    assert message in p.message
    # the column points into the expression, at the offending node
    line = doc.splitlines()[p.line - 1]
    assert line[p.column - 1 :].startswith(needle)


def test_every_expression_option_is_checked_at_validation():
    doc = actions_pipe(
        """
        - set: {x: '__import__("os")'}
        - drop: {expr: 'a == 1', when: 'open("/etc/passwd")'}
        """
    )
    messages = sorted(p.message for p in problems_of(doc))
    assert messages[0].startswith("drop.when: unknown function 'open'")
    assert messages[1].startswith("set.fields.x: unknown function '__import__'")


def test_compiled_expressions_have_no_builtins():
    fn = compile_expression("a").fn
    assert fn.__globals__["__builtins__"] == {}
    assert "__import__" not in fn.__globals__
    assert "open" not in fn.__globals__


def test_the_fused_action_loop_reaches_only_two_builtins():
    spec = pipenb.Pipe.from_yaml(actions_pipe("- filter: a == 1\n- set: {b: len(s)}")).spec
    from pipenb.engine.base import RunContext
    from pipenb.engine.build import compile_chain

    chain = compile_chain(spec, RunContext())
    ((kind, fn, stages),) = chain.segments
    assert (kind, stages) == ("fused", [0, 1])
    assert set(fn.__globals__["__builtins__"]) == {"Exception", "len"}


@pytest.mark.parametrize(
    "name",
    ["__class__", "__import__", "__builtins__", "__globals__", "_path", "e", "event_", "len"],
)
def test_dunder_and_helper_names_are_just_event_keys(name):
    if name == "len":  # a field may be called like a function name
        assert ev("len", {"len": 3}) == 3
        return
    assert ev(name, {name: "value"}) == "value"
    assert ev(name, {}) is None


def test_dotted_dunder_paths_read_dict_keys_never_attributes():
    assert ev("event.__class__", {"__class__": 1}) == 1
    assert ev("a.__class__.__init__.__globals__", {"a": "text"}) is None
    assert ev("a.__class__.__init__.__globals__", {"a": {}}) is None
    nested = {"a": {"__class__": {"__init__": {"__globals__": "mine"}}}}
    assert ev("a.__class__.__init__.__globals__", nested) == "mine"
    assert ev('event["__class__"]', {"__class__": 2}) == 2


def test_a_field_named_class_through_a_whole_pipe():
    out, failures, _ = run_actions(
        """
        - filter: __class__ == "x"
        - set: {imp: __import__, cls: __class__, b: __builtins__}
        """,
        [{"__class__": "x", "__import__": 5}, {"__class__": "y"}, {}],
    )
    assert failures == []
    assert out == [{"__class__": "x", "__import__": 5, "imp": 5, "cls": "x", "b": None}]


def test_metadata_field_named_like_a_helper_reads_the_field():
    out, _, _ = run_actions("- filter: _path == '/x.log'", [{"_path": "/x.log"}, {"_path": "/y"}])
    assert out == [{"_path": "/x.log"}]


def test_the_function_list_is_the_documented_one():
    assert FUNCTIONS == [
        "len",
        "lower",
        "upper",
        "contains",
        "startswith",
        "endswith",
        "matches",
        "int",
        "float",
        "str",
        "round",
        "exists",
        "coalesce",
        "now",
    ]
