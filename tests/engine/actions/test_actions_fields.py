"""Actions filter, drop, add, set, remove, keep, rename and extract, as users write them."""

from __future__ import annotations

import pytest

from support.pipes import actions_pipe, problems_of, run_actions

# ------------------------------------------------------------------------------ filter / drop


def test_filter_keeps_events_where_true_and_counts_the_rest_dropped():
    out, failures, counts = run_actions(
        "- filter: level in ['WARN', 'ERROR']",
        [{"level": "INFO"}, {"level": "WARN"}, {}, {"level": None}, {"level": "ERROR"}],
    )
    assert out == [{"level": "WARN"}, {"level": "ERROR"}]
    assert failures == []
    assert counts == [{"stage": "0:filter", "in": 5, "out": 2, "dropped": 3, "errors": 0}]


def test_drop_is_the_inverse_of_filter():
    out, _, counts = run_actions("- drop: status == 200", [{"status": 200}, {"status": 500}, {}])
    assert out == [{"status": 500}, {}]
    assert counts[0]["dropped"] == 1


def test_filter_on_a_missing_field_is_null_not_an_error():
    out, failures, _ = run_actions(
        "- filter: http.status >= 500", [{}, {"http": None}, {"http": 1}]
    )
    assert out == []
    assert failures == []


def test_drop_nulls():
    out, _, _ = run_actions("- drop: a == null", [{"a": 0}, {}, {"a": None}, {"a": False}])
    assert out == [{"a": 0}, {"a": False}]


@pytest.mark.parametrize(("expr", "kept"), [("true", 2), ("false", 0), ("1", 2), ("0", 0)])
def test_filter_constant_expressions(expr, kept):
    out, _, _ = run_actions(f"- filter: {expr}", [{}, {"a": 1}])
    assert len(out) == kept


def test_filter_with_when_only_judges_some_events():
    out, _, counts = run_actions(
        "- filter: {expr: a > 1, when: b == 1}",
        [{"a": 0, "b": 1}, {"a": 0, "b": 2}, {"a": 2, "b": 1}],
    )
    assert out == [{"a": 0, "b": 2}, {"a": 2, "b": 1}]
    assert counts[0] == {"stage": "0:filter", "in": 3, "out": 2, "dropped": 1, "errors": 0}


def test_drop_with_when():
    out, _, _ = run_actions("- drop: {expr: 'true', when: 'a == 1'}", [{"a": 1}, {"a": 2}, {}])
    assert out == [{"a": 2}, {}]


def test_a_filter_that_fails_sends_the_event_to_errors_and_goes_on():
    out, failures, counts = run_actions(
        "- filter: int(x) > 1", [{"x": "abc"}, {"x": "5"}, {"x": "0"}]
    )
    assert out == [{"x": "5"}]
    assert failures == [("0:filter", "int() cannot convert 'abc'")]
    assert counts[0] == {"stage": "0:filter", "in": 3, "out": 1, "dropped": 1, "errors": 1}


def test_comparing_a_string_with_a_number_is_an_event_error():
    _, failures, _ = run_actions("- filter: status > 400", [{"status": "500"}])
    ((stage, message),) = failures
    assert stage == "0:filter"
    assert message.startswith("cannot compare str '500' > int 400")


# ------------------------------------------------------------------------------ add


def test_add_constants_templates_nulls_and_nested_objects():
    out, failures, _ = run_actions(
        "- add: {env: prod, n: 1, f: 1.5, ok: true, none: null, x.y: 1, obj: {k: [1]}}",
        [{"env": "dev"}, {}],
    )
    assert failures == []
    expected = {"env": "prod", "n": 1, "f": 1.5, "ok": True, "none": None, "x": {"y": 1}}
    assert out == [{**expected, "obj": {"k": [1]}}, {**expected, "obj": {"k": [1]}}]


def test_add_copies_mutable_values_per_event():
    out, _, _ = run_actions("- add: {obj: {k: [1]}, tags: [a]}", [{}, {}])
    out[0]["obj"]["k"].append(2)
    out[0]["tags"].append("b")
    assert out[1] == {"obj": {"k": [1]}, "tags": ["a"]}


def test_add_one_field():
    out, _, _ = run_actions("- add: {env: prod}", [{"env": "dev", "a": 1}])
    assert out == [{"env": "prod", "a": 1}]


