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


def compile_steps(spec: PipeSpec, ctx: RunContext) -> list[Step]:
    return [a.component.factory(a.options, ctx) for a in spec.actions]


def compile_chain(spec: PipeSpec, ctx: RunContext, *, fuse: bool = True) -> Chain:
    return build_chain([a.label for a in spec.actions], compile_steps(spec, ctx), fuse=fuse)


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
