"""``script``: a Python function ``process(event)`` for what the other actions cannot say.

Capability ``script``: the code runs with the worker's rights, so agents refuse it unless their
policy allows it (``scripts: true``, ``--allow-scripts``). Validation only compiles the code
(the server never runs it); it is run when a pipe using it is built, in the process that runs
the pipe.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable
from typing import Any

from pydantic import field_validator, model_validator

from pipenb.engine.base import Event, RunContext
from pipenb.engine.steps import BatchStep
from pipenb.errors import EventError, PipeRuntimeError
from pipenb.lang.expressions import compile_expression
from pipenb.lang.registry import ActionOptions, registry, scalar_shorthand

FILENAME = "<script>"


class ScriptOptions(ActionOptions):
    """``- script: {code: "def process(event): ..."}`` or ``- script: {file: path.py}``.

    The code must define ``process(event)``, which returns the event (changed or not), a new
    event, a list of events (several out, or none), or None (drops it). The module's top level
    runs once, when the pipe starts; so does ``file``, read then (a relative path is relative to
    the working directory of the process running the pipe). An exception in ``process`` sends
    the event to ``errors:`` with the exception's message; so does returning something else than
    an object, a list of objects or None. ``code`` is checked when the pipe is validated: a
    syntax error, or no ``process``, is reported there.
    """

    code: str | None = None
    file: str | None = None

    @field_validator("code")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            check_source(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ScriptOptions:
        if (self.code is None) == (self.file is None):
            raise ValueError("give either code: (Python source) or file: (a .py path)")
        return self


def check_source(code: str, filename: str = FILENAME) -> ast.Module:
    """Compile-check ``code`` (never run it) and make sure it defines ``process``."""
    try:
        tree = ast.parse(code, filename)
        compile(tree, filename, "exec")  # what only the compiler checks: 'break' outside a loop
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        raise ValueError(f"Python syntax error in the script at {where}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError("the script is nested too deeply for Python to compile") from None
    defined = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "process":
            defined = True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined = defined or any(isinstance(t, ast.Name) and t.id == "process" for t in targets)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined = defined or any((a.asname or a.name) == "process" for a in node.names)
    if not defined:
        raise ValueError("the script must define a function process(event)")
    return tree


def load_process(code: str, filename: str = FILENAME) -> Callable[[Event], Any]:
    """Run the script's top level once and return its ``process``."""
    check_source(code, filename)
    module: dict[str, Any] = {"__name__": "pipenb_script", "__file__": filename}
    try:
        exec(compile(code, filename, "exec"), module)
    except Exception as exc:
        raise PipeRuntimeError(
            f"script: the code failed while loading: {type(exc).__name__}: {exc}"
        ) from exc
    fn = module.get("process")
    if not callable(fn):
        raise PipeRuntimeError("script: process is not a function")
    return fn


def _message(exc: BaseException, filename: str) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (script line {line})" if line is not None else ""
    return f"script: {type(exc).__name__}: {exc}{where}"


def _bad_result(r: Any) -> str:
    what = type(r).__name__
    if isinstance(r, list):
        bad = next(x for x in r if not isinstance(x, dict))
        what = f"a list with an item of type {type(bad).__name__}"
    return (
        f"script: process returned {what}; return the event (a dict), a list of events, "
        "or None to drop it"
    )


@registry.register(
    "action", "script", ScriptOptions, shorthand=scalar_shorthand("code"), capability="script"
)
def script_action(opts: ScriptOptions, ctx: RunContext) -> BatchStep:
    """Run a Python function ``process(event) -> event | list | None`` on each event."""
    if ctx.guard is not None:
        ctx.guard.script()
    if "script" not in ctx.allow:
        raise PipeRuntimeError(
            "the script action is disabled here; start the agent with --allow-scripts"
        )
    if opts.file is not None:
        if ctx.guard is not None:
            ctx.guard.read(opts.file, "script file")
        try:
            with open(opts.file, encoding="utf-8") as fh:
                if ctx.guard is not None:
                    ctx.guard.opened(fh, opts.file, "script file", "read")
                code = fh.read()
        except OSError as exc:
            raise PipeRuntimeError(f"script: cannot read {opts.file}: {exc.strerror}") from None
        filename = os.path.abspath(opts.file)
        try:
            process = load_process(code, filename)
        except ValueError as exc:
            raise PipeRuntimeError(f"script {opts.file}: {exc}") from None
    else:
        assert opts.code is not None
        filename = FILENAME
        process = load_process(opts.code)
    when = compile_expression(opts.when).fn if opts.when else None

    def run(events: list[Event], errors: list) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if when is not None:
                try:
                    if not when(e):
                        out.append(e)
                        continue
                except Exception as exc:
                    errors.append((e, exc))
                    continue
            try:
                r = process(e)
            except Exception as exc:
                errors.append((e, EventError(_message(exc, filename))))
                continue
            if isinstance(r, dict):
                out.append(r)
            elif r is None:
                continue
            elif isinstance(r, list) and all(isinstance(x, dict) for x in r):
                out.extend(r)
            else:
                errors.append((e, EventError(_bad_result(r))))
        return out

    return BatchStep(run)
