"""Predicate pushdown: run a filter on a regex match before the event is built from it.

``extract`` followed by ``filter`` (or ``drop``) is the most common pipe shape, and usually the
filter keeps a few events in ten. Evaluated in order, every event pays for a dict of captures
and a merge into the event, then most are dropped. Pushed down, the filter reads the captured
groups straight from the match object and only the events it keeps are built. The result is the
same, event for event and count for count; where that cannot be guaranteed (optional groups, a
filter reading the whole event or using ``exists``, ``when:``, ``target``), nothing is pushed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from pipenb.engine.actions.extract import ExtractOptions, extract_code
from pipenb.engine.actions.filter import FilterOptions
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace, field_paths, to_source


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


def fuse_extract_filter(
    ex: ExtractOptions,
    flt: FilterOptions,
    keep_when_true: bool,
    *,
    changed: AbstractSet[str] = frozenset(),
    after_build: Sequence[str] = (),
    ns: Namespace | None = None,
) -> tuple[EventStep, EventStep] | None:
    """Two steps (the extract carrying the pushed filter, and an empty filter stage) or None.

    ``changed`` names groups whose field differs from the captured text once the event is built
    (grok's ``:int`` conversions and folded duplicates): a filter reading them is not pushed.
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
    pushed = [f"@+1 if {test.format(on_match)}:", "@+1     DROP+1"]
    missed = [f"@+1 if {test.format(on_event)}:", "@+1     DROP+1"] if ex.on_miss == "keep" else []
    code = extract_code(ex, ns, before_build=pushed, after_miss=missed, after_build=after_build)
    return EventStep(code=code, ns=ns), EventStep(code=[], ns=Namespace())