def test_add_overwrite_false_keeps_existing_values_even_null():
    out, _, _ = run_actions(
        "- add: {a: new, b: new, overwrite: false}", [{"a": "old"}, {"a": None}, {}]
    )
    assert out == [
        {"a": "old", "b": "new"},
        {"a": None, "b": "new"},
        {"a": "new", "b": "new"},
    ]


def test_add_overwrite_false_with_dotted_paths():
    out, _, _ = run_actions(
        "- add: {x.y: new, overwrite: false}", [{"x": {"y": 1}}, {"x": 5}, {}, {"x": {"z": 2}}]
    )
    assert out == [
        {"x": {"y": 1}},
        {"x": {"y": "new"}},
        {"x": {"y": "new"}},
        {"x": {"z": 2, "y": "new"}},
    ]


def test_add_long_form_sets_fields_named_like_options():
    out, _, _ = run_actions("- add: {fields: {when: x, overwrite: y}}", [{}])
    assert out == [{"when": "x", "overwrite": "y"}]


def test_add_with_when():
    out, _, _ = run_actions("- add: {tag: slow, when: 'ms > 100'}", [{"ms": 500}, {"ms": 5}, {}])
    assert out == [{"ms": 500, "tag": "slow"}, {"ms": 5}, {}]


def test_add_renders_field_references_inside_nested_values():
    out, _, _ = run_actions("- add: {meta: {svc: '${s}'}, tags: ['${s}', x]}", [{"s": "web"}])
    assert out == [{"s": "web", "meta": {"svc": "web"}, "tags": ["web", "x"]}]


# ------------------------------------------------------------------------------ set


def test_set_computes_in_order_later_fields_see_earlier_ones():
    out, failures, _ = run_actions(
        "- set: {a: b * 2, c: a + 1, d.e: len(s), latency_s: ms / 1000}",
        [{"b": 2, "s": "abc", "ms": 250}, {"b": None}],
    )
    assert failures == []
    assert out == [
        {"b": 2, "s": "abc", "ms": 250, "a": 4, "c": 5, "d": {"e": 3}, "latency_s": 0.25},
        {"b": None, "a": None, "c": None, "d": {"e": None}, "latency_s": None},
    ]


def test_set_replaces_a_non_object_on_a_dotted_path():
    out, _, _ = run_actions("- set: {x.y: 1}", [{"x": "text"}])
    assert out == [{"x": {"y": 1}}]


def test_set_with_when_and_a_failing_expression():
    out, failures, counts = run_actions(
        "- set: {n: int(v), when: exists(v)}", [{"v": "7"}, {}, {"v": "x"}]
    )
    assert out == [{"v": "7", "n": 7}, {}]
    assert failures == [("0:set", "int() cannot convert 'x'")]
    assert counts[0] == {"stage": "0:set", "in": 3, "out": 2, "dropped": 0, "errors": 1}


def test_set_rejects_bad_expressions_at_validation():
    (p,) = problems_of(actions_pipe("- set: {a: 'b +'}"))
    assert p.message == "set.fields.a: invalid expression: invalid syntax"


# ------------------------------------------------------------------------------ remove / keep


def test_remove_top_level_dotted_and_missing_fields():
    out, _, _ = run_actions(
        "- remove: [password, http.token, zz, a.b.c]",
        [{"password": "x", "http": {"token": "t", "status": 1}, "a": 1, "keep": True}],
    )
    assert out == [{"http": {"status": 1}, "a": 1, "keep": True}]


def test_remove_a_single_name_and_with_when():
    out, _, _ = run_actions(
        "- remove: {fields: secret, when: 'env != \"dev\"'}",
        [{"secret": 1, "env": "prod"}, {"secret": 2, "env": "dev"}],
    )
    assert out == [{"env": "prod"}, {"secret": 2, "env": "dev"}]


def test_keep_keeps_only_the_listed_fields_in_the_listed_order():
    out, _, _ = run_actions("- keep: [c, a, missing]", [{"a": 1, "b": 2, "c": None}, {}])
    assert out == [{"c": None, "a": 1}, {}]
    assert list(out[0]) == ["c", "a"]


