"""From a validated PipeSpec to runnable parts: input, compiled action chain, outputs."""

from __future__ import annotations

from dataclasses import dataclass

from pipenb.engine.base import Input, Output, RunContext
from pipenb.engine.steps import Chain, Step, build_chain
from pipenb.errors import PipeRuntimeError
from pipenb.lang.spec import ComponentSpec, PipeSpec


@dataclass
class Parts:
    input: Input
    chain: Chain
    output: Output
    errors: Output | None


def check_capabilities(spec: PipeSpec, ctx: RunContext) -> None:
    refused = sorted(spec.capabilities - set(ctx.allow))
    if refused:
        raise PipeRuntimeError(
            f"pipe {spec.name!r} uses {', '.join(refused)}, which is disabled here "
            f"(agents allow scripts only with --allow-scripts, and exec unless --disable exec)"
        )


def compile_steps(spec: PipeSpec, ctx: RunContext, *, optimize: bool = True) -> list[Step]:
    """One step per action; with ``optimize``, an extract+filter pair runs pushed down."""
    from pipenb.engine.pushdown import fuse_extract_filter

    actions = spec.actions
    steps: list[Step] = []
    i = 0
    while i < len(actions):
        a = actions[i]
        nxt = actions[i + 1] if i + 1 < len(actions) else None
        if optimize and a.name == "extract" and nxt is not None and nxt.name in ("filter", "drop"):
            pair = fuse_extract_filter(a.options, nxt.options, keep_when_true=nxt.name == "filter")  # type: ignore[arg-type]
            if pair is not None:
                steps.extend(pair)
                i += 2
                continue
        steps.append(a.component.factory(a.options, ctx))
        i += 1
    return steps


def compile_chain(spec: PipeSpec, ctx: RunContext, *, fuse: bool = True) -> Chain:
    """The runnable action chain; ``fuse=False`` (preview) keeps every stage separate."""
    steps = compile_steps(spec, ctx, optimize=fuse)
    return build_chain([a.label for a in spec.actions], steps, fuse=fuse)


def build(spec: PipeSpec, ctx: RunContext, *, fuse: bool = True) -> Parts:
    check_capabilities(spec, ctx)

    def make(c: ComponentSpec):
        return c.component.factory(c.options, ctx)

    return Parts(
        input=make(spec.input),
        chain=compile_chain(spec, ctx, fuse=fuse),
        output=make(spec.output),
        errors=make(spec.errors) if spec.errors else None,
    )
