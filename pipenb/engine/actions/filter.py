"""``filter`` keeps events where an expression is true; ``drop`` removes them."""

from __future__ import annotations

from pipenb.engine.actions.common import step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.lang.expressions import Namespace, to_source
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand
from pipenb.lang.types import Expr


class FilterOptions(ActionOptions):
    """``- filter: EXPR`` or ``- filter: {expr: EXPR, when: EXPR}``."""

    expr: Expr


@registry.register("action", "filter", FilterOptions, shorthand=scalar_shorthand("expr"))
def filter_action(opts: FilterOptions, ctx: RunContext) -> EventStep:
    """Keep the events for which the expression is true; count the rest as dropped."""
    ns = Namespace()
    return step(opts, [f"if not ({to_source(opts.expr, ns)}):\n    DROP"], ns)


@registry.register("action", "drop", FilterOptions, shorthand=scalar_shorthand("expr"))
def drop_action(opts: FilterOptions, ctx: RunContext) -> EventStep:
    """Drop the events for which the expression is true (the inverse of filter)."""
    ns = Namespace()
    return step(opts, [f"if {to_source(opts.expr, ns)}:\n    DROP"], ns)
