"""Predicate pushdown: run a filter on a regex match before the event is built from it.

``extract`` followed by ``filter`` (or ``drop``) is the most common pipe shape, and usually the
filter keeps a few events in ten. Evaluated in order, every event pays for a dict of captures
and a merge into the event, then most are dropped. Pushed down, the filter reads the captured
groups straight from the match object and only the events it keeps are built. The result is the
same, event for event and count for count; where that cannot be guaranteed (optional groups, a
filter reading the whole event or using ``exists``, ``when:``, ``target``), nothing is pushed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from pipenb.engine.actions.extract import ExtractOptions, extract_code
from pipenb.engine.actions.filter import FilterOptions
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace, field_path_of, field_paths, parse, to_source


def always_set_groups(pattern: str) -> set[str]:
    """Named groups that hold a string whenever the pattern matches."""
    parsed = sre_parse.parse(pattern)
    optional: set[int] = set()

    def walk(sub: Any, maybe: bool) -> None:
        for op, av in sub:
            name = str(op)
            if name == "SUBPATTERN":
                group, _, _, p = av
                if group is not None and maybe:
                    optional.add(group)
                walk(p, maybe)
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                lo, _, p = av
                walk(p, maybe or lo == 0)
            elif name == "BRANCH":
                for p in av[1]:
                    walk(p, True)
            elif name in ("ASSERT", "ASSERT_NOT", "ATOMIC_GROUP"):
                p = av[1] if name != "ATOMIC_GROUP" else av
                walk(p, True)
            elif name == "GROUPREF_EXISTS":
                walk(av[1], True)
                if av[2] is not None:
                    walk(av[2], True)

    walk(parsed, False)
    groups = re.compile(pattern).groupindex
    return {n for n, i in groups.items() if i not in optional}


def needed_strings(expr: str, groups: AbstractSet[str]) -> tuple[str, ...]:
    """Strings one of which the text a pattern searched must contain for ``expr`` to be true,
    when the fields in ``groups`` hold what the pattern captured; () when none are known.

    Why: a capture is a piece of the text it came from, so if ``level == "ERROR"`` must hold,
    a line without ``ERROR`` in it cannot be kept, and the pattern need not run on it (a
    substring search costs a fraction of a match; most lines of an extract-then-filter pipe are
    dropped). Strings are given only for an expression that cannot fail on any event: made of
    ``==``, ``!=``, ``in``/``not in`` a literal list, ``and``, ``or``, ``not``, field paths and
    constants (a failure must stay a failure, never become a drop). Each string comes from a
    test of a field in ``groups`` against a string: ``f == "s"`` needs ``s``, ``f in ["a",
    "b"]`` needs ``a`` or ``b``, ``x and y`` what either needs, ``x or y`` what both need,
    together. A field that is absent makes every such test false, so on an event the pattern
    missed (none of the groups set) the expression is false too."""
    try:
        tree = parse(expr)
    except ValueError:
        return ()
    if not _cannot_fail(tree):
        return ()
    found = _needs(tree, groups)
    if not found or "" in found:
        return ()
    return tuple(sorted(found))


def _string_literals(node: ast.AST) -> frozenset[str] | None:
    """The strings of a literal string or list, tuple or set of strings; else None."""
    if isinstance(node, ast.Constant):
        return frozenset([node.value]) if isinstance(node.value, str) else None
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and node.elts:
        out: set[str] = set()
        for el in node.elts:
            if not (isinstance(el, ast.Constant) and isinstance(el.value, str)):
                return None
            out.add(el.value)
        return frozenset(out)
    return None


def _constant_list(node: ast.AST) -> bool:
    """A literal list, tuple or set of constants (the engine tests membership in a frozenset:
    a string or null is never refused by one)."""
    return isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(
        isinstance(el, (ast.Constant, ast.Name)) for el in node.elts
    )


def _plain(node: ast.AST) -> bool:
    """A field path or a constant: evaluating it cannot fail."""
    if isinstance(node, ast.Constant) or field_path_of(node) is not None:
        return True
    return isinstance(node, ast.Name)  # (true, false, null; any other name is a field)


def _cannot_fail(node: ast.AST) -> bool:
    """Made only of what cannot raise on any event (``in`` only with a literal list of
    hashable constants: the engine tests membership in a frozenset)."""
    if isinstance(node, ast.BoolOp):
        return all(_cannot_fail(v) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _cannot_fail(node.operand)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = node.left, node.comparators[0]
        if isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            return _plain(left) and _plain(right)
        if isinstance(node.ops[0], (ast.In, ast.NotIn)):  # (``in "text"`` can fail: no)
            return _plain(left) and _constant_list(right)
        return False
    return _plain(node)


def _needs(node: ast.AST, groups: AbstractSet[str]) -> frozenset[str] | None:
    """What ``node`` needs (see ``needed_strings``), or None."""
    if isinstance(node, ast.BoolOp):
        parts = [_needs(v, groups) for v in node.values]
        if isinstance(node.op, ast.And):
            return next((p for p in parts if p), None)
        if all(parts):
            return frozenset().union(*parts)  # type: ignore[arg-type]
        return None
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return None
    op, left, right = node.ops[0], node.left, node.comparators[0]
    if isinstance(op, ast.Eq):
        if isinstance(left, ast.Constant):
            left, right = right, left
        strings = _string_literals(right) if isinstance(right, ast.Constant) else None
    elif isinstance(op, ast.In):
        strings = _string_literals(right) if not isinstance(right, ast.Constant) else None
    else:
        return None
    path = field_path_of(left)
    if strings is None or path is None or len(path) != 1 or path[0] not in groups:
        return None
    return strings


def fuse_extract_filter(
    ex: ExtractOptions,
    flt: FilterOptions,
    keep_when_true: bool,
    *,
    changed: AbstractSet[str] = frozenset(),
    after_build: Sequence[str] = (),
    checks: Sequence[str] = (),
    ns: Namespace | None = None,
) -> tuple[EventStep, EventStep] | None:
    """Two steps (the extract carrying the pushed filter, and an empty filter stage) or None.

    ``changed`` names groups whose field differs from the captured text once the event is built
    (grok's ``:int`` conversions and folded duplicates): a filter reading them is not pushed.
    ``checks``: statements on the match that raise where ``after_build`` might (grok's
    conversions, ``grok.match_checks``); the filter is not decided on a match they raise on.
    ``after_build`` and ``ns`` carry the code (and its constants) that makes those changes."""
    if ex.when or flt.when or ex.target or ex.fields is not None or len(ex.patterns) != 1:
        return None
    groups = always_set_groups(ex.patterns[0]) - set(changed)
    all_groups = set(re.compile(ex.patterns[0]).groupindex)
    paths = field_paths(flt.expr)
    for keys in paths:
        if not keys or keys[0] == "<exists>":
            return None
        root = keys[0]
        if root in all_groups and (root not in groups or len(keys) > 1):
            return None
        if root in changed:
            return None
        if ex.remove and root == ex.field.split(".")[0]:
            return None

    ns = ns or Namespace()

    def from_match(keys: tuple) -> str | None:
        return f"_m[{keys[0]!r}]" if keys[0] in groups else None

    on_match = to_source(flt.expr, ns, fields=from_match)
    on_event = to_source(flt.expr, ns)
    test = "not ({})" if keep_when_true else "{}"
    # A filter that fails on the match (``int(x)`` of a word) runs again once the event is
    # built, and fails there: the dead letter then holds the event the filter was given, with
    # the captures, as unpushed (``_drop`` None: not decided on the match). So does one on a
    # match the build would fail on (``checks``): the build fails first, as unpushed, instead
    # of the filter dropping the event.
    pushed = [
        "@+1 try:",
        f"@+1     _drop = {test.format(on_match)}",
        *(["@+1     if _drop:"] if checks else []),  # (a kept event is built and checked anyway)
        *[f"@+1         {sub}" for stmt in checks for sub in stmt.split("\n")],
        "@+1 except Exception:",
        "@+1     _drop = None",
        "@+1 if _drop:",
        "@+1     DROP+1",
    ]
    undecided = [f"@+1 if _drop is None and {test.format(on_event)}:", "@+1     DROP+1"]
    missed = [f"@+1 if {test.format(on_event)}:", "@+1     DROP+1"] if ex.on_miss == "keep" else []
    # A missed event goes on as it was, so a text without the strings the filter needs may be
    # dropped unsearched only where the missed event fails the filter too: an event holding
    # nothing but the field searched, a string (a line as read), and none of the captured fields.
    # (``on-miss`` drop or error: a miss is counted by the extract, or fails: not the same.)
    needs: tuple[str, ...] = ()
    before_search: list[str] = []
    field = ex.field
    # (not with ``checks``: a line the build would fail on must reach the build)
    if keep_when_true and ex.on_miss == "keep" and "." not in field and not checks:
        needs = needed_strings(flt.expr, groups - {field})
    if needs:
        # (a string as read: the filter cannot fail on the bare event then; on a list it could)
        absent = none_of(needs, "_v")
        before_search = [f"{BARE_SKIP}isinstance(_v, _str) and {absent}:\n@+1     DROP+1"]
    code = extract_code(
        ex,
        ns,
        before_search=before_search,
        before_build=pushed,
        after_miss=missed,
        after_build=[*after_build, *undecided],
    )
    return EventStep(code=code, ns=ns, needs_one_of=needs), EventStep(code=[], ns=Namespace())


def none_of(needs: Sequence[str], var: str) -> str:
    """Python source: the string ``var`` holds none of ``needs``."""
    return " and ".join(f"{s!r} not in {var}" for s in needs)


#: how the statement that drops a bare event unsearched begins (``chunks._raw_first``, which
#: knows every event is bare, puts a test of its own in its place)
BARE_SKIP = "@+1 if len(e) == 1 and "
