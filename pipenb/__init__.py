"""pipenb: prototype a data pipeline in a notebook, preview it as DataFrames, deploy it to agents.

The public API is what this module exports; everything else is an implementation detail.
"""

from pipenb.engine.pipetests import PipeTestReport, PipeTestResult
from pipenb.engine.preview import PreviewResult, StagePreview
from pipenb.engine.runtime import Engine
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
from pipenb.pipe import Pipe

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthError",
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
