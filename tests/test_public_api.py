"""The public API is exactly what ``pipenb`` exports, and every exported name works."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import pipenb

from support.cli import cli_env

PUBLIC = [
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


def test_all_is_exactly_the_public_set():
    assert list(pipenb.__all__) == PUBLIC
    assert len(set(pipenb.__all__)) == len(pipenb.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable(name):
    module = importlib.import_module("pipenb")
    assert getattr(module, name) is not None
    ns: dict = {}
    exec(f"from pipenb import {name}", ns)
    assert ns[name] is getattr(pipenb, name)


def test_star_import_gives_the_public_set():
    ns: dict = {}
    exec("from pipenb import *", ns)
    assert sorted(k for k in ns if k != "__builtins__") == sorted(PUBLIC)


def test_public_names_come_from_where_they_are_defined():
    from pipenb.client import Client
    from pipenb.dashboard import Dashboard
    from pipenb.engine.pipetests import PipeTestReport, PipeTestResult
    from pipenb.engine.preview import PreviewResult, StagePreview
    from pipenb.engine.runtime import Engine
    from pipenb.pipe import Pipe

    assert pipenb.Pipe is Pipe
    assert pipenb.Client is Client
    assert pipenb.Dashboard is Dashboard
    assert pipenb.Engine is Engine
    assert pipenb.PreviewResult is PreviewResult
    assert pipenb.StagePreview is StagePreview
    assert pipenb.PipeTestReport is PipeTestReport
    assert pipenb.PipeTestResult is PipeTestResult


def test_the_exception_tree():
    for name in (
        "PipeSyntaxError",
        "PipeRuntimeError",
        "EventError",
        "PipeTestFailure",
        "ApiError",
        "UsageError",
    ):
        assert issubclass(getattr(pipenb, name), pipenb.PipenbError), name
    assert issubclass(pipenb.AuthError, pipenb.ApiError)
    assert issubclass(pipenb.PipenbError, Exception)
    err = pipenb.ApiError(404, "not_found", "no such pipe", [{"name": "x"}])
    assert (err.status, err.code, err.message, err.details) == (
        404,
        "not_found",
        "no such pipe",
        [{"name": "x"}],
    )
    assert str(err) == "404 not_found: no such pipe"


def test_version_is_a_string():
    assert isinstance(pipenb.__version__, str)
    assert pipenb.__version__.count(".") >= 1


def test_unknown_attributes_raise_attribute_error():
    with pytest.raises(AttributeError):
        pipenb.NoSuchThing  # noqa: B018
    assert sorted(dir(pipenb)) == sorted(PUBLIC)


def test_a_fresh_interpreter_imports_every_public_name():
    code = "import pipenb\nfor n in pipenb.__all__: getattr(pipenb, n)\nprint(len(pipenb.__all__))"
    res = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(len(PUBLIC))


def test_the_agent_and_engine_errors_are_in_the_tree():
    from pipenb.errors import AgentError, AgentTurnedAway, RetryableOutputError, ServerError

    assert issubclass(RetryableOutputError, pipenb.PipeRuntimeError)
    assert issubclass(ServerError, pipenb.ApiError)
    assert issubclass(AgentTurnedAway, AgentError) and issubclass(AgentError, pipenb.PipenbError)
    assert (AgentError.exit_code, AgentTurnedAway.exit_code) == (1, 3)
    err = ServerError(503, "busy", retry_after=2.0, code="unavailable")
    assert (err.status, err.code, err.message, err.retry_after, err.tls) == (
        503,
        "unavailable",
        "busy",
        2.0,
        False,
    )
    assert str(err) == "503: busy"  # the agent's log line, as before it was an ApiError
    assert str(ServerError(0, "connection refused", tls=True)) == "connection refused"


def test_the_language_package_loads_nothing_eagerly():
    """``import pipenb.lang.units`` pays for no pydantic and no engine; the package's names
    still load on first use, and a submodule is never shadowed by a name of the package."""
    code = (
        "import sys, pipenb.lang.units\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'"
        " or m.startswith(('pipenb.engine', 'pipenb.lang.registry')))\n"
        "assert not heavy, heavy\n"
        "from pipenb.lang import types, load_pipe, registry, PipeSpec\n"
        "assert types.__name__ == 'pipenb.lang.types', types\n"
        "import pipenb.lang.registry as r\n"
        "assert registry is r and type(registry).__name__ == 'Registry', registry\n"
        "assert load_pipe('name: p\\ninput: {echo: {lines: [a]}}\\noutput: {discard: {}}')"
        ".name == 'p'\n"
        "assert not any(m.startswith('pipenb.server') for m in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