def test_keep_with_when():
    out, _, _ = run_actions(
        "- keep: {fields: [a], when: 'b == 1'}", [{"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2}]
    )
    assert out == [{"a": 1}, {"a": 1, "b": 2}]


def test_keep_with_a_dotted_path_keeps_the_nested_field():
    out, _, _ = run_actions("- keep: [http.status, a]", [{"a": 1, "http": {"status": 200, "x": 1}}])
    assert out == [{"a": 1, "http": {"status": 200}}]


def test_remove_needs_non_empty_field_names():
    (p,) = problems_of(actions_pipe("- keep: [a]\n- remove: ['']"))
    assert p.line == 6
    assert p.message.startswith("remove.fields.0: String should have at least 1 character")


# ------------------------------------------------------------------------------ rename


def test_rename_plain_dotted_and_missing():
    out, _, _ = run_actions(
        "- rename: {a: b, x.y: z, m: n.o, missing: q}",
        [{"a": 1, "b": 0, "x": {"y": 2}, "m": 3}, {}],
    )
    assert out == [{"b": 1, "x": {}, "z": 2, "n": {"o": 3}}, {}]


def test_rename_keeps_a_null_value_and_respects_when():
    out, _, _ = run_actions(
        "- rename: {msg: message, when: 'level == \"e\"'}",
        [{"msg": None, "level": "e"}, {"msg": "x", "level": "i"}],
    )
    assert out == [{"level": "e", "message": None}, {"msg": "x", "level": "i"}]


def test_rename_to_an_empty_name_is_rejected():
    (p,) = problems_of(actions_pipe("- rename: {a: ''}"))
    assert p.message == "rename.fields: rename maps each old name to a new, non-empty name"


# ------------------------------------------------------------------------------ extract


def test_extract_named_groups_remove_and_optional_groups():
    out, failures, _ = run_actions(
        r"- extract: {field: _raw, pattern: '(?P<k>\w+)=(?P<v>\d+)(?P<bang>!)?', remove: true}",
        [{"_raw": "a=1"}, {"_raw": "b=2!"}, {"_raw": "nope"}, {}],
    )
    assert failures == []
    assert out == [
        {"k": "a", "v": "1"},  # an optional group that did not take part adds nothing
        {"k": "b", "v": "2", "bang": "!"},
        {"_raw": "nope"},  # on-miss: keep is the default
        {},
    ]


def test_extract_default_field_is_raw():
    out, _, _ = run_actions(r"- extract: {pattern: '^(?P<level>\w+):'}", [{"_raw": "WARN: x"}])
    assert out == [{"_raw": "WARN: x", "level": "WARN"}]


def test_extract_unnamed_groups_with_fields_and_pattern_lists():
    out, _, _ = run_actions(
        r"- extract: {field: msg, pattern: ['^(\d+) (\d+)$', '^(\w+) (\w+)$'], fields: [a, b]}",
        [{"msg": "1 2"}, {"msg": "x y"}, {"msg": "z"}],
    )
    assert out == [
        {"msg": "1 2", "a": "1", "b": "2"},
        {"msg": "x y", "a": "x", "b": "y"},
        {"msg": "z"},
    ]


def test_extract_first_matching_pattern_wins_and_target_nests():
    out, _, _ = run_actions(
        r"- extract: {field: msg, pattern: ['^(?P<n>\d+)$', '^(?P<w>\w+) (?P<z>\w+)$'], target: p.q}",
        [{"msg": "x y"}, {"msg": "12"}],
    )
    assert out == [
        {"msg": "x y", "p": {"q": {"w": "x", "z": "y"}}},
        {"msg": "12", "p": {"q": {"n": "12"}}},
    ]


def test_extract_on_a_dotted_field_and_a_non_string_value():
    out, _, _ = run_actions(
        r"- extract: {field: a.b, pattern: '(?P<d>\d)'}",
        [{"a": {"b": 42}}, {"a": "str"}, {"a": {"b": None}}],
    )
    assert out == [{"a": {"b": 42}, "d": "4"}, {"a": "str"}, {"a": {"b": None}}]


def test_extract_on_miss_drop_counts_drops():
    out, _, counts = run_actions(
        r"- extract: {field: msg, pattern: '^(?P<n>\d+)$', on-miss: drop}",
        [{"msg": "x y"}, {"msg": "12"}, {}],
    )
    assert out == [{"msg": "12", "n": "12"}]
    assert counts[0] == {"stage": "0:extract", "in": 3, "out": 1, "dropped": 2, "errors": 0}


def test_extract_on_miss_error_sends_the_event_to_errors():
    out, failures, counts = run_actions(
        r"- extract: {field: msg, pattern: '^(?P<n>\d+)$', on-miss: error}",
        [{"msg": "x"}, {"msg": "1"}],
    )
    assert out == [{"msg": "1", "n": "1"}]
    assert failures == [("0:extract", "pattern did not match field 'msg'")]
    assert counts[0]["errors"] == 1


def test_extract_with_when():
    out, _, _ = run_actions(
        r"""- extract: {pattern: '(?P<n>\d+)', when: 'kind == "num"'}""",
        [{"_raw": "a1", "kind": "num"}, {"_raw": "b2", "kind": "txt"}],
    )
    assert out == [{"_raw": "a1", "kind": "num", "n": "1"}, {"_raw": "b2", "kind": "txt"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{pattern: '(\\d+)'}", "has no named groups: write (?P<name>...)"),
        ("{pattern: '(\\d+)', fields: [a, b]}", "has 1 groups but fields lists 2"),
        ("{pattern: '(?P<a>x'}", "extract.pattern: invalid regular expression"),
        (
            "{pattern: x, on-miss: ignore}",
            "extract.on-miss: Input should be 'keep', 'drop' or 'error'",
        ),
    ],
)
def test_extract_validation(body, message):
    (p,) = problems_of(actions_pipe(f"- extract: {body}"))
    assert message in p.message
    assert p.line == 5


# ------------------------------------------------------------------------------ chains


CHAIN = """
- add: {x: 1}
- set: {y: int(s)}
- filter: y > 1
- add: {z: done}
"""


@pytest.mark.parametrize("fuse", [True, False])
def test_a_chain_attributes_errors_and_drops_to_the_right_stage(fuse):
    events = [{"s": "5"}, {"s": "bad"}, {"s": "0"}, {"s": "9"}]
    out, failures, counts = run_actions(CHAIN, events, fuse=fuse)
    assert out == [
        {"s": "5", "x": 1, "y": 5, "z": "done"},
        {"s": "9", "x": 1, "y": 9, "z": "done"},
    ]
    assert failures == [("1:set", "int() cannot convert 'bad'")]
    assert counts == [
        {"stage": "0:add", "in": 4, "out": 4, "dropped": 0, "errors": 0},
        {"stage": "1:set", "in": 4, "out": 3, "dropped": 0, "errors": 1},
        {"stage": "2:filter", "in": 3, "out": 2, "dropped": 1, "errors": 0},
        {"stage": "3:add", "in": 2, "out": 2, "dropped": 0, "errors": 0},
    ]


def test_an_empty_batch_runs_nothing():
    out, failures, counts = run_actions(CHAIN, [])
    assert (out, failures) == ([], [])
    assert all(c["in"] == 0 for c in counts)


EXTRACT_THEN_FILTER = r"""
- extract: {field: _raw, pattern: '^(?P<level>\w+) (?P<code>\d+)?', remove: true}
- filter: level == "ERROR" and _raw == null and exists(code) and len(event) == 2
"""


@pytest.mark.parametrize("fuse", [True, False])
def test_a_filter_right_after_extract_sees_the_extracted_event(fuse):
    events = [
        {"_raw": "ERROR 500"},
        {"_raw": "ERROR "},  # no code: the optional group adds nothing
        {"_raw": "INFO 200"},
        {"_raw": "!!", "level": "ERROR", "code": "1"},  # a miss keeps the event as it was
        {"_raw": "ERROR 7", "level": "INFO"},  # the extracted value replaces the old one
    ]
    out, failures, counts = run_actions(EXTRACT_THEN_FILTER, events, fuse=fuse)
    assert failures == []
    assert out == [{"level": "ERROR", "code": "500"}, {"level": "ERROR", "code": "7"}]
    assert counts[1] == {"stage": "1:filter", "in": 5, "out": 2, "dropped": 3, "errors": 0}


@pytest.mark.parametrize("fuse", [True, False])
def test_extract_on_miss_drop_then_filter_then_set(fuse):
    out, failures, counts = run_actions(
        r"""
        - extract: {pattern: '^(?P<n>\d+)$', on-miss: drop}
        - filter: int(n) > 1
        - set: {double: int(n) * 2}
        """,
        [{"_raw": "1"}, {"_raw": "x"}, {"_raw": "5"}, {}],
        fuse=fuse,
    )
    assert failures == []
    assert out == [{"_raw": "5", "n": "5", "double": 10}]
    assert [c["dropped"] for c in counts] == [2, 1, 0]
