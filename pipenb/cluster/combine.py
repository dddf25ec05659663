"""Partial aggregates: what one partition's ``aggregate`` holds, and how two of them combine.

A partition runs the chain up to and including the ``aggregate`` step, whose clock is fixed to
the run's start (a data set read at once arrives all at one time, so every partition puts its
events in the same window). Instead of emitting, it hands back its groups as plain data. Partials
combine pairwise, in partition order (a tree: ``(p0+p1)+(p2+p3)``...), and the last one is
installed back into an ``Aggregator``, whose own ``_close`` emits the window: the same code that
emits windows in a single process, so results have the same shape and order.

Counts, sums, minima and maxima combine exactly. Percentiles are exact too: each partial keeps
its values and the combined list is sorted once at the end; memory grows with the values of a
window, as it does in one process. ``max-groups`` bounds the groups of each partition's window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.actions.aggregate import Aggregator, _Group, _Stats


@dataclass
class Partial:
    start: float | None = None
    #: key -> (group values, count, {field: (n, sum, min, max, values or None)}), in the order
    #: the groups first appeared
    groups: dict[Any, tuple[tuple, int, dict[str, tuple]]] = field(default_factory=dict)


def partial_of(agg: Aggregator) -> Partial:
    groups = {
        key: (
            g.values,
            g.count,
            {f: (s.n, s.sum, s.min, s.max, s.values) for f, s in g.stats.items()},
        )
        for key, g in agg.groups.items()
    }
    return Partial(agg.start, groups)


def _stats(a: tuple, b: tuple) -> tuple:
    n1, s1, lo1, hi1, v1 = a
    n2, s2, lo2, hi2, v2 = b
    if n1 == 0:
        return b
    if n2 == 0:
        return a
    values = None if v1 is None else [*v1, *(v2 or [])]
    return (n1 + n2, s1 + s2, min(lo1, lo2), max(hi1, hi2), values)


def combine(a: Partial, b: Partial) -> Partial:
    """``a`` then ``b``: groups keep the order they first appeared in."""
    starts = [s for s in (a.start, b.start) if s is not None]
    groups = dict(a.groups)
    for key, (values, count, stats) in b.groups.items():
        mine = groups.get(key)
        if mine is None:
            groups[key] = (values, count, stats)
            continue
        merged = {f: _stats(mine[2][f], stats[f]) for f in mine[2]}
        groups[key] = (mine[0], mine[1] + count, merged)
    return Partial(min(starts) if starts else None, groups)


def install(agg: Aggregator, p: Partial) -> None:
    """Make ``agg`` hold the combined window, so its own ``flush`` emits it."""
    agg.groups = {}
    for key, (values, count, stats) in p.groups.items():
        g = _Group(values, agg.fields)
        g.count = count
        for f, (n, total, lo, hi, vals) in stats.items():
            s = _Stats(vals is not None)
            s.n, s.sum, s.min, s.max = n, total, lo, hi
            if vals is not None:
                s.values = list(vals)
            g.stats[f] = s
        agg.groups[key] = g
    agg.start = p.start
    agg.n = sum(c for _, c, _ in p.groups.values())
