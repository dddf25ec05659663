"""A preview the server asked this agent for: ``python -m pipenb.agent.preview``.

It runs in a process of its own, like a worker (a pipe's input cannot hang or crash the agent),
reads one job on stdin and writes one JSON answer on stdout: the same per-stage result a local
preview gives (``PreviewResult.to_dict``), or ``{"error": ...}``.

Safety: the pipe meets this host's policy exactly as a deployment would (``check_pipe`` first,
then the guard on every path and address it opens); its output is never built (a preview only
runs the input and the actions); and it keeps no checkpoint, so a running deployment reading the
same files is not moved. A ``files`` input shows the newest ``limit`` lines unless the pipe says
``start-at: beginning``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson

#: what the agent allows a preview at most, whatever the server asks
MAX_EVENTS = 1000
MAX_SECONDS = 30.0


def refusal(policy: Any) -> str | None:
    """Why this host refuses previews at all (None: it accepts them)."""
    if not policy.preview:
        return (
            "refused by this agent's policy, rule 'preview': the agent accepts no previews "
            "(its operator can allow them with `preview: true` in the policy file or "
            "--allow-preview)"
        )
    return None


def bounds(args: dict[str, Any]) -> tuple[int, float]:
    """The events and seconds asked for, within the agent's bounds."""
    limit = max(1, min(int(args.get("limit") or 100), MAX_EVENTS))
    timeout = max(0.5, min(float(args.get("timeout") or 10.0), MAX_SECONDS))
    return limit, timeout


def run(job: dict[str, Any]) -> dict[str, Any]:
    from pipenb.engine.base import RunContext
    from pipenb.engine.preview import preview
    from pipenb.errors import PipenbError, PipeSyntaxError, PolicyError
    from pipenb.lang.validate import load_pipe
    from pipenb.policy import Policy, check_pipe
    from pipenb.policy.guard import Guard

    try:
        spec = load_pipe(job["yaml"], "<preview>", job.get("params") or {}, require_params=True)
        guard = Guard(Policy(write=()).merged(job["policy"], "the agent's policy"))
        refused = check_pipe(spec, guard.policy)
        if refused:
            return {"error": f"refused by this agent's policy: {refused[0]}", "refused": True}
        if job.get("run_as"):  # as the agent's workers run (--run-as), before the pipe is built
            from pipenb.agent.worker_main import _become
            from pipenb.lang.registry import registry

            registry.all()
            _become(job["run_as"])
        ctx = RunContext(
            pipe=spec.name,
            preview=True,
            data_dir=job["data_dir"],
            allow=frozenset(job.get("allow") or ()),
            values=spec.values,
            guard=guard,
        )
        opts = spec.input.options
        explicit_beginning = (
            "start_at" in opts.model_fields_set and getattr(opts, "start_at", None) == "beginning"
        )
        tail = "start_at" in type(opts).model_fields and not explicit_beginning
        result = preview(spec, None, job["limit"], job["timeout"], ctx=ctx, tail=tail)
    except PolicyError as exc:
        return {"error": f"refused by this agent's policy: {exc}", "refused": True}
    except (PipeSyntaxError, PipenbError) as exc:
        return {"error": str(exc)}
    return {"result": result.to_dict()}


def main() -> int:
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    job = orjson.loads(sys.stdin.buffer.readline())
    try:
        answer = run(job)
    except Exception as exc:  # a bug must still answer the user, not leave them waiting
        answer = {"error": f"the preview failed: {type(exc).__name__}: {exc}"}
    sys.stdout.buffer.write(orjson.dumps(answer, default=str) + b"\n")
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
