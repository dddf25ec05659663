"""What a validated pipe is: plain dataclasses the engine, the server and the docs read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipenb.lang.registry import Component, Options
from pipenb.lang.source import Path, SourceMap


@dataclass(frozen=True)
class ComponentSpec:
    """One configured input, action or output, with where it was written."""

    component: Component
    options: Options
    path: Path

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def label(self) -> str:
        """How metrics and previews name this stage: ``2:extract`` for the third action."""
        if self.path and self.path[0] == "actions":
            return f"{self.path[1]}:{self.name}"
        if len(self.path) > 3 and self.path[0] == "outputs" and self.path[2] == "actions":
            return f"{self.path[1]}.{self.path[3]}:{self.name}"  # an output's own action
        return self.name


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any = None
    required: bool = False
    enum: tuple[Any, ...] | None = None
    type: str | None = None
    description: str = ""
    secret: bool = False  # encrypted at rest on the server, never shown (see server/secrets.py)


@dataclass(frozen=True)
class PipeTestCase:
    name: str
    input: list[Any]
    expect: list[dict[str, Any]] | None
    expect_count: int | None
    expect_errors: int | None
    params: dict[str, Any]
    path: Path
    #: ``expect: {OUTPUT: [events]}`` in a pipe with ``outputs:``: each output's events
    expect_outputs: dict[str, list[dict[str, Any]]] | None = None


@dataclass(frozen=True)
class RouteSpec:
    """One of ``outputs:``: where events that match ``when`` go, after the output's own actions.

    The output named ``default`` has no ``when``: it takes the events no other output took."""

    name: str
    when: Options | None  # FilterOptions of the ``when:`` expression; None matches every event
    output: ComponentSpec
    actions: list[ComponentSpec]
    path: Path

    @property
    def is_default(self) -> bool:
        return self.name == "default"


@dataclass
class PipeSpec:
    name: str
    description: str
    labels: list[str]
    params: dict[str, ParamSpec]
    input: ComponentSpec
    actions: list[ComponentSpec]
    output: ComponentSpec
    errors: ComponentSpec | None
    tests: list[PipeTestCase]
    values: dict[str, Any]
    source: str = ""
    file: str = "<pipe>"
    smap: SourceMap = field(default_factory=SourceMap)
    #: ``outputs:`` (empty when the pipe has one ``output:``, which is then ``output``); with
    #: routes, ``output`` is the first route's output
    routes: list[RouteSpec] = field(default_factory=list)
    route: str = "all"  # "all": every output whose when matches; "first": the first one
    #: processes that run the actions: a number, or "auto" (one per core); the engine runs
    #: one when the pipe cannot be split (``pipenb.engine.chunks.parallel_plan`` says why)
    workers: int | str = 1

    @property
    def all_outputs(self) -> list[ComponentSpec]:
        """Every output events go to (not ``errors:``), in the order written."""
        return [r.output for r in self.routes] if self.routes else [self.output]

    @property
    def capabilities(self) -> set[str]:
        """Capabilities an agent must allow to run this pipe (``exec``, ``script``)."""
        route_actions = [a for r in self.routes for a in r.actions]
        parts = [self.input, *self.actions, *route_actions, *self.all_outputs]
        caps = {c.component.capability for c in parts}
        return {c for c in caps if c}
