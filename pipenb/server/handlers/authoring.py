"""Authoring endpoints for editors (the JupyterLab Pipe Editor): validate, preview and test a pipe
text that is not stored yet, and the JSON Schema of pipe documents for completion.

Validation runs in the server (it only parses); preview and tests run the engine, so they go to a
child process with a time and memory limit (``pipenb.server.sandbox``). Problems in the pipe are
an answer (``200`` with ``ok: false``), not an HTTP error: an editor shows them as it would show
a passing result.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from pydantic import BaseModel, Field

from pipenb.errors import ApiError, PipenbError, PipeSyntaxError
from pipenb.server.handlers.base import ApiHandler, api
from pipenb.server.sandbox import SandboxFailed, run_job

#: the memory a preview or test child may use
SANDBOX_MEMORY_MB = 1024


# ---------------------------------------------------------------------------- bodies
class PipeText(BaseModel):
    text: str = Field(max_length=1_000_000, description="the pipe's YAML")
    params: dict[str, Any] = Field(default_factory=dict, description="parameter values")
    file: str = Field("<pipe>", max_length=1000, description="the name problems are reported in")


class PreviewRequest(PipeText):
    lines: list[str] | None = Field(
        None, max_length=100_000, description="sample lines (else path, else the pipe's input)"
    )
    path: str | None = Field(
        None, max_length=4096, description="a sample file, relative to the Jupyter root"
    )
    limit: int = Field(200, ge=1, le=10_000, description="events read from the sample at most")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds before the run is stopped")


class RunTestsRequest(PipeText):
    timeout: float = Field(10.0, gt=0, le=120, description="seconds before the run is stopped")


class ProblemOut(BaseModel):
    file: str = "<pipe>"
    line: int
    column: int
    path: str = ""
    message: str


class ParamOut(BaseModel):
    name: str
    type: str | None = None
    default: Any = None
    required: bool = False
    enum: list[Any] | None = None
    description: str = ""


class ValidateResult(BaseModel):
    ok: bool
    problems: list[ProblemOut]
    name: str | None = None
    labels: list[str] = Field(default_factory=list)
    params: list[ParamOut] = Field(default_factory=list)
    stages: list[str] = Field(default_factory=list)
    tests: int = 0


class StageOut(BaseModel):
    stage: str
    events_in: int
    events_out: int
    dropped: int
    errors: int
    events: list[Any]
    truncated: bool = False


class DeadLetter(BaseModel):
    stage: str
    message: str
    event: dict[str, Any]


class OutputEvents(BaseModel):
    events: list[Any]
    truncated: bool = False


class PreviewResult(BaseModel):
    ok: bool
    problems: list[ProblemOut] = Field(default_factory=list)
    error: str | None = None
    stages: list[StageOut] = Field(default_factory=list)
    errors: list[DeadLetter] = Field(default_factory=list)
    #: a pipe with ``outputs:``: each output's events (after its own actions), by name
    outputs: dict[str, OutputEvents] = Field(default_factory=dict)
    unrouted: int = 0


class CaseResult(BaseModel):
    name: str
    passed: bool
    message: str = ""
    line: int = 0
    output: list[Any] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)


class RunTestsResult(BaseModel):
    ok: bool
    problems: list[ProblemOut] = Field(default_factory=list)
    error: str | None = None
    passed: bool = False
    results: list[CaseResult] = Field(default_factory=list)


# ---------------------------------------------------------------------------- logic
def validate_text(req: PipeText) -> ValidateResult:
    """Every problem of the text, or what the editor needs to know of a valid pipe."""
    from pipenb.lang.validate import load_pipe

    try:
        spec = load_pipe(req.text, req.file, req.params)
    except PipeSyntaxError as exc:
        return ValidateResult(ok=False, problems=[ProblemOut(**p.to_dict()) for p in exc.problems])
    except PipenbError as exc:  # pragma: no cover - load_pipe reports problems, but be safe
        return ValidateResult(ok=False, problems=[ProblemOut(line=0, column=0, message=str(exc))])
    params = [
        ParamOut(
            name=p.name,
            type=p.type,
            default=p.default,
            required=p.required,
            enum=list(p.enum) if p.enum is not None else None,
            description=p.description,
        )
        for p in spec.params.values()
    ]
    stages = [f"input:{spec.input.name}", *(a.label for a in spec.actions)]
    return ValidateResult(
        ok=True,
        problems=[],
        name=spec.name,
        labels=list(spec.labels),
        params=params,
        stages=stages,
        tests=len(spec.tests),
    )


def sample_path(handler: ApiHandler, path: str) -> str:
    """``path`` under the Jupyter root, refused anywhere else (``..``, absolute, symlinks out)."""
    root = handler.settings.get("server_root_dir")
    if not root:
        raise ApiError(
            400,
            "bad_request",
            "sample paths are read under the Jupyter server's root; this server has none: "
            "send the sample as lines",
        )
    root = os.path.realpath(os.path.expanduser(root))
    full = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if full != root and not full.startswith(root.rstrip(os.sep) + os.sep):
        raise ApiError(403, "forbidden", f"sample path {path!r} is outside the Jupyter root")
    rel = os.path.relpath(full, root)
    contents = handler.settings.get("contents_manager")
    if any(part.startswith(".") for part in rel.split(os.sep)) and not getattr(
        contents, "allow_hidden", False
    ):
        # as Jupyter's file browser: hidden files only with ContentsManager.allow_hidden
        raise ApiError(
            403,
            "forbidden",
            f"sample path {path!r} is hidden; Jupyter serves hidden files only with "
            "--ContentsManager.allow_hidden=True",
        )
    if not os.path.isfile(full):
        raise ApiError(404, "not_found", f"sample file {path!r} does not exist under the root")
    return full


def _root(handler: ApiHandler) -> str | None:
    root = handler.settings.get("server_root_dir")
    return os.path.realpath(os.path.expanduser(root)) if root else None


# ---------------------------------------------------------------------------- handlers
class ValidateHandler(ApiHandler):
    @api(
        "Validate a pipe text: every problem with line:col (and did-you-mean), or its params "
        "and stages",
        body=PipeText,
        response=ValidateResult,
    )
    def post(self) -> None:
        self.send(validate_text(self.body(PipeText)))


class PreviewHandler(ApiHandler):
    @api(
        "Preview a pipe text on a sample (lines, a file under the Jupyter root, or its own "
        "input) in a sandbox: every stage's events and counts, and the dead letters",
        body=PreviewRequest,
        response=PreviewResult,
    )
    async def post(self) -> None:
        req = self.body(PreviewRequest)
        job = req.model_dump()
        job["kind"] = "preview"
        job["standalone"] = _root(self) is None  # see sandbox.refusal
        if req.lines is None and req.path:
            job["path"] = sample_path(self, req.path)
        try:
            answer = await run_job(
                job, timeout=req.timeout, memory_mb=SANDBOX_MEMORY_MB, cwd=_root(self)
            )
        except SandboxFailed as exc:
            self.send(PreviewResult(ok=False, error=f"preview {exc}"))
            return
        self.send(PreviewResult.model_validate(answer))


class RunTestsHandler(ApiHandler):
    @api(
        "Run a pipe text's tests: section in a sandbox: each case passed or failed, and why",
        body=RunTestsRequest,
        response=RunTestsResult,
    )
    async def post(self) -> None:
        req = self.body(RunTestsRequest)
        job = req.model_dump()
        job["kind"] = "test"
        job["standalone"] = _root(self) is None  # see sandbox.refusal
        try:
            answer = await run_job(
                job, timeout=req.timeout, memory_mb=SANDBOX_MEMORY_MB, cwd=_root(self)
            )
        except SandboxFailed as exc:
            self.send(RunTestsResult(ok=False, error=f"tests {exc}"))
            return
        self.send(RunTestsResult.model_validate(answer))


class SchemaHandler(ApiHandler):
    @api("JSON Schema of pipe documents, generated from the component registry", offload=False)
    def get(self) -> None:
        from pipenb.lang.schema import pipe_schema

        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(pipe_schema()))
