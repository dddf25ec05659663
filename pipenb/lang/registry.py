"""One registry of inputs, actions and outputs: it drives validation, the runtime and the docs.

A component is registered with a pydantic model of its options, an optional shorthand (how the
short forms ``- filter: EXPR`` or ``- remove: [a, b]`` become options), and a factory the engine
calls with validated options. Nothing else in pipenb keeps a list of component names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipenb.lang.catalog import BUILTINS
from pipenb.lang.types import Expr

Kind = Literal["input", "action", "output"]


def _alias(name: str) -> str:
    return name.replace("_", "-")


class Options(BaseModel):
    """Base of every component's options: unknown keys are errors; YAML uses dashes."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=_alias,
        populate_by_name=True,
        frozen=True,
        defer_build=True,  # build a model's validator on first use: start-up stays fast
    )


class ActionOptions(Options):
    """Every action takes ``when:``, an expression that limits it to some events."""

    when: Expr | None = None


@dataclass(frozen=True)
class Component:
    kind: Kind
    name: str
    options: type[Options]
    factory: Callable[..., Any]
    shorthand: Callable[[Any], dict[str, Any]] | None
    summary: str
    capability: str | None = None  # e.g. "exec" or "script": may be switched off per agent

    def normalise(self, raw: Any) -> Any:
        """Turn the YAML value into the options mapping (the shorthand decides how)."""
        if self.shorthand is not None:
            return self.shorthand(raw)
        if raw is None:
            return {}
        return raw


class Registry:
    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Component] = {}

    def register(
        self,
        kind: Kind,
        name: str,
        options: type[Options],
        *,
        shorthand: Callable[[Any], dict[str, Any]] | None = None,
        capability: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            doc = (factory.__doc__ or options.__doc__ or "").strip().splitlines()
            self._items[(kind, name)] = Component(
                kind, name, options, factory, shorthand, doc[0] if doc else "", capability
            )
            return factory

        return deco

    def get(self, kind: Kind, name: str) -> Component | None:
        key = (kind, name)
        if key not in self._items:
            module = _builtins().get(key)
            if module is None:
                return None
            importlib.import_module(module)
        return self._items.get(key)

    def names(self, kind: Kind) -> list[str]:
        return sorted({n for k, n in (*self._items, *_builtins()) if k == kind})

    def all(self) -> list[Component]:
        for module in set(_builtins().values()):
            importlib.import_module(module)
        return sorted(self._items.values(), key=lambda c: (c.kind, c.name))


registry = Registry()


def _builtins() -> dict[tuple[str, str], str]:
    return BUILTINS


def mapping_shorthand(reserved: set[str], key: str = "fields") -> Callable[[Any], dict[str, Any]]:
    """``- add: {a: 1}`` means ``- add: {fields: {a: 1}}``; reserved keys stay options."""

    def norm(raw: Any) -> Any:
        if isinstance(raw, dict) and key not in raw:
            opts = {k: v for k, v in raw.items() if k in reserved}
            fields = {k: v for k, v in raw.items() if k not in reserved}
            return {**opts, key: fields}
        return raw

    return norm


def list_shorthand(key: str = "fields") -> Callable[[Any], dict[str, Any]]:
    """``- remove: [a, b]`` (or a single name) means ``- remove: {fields: [a, b]}``."""

    def norm(raw: Any) -> Any:
        if isinstance(raw, list):
            return {key: raw}
        if isinstance(raw, str):
            return {key: [raw]}
        return raw

    return norm


def scalar_shorthand(key: str) -> Callable[[Any], dict[str, Any]]:
    """``- filter: EXPR`` means ``- filter: {key: EXPR}``."""

    def norm(raw: Any) -> Any:
        if isinstance(raw, dict):
            return raw
        return {key: raw}

    return norm
