"""From a validated PipeSpec to runnable parts: input, compiled action chain, outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.base import Event, Input, Output, RunContext
from pipenb.engine.steps import Chain, Step, build_chain
from pipenb.errors import PipeRuntimeError
from pipenb.lang.expressions import Namespace, to_source
from pipenb.lang.spec import ComponentSpec, PipeSpec


@dataclass
class RouteParts:
    """One of several outputs: its ``when`` test, its own action chain, the output."""

    name: str
    match: Callable[[Event], Any] | None  # None: every event (or, for ``default``, the rest)
    chain: Chain
    output: Output
    is_default: bool = False


@dataclass
class Parts:
    input: Input
    chain: Chain
    output: Output
    errors: Output | None
    steps: list[Step] | None = None  # as compiled, shared by the fused chain and a tap's twin
    routes: list[RouteParts] = field(default_factory=list)  # outputs: (empty for output:)


def compile_when(when: Any) -> Callable[[Event], Any]:
    """A route's ``when:`` (FilterOptions) as a function of the event."""
    ns = Namespace()
    src = to_source(when.expr, ns)
    code = compile(f"lambda e: {src}", "<pipenb-route>", "eval")
    return eval(code, ns.values)


def build_routes(spec: PipeSpec, ctx: RunContext, *, fuse: bool = True) -> list[RouteParts]:
    """Each output of ``outputs:`` with its compiled actions (outputs are built here too)."""
    out = []
    for r in spec.routes:
        steps = [a.component.factory(a.options, ctx) for a in r.actions]
        chain = build_chain([a.label for a in r.actions], steps, fuse=fuse)
        match = compile_when(r.when) if r.when is not None else None
        output = r.output.component.factory(r.output.options, ctx)
        out.append(RouteParts(r.name, match, chain, output, r.is_default))
    return out


def check_capabilities(spec: PipeSpec, ctx: RunContext) -> None:
    refused = sorted(spec.capabilities - set(ctx.allow))
    if refused:
        raise PipeRuntimeError(
            f"pipe {spec.name!r} uses {', '.join(refused)}, which is disabled here "
            "(an agent allows them only where its policy says so: --allow-scripts, "
            "--allow-exec, or scripts: and exec: in its --policy file)"
        )


def compile_steps(spec: PipeSpec, ctx: RunContext) -> list[Step]:
    """One step per action, as written."""
    return [a.component.factory(a.options, ctx) for a in spec.actions]


def optimize(spec: PipeSpec, steps: list[Step]) -> list[Step]:
    """The steps to fuse: an extract+filter pair runs pushed down. Stateful steps are kept as
    the same objects, so a chain built from ``steps`` unfused (for a tap) shares their state."""

    actions = spec.actions
    out: list[Step] = []
    i = 0
    while i < len(actions):
        a = actions[i]
        nxt = actions[i + 1] if i + 1 < len(actions) else None
        if nxt is not None and nxt.name in ("filter", "drop"):
            pair = _pushed(a, nxt)
            if pair is not None:
                out.extend(pair)
                i += 2
                continue
        out.append(steps[i])
        i += 1
    return out


def _pushed(a: ComponentSpec, flt: ComponentSpec) -> tuple[Step, Step] | None:
    """An extract (or grok, or parse as grok) and the filter after it, fused; or None."""
    from pipenb.engine.actions.extract import ExtractOptions
    from pipenb.engine.actions.filter import FilterOptions
    from pipenb.engine.pushdown import fuse_extract_filter

    fo = flt.options
    assert isinstance(fo, FilterOptions)  # the options of filter and of drop
    keep = flt.name == "filter"
    if a.name == "extract":
        assert isinstance(a.options, ExtractOptions)
        return fuse_extract_filter(a.options, fo, keep_when_true=keep)
    is_grok = a.name == "grok" or (
        a.name == "parse" and getattr(a.options, "format", None) == "grok"
    )
    if not is_grok:
        return None
    from pipenb.engine.actions.grok import after_match, extract_of, match_checks
    from pipenb.lang.expressions import Namespace

    ex, grok = extract_of(a.options)
    ns = Namespace()
    after, changed = after_match(grok, ns)
    return fuse_extract_filter(
        ex,
        fo,
        keep_when_true=keep,
        changed=changed,
        after_build=after,
        checks=match_checks(grok, ns),
        ns=ns,
    )


def compile_chain(
    spec: PipeSpec, ctx: RunContext, *, fuse: bool = True, steps: list[Step] | None = None
) -> Chain:
    """The runnable action chain; ``fuse=False`` (preview, taps) keeps every stage separate."""
    steps = compile_steps(spec, ctx) if steps is None else steps
    names = [a.label for a in spec.actions]
    if fuse:
        return build_chain(names, optimize(spec, steps), fuse=True)
    return build_chain(names, steps, fuse=False)


def build(spec: PipeSpec, ctx: RunContext, *, fuse: bool = True) -> Parts:
    check_capabilities(spec, ctx)

    def make(c: ComponentSpec) -> Any:
        return c.component.factory(c.options, ctx)

    steps = compile_steps(spec, ctx)
    routes = build_routes(spec, ctx, fuse=fuse) if spec.routes else []
    return Parts(
        input=make(spec.input),
        chain=compile_chain(spec, ctx, fuse=fuse, steps=steps),
        output=routes[0].output if routes else make(spec.output),
        errors=make(spec.errors) if spec.errors else None,
        steps=steps,
        routes=routes,
    )
