"""The pipe language: YAML with positions, the component registry, validation, templates and
the safe expression language.

Nothing is imported eagerly: ``import pipenb.lang.units`` must not pay for pydantic and the
registry. The names below are loaded on first use (PEP 562), so ``from pipenb.lang import
load_pipe`` keeps working.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipenb.lang.registry import registry
    from pipenb.lang.spec import ComponentSpec, ParamSpec, PipeSpec, PipeTestCase
    from pipenb.lang.validate import load_pipe

_LAZY = {
    "ComponentSpec": "pipenb.lang.spec",
    "ParamSpec": "pipenb.lang.spec",
    "PipeSpec": "pipenb.lang.spec",
    "PipeTestCase": "pipenb.lang.spec",
    "load_pipe": "pipenb.lang.validate",
    "registry": "pipenb.lang.registry",
}

__all__ = ["ComponentSpec", "ParamSpec", "PipeSpec", "PipeTestCase", "load_pipe", "registry"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipenb.lang' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _Package(ModuleType):
    """``pipenb.lang.registry`` names the registry, not its module: importing the submodule
    sets the package attribute to the module, so the name is a property that wins over that."""

    @property
    def registry(self) -> Any:
        return _importlib.import_module("pipenb.lang.registry").registry

    @registry.setter
    def registry(self, _module: Any) -> None:
        pass  # the import system recording the submodule; sys.modules still has it


_sys.modules[__name__].__class__ = _Package
