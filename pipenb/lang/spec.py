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

    @property
    def capabilities(self) -> set[str]:
        """Capabilities an agent must allow to run this pipe (``exec``, ``script``)."""
        caps = {c.component.capability for c in [self.input, *self.actions, self.output]}
        return {c for c in caps if c}
