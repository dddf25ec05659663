"""pipenb: prototype a data pipeline in a notebook, preview it as DataFrames, deploy it to agents.

The public API is what this module exports; everything else is an implementation detail. Names
are imported on first use, so ``pipenb run`` does not pay for preview or test machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipenb.errors import (
    ApiError,
    AuthError,
    EventError,
    PipenbError,
    PipeRuntimeError,
    PipeSyntaxError,
    PipeTestFailure,
    Problem,
    UsageError,
)

__version__ = "0.1.0"

_LAZY = {
    "Client": "pipenb.client",
    "Dashboard": "pipenb.dashboard",
    "Engine": "pipenb.engine.runtime",
    "Pipe": "pipenb.pipe",
    "PipeTestReport": "pipenb.engine.pipetests",
    "PipeTestResult": "pipenb.engine.pipetests",
    "PreviewResult": "pipenb.engine.preview",
    "StagePreview": "pipenb.engine.preview",
}

if TYPE_CHECKING:  # pragma: no cover
    from pipenb.client import Client
    from pipenb.dashboard import Dashboard
    from pipenb.engine.pipetests import PipeTestReport, PipeTestResult
    from pipenb.engine.preview import PreviewResult, StagePreview
    from pipenb.engine.runtime import Engine
    from pipenb.pipe import Pipe


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipenb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pipenb``: register ``%%pipe`` and ``%pipe`` (imported only now)."""
    from pipenb.magics import PipeMagics

    magics = PipeMagics(shell=ipython, config=ipython.config)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)  # so %config PipeMagics.limit = 50 reaches it


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext pipenb``: remove the magics again."""
    from pipenb.magics import PipeMagics

    table = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        table[kind].pop("pipe", None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, PipeMagics)]


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ApiError",
    "AuthError",
    "Client",
    "Dashboard",
    "Engine",
    "EventError",
    "Pipe",
    "PipeRuntimeError",
    "PipeSyntaxError",
    "PipeTestFailure",
    "PipeTestReport",
    "PipeTestResult",
    "PipenbError",
    "PreviewResult",
    "Problem",
    "StagePreview",
    "UsageError",
    "__version__",
]
