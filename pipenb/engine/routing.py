"""Which outputs an event goes to: ``outputs:`` with ``when:``, ``route: all|first``, ``default``.

One function for the engine, preview and pipe tests, so they cannot disagree about routing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.base import Event
from pipenb.engine.steps import deep_copy


@dataclass
class Routed:
    """Each output's share, in route order; events that matched no ``when:``; failed tests."""

    shares: list[list[Event]]
    unrouted: int = 0
    failures: list[tuple[Event, str, BaseException]] = field(default_factory=list)


def route_events(routes: list[Any], mode: str, events: list[Event]) -> Routed:
    """Split ``events`` over ``routes`` (``RouteParts``). An event sent to several outputs that
    have actions of their own is copied, so one output's actions do not change another's."""
    first = mode == "first"
    res = Routed([[] for _ in routes])
    shares = res.shares
    default = next((i for i, r in enumerate(routes) if r.is_default), None)
    owned = any(r.chain.segments for r in routes)
    for e in events:
        hit = 0
        for i, r in enumerate(routes):
            if r.is_default:
                continue
            try:
                ok = r.match is None or r.match(e)
            except Exception as exc:  # a bad event (a when: over a wrong type), not a bad pipe
                res.failures.append((e, f"outputs.{r.name}.when", exc))
                hit = -1
                break
            if ok:
                shares[i].append(deep_copy([e])[0] if hit and owned else e)
                hit += 1
                if first:
                    break
        if hit == 0:
            res.unrouted += 1
            if default is not None:
                shares[default].append(e)
    return res
