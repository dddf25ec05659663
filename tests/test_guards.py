"""Guards for contracts that nothing else notices when one side changes and the other is forgotten.

- The component catalog (where each built-in lives, imported lazily) names exactly the components
  the engine's modules register, each at the module that registers it.
- ``pipenb reference`` prints exactly the committed ``docs/reference.md``.
- The check-in body the agent builds (full and incremental, and the last one when it leaves)
  validates against the server's ``CheckinRequest`` model, which forbids unknown fields.

Each was checked to fail by breaking its contract on purpose (docs/contributing.md says how).
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.agent.agent import Agent
from pipenb.agent.settings import AgentSettings
from pipenb.agent.supervisor import WorkerHandle
from pipenb.lang.catalog import BUILTINS
from pipenb.lang.registry import registry
from pipenb.server.models import CheckinRequest

from support import REPO_ROOT
from support.cli import run_cli

COMPONENT_PACKAGES = ("pipenb.engine.inputs", "pipenb.engine.actions", "pipenb.engine.outputs")


# ------------------------------------------------------------------------------ the catalog


def registered_by_the_engine() -> dict[tuple[str, str], str]:
    """(kind, name) -> the module that registers it, for every module of the component packages
    (imported here, so a module the catalog forgot registers too)."""
    modules = set()
    for package in COMPONENT_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            importlib.import_module(info.name)
            modules.add(info.name)
    modules.update(COMPONENT_PACKAGES)
    return {
        (c.kind, c.name): c.factory.__module__
        for c in registry._items.values()
        if c.factory.__module__ in modules
    }


def test_the_catalog_names_every_registered_component_where_it_is_registered() -> None:
    registered = registered_by_the_engine()
    missing = sorted(set(registered) - set(BUILTINS))
    assert not missing, f"registered but not in the catalog (pipes cannot use them): {missing}"
    stale = sorted(set(BUILTINS) - set(registered))
    assert not stale, f"in the catalog but registered by no module: {stale}"
    wrong = {k: (BUILTINS[k], m) for k, m in registered.items() if BUILTINS[k] != m}
    assert not wrong, f"the catalog points elsewhere (catalog, registering module): {wrong}"


def test_every_catalog_entry_resolves_through_the_registry() -> None:
    for kind, name in BUILTINS:
        component = registry.get(kind, name)  # type: ignore[arg-type]
        assert component is not None and (component.kind, component.name) == (kind, name)
    for kind in ("input", "action", "output"):
        assert registry.names(kind) == sorted(n for k, n in BUILTINS if k == kind)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the reference


def test_pipenb_reference_prints_the_committed_docs_reference() -> None:
    proc = run_cli("reference")
    assert proc.returncode == 0, proc.stderr
    committed = (REPO_ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert proc.stdout == committed, (
        "docs/reference.md is not what `pipenb reference` prints: regenerate it with\n"
        "  PYTHONPATH=$PWD python -m pipenb reference > docs/reference.md"
    )


# ------------------------------------------------------------------------------ the check-in body


class WorkerOutput:
    """What ``WorkerHandle._read`` reads from a worker process: these protocol lines, then exit."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.stdout = asyncio.StreamReader()
        self.stdout.feed_data(b"".join(orjson.dumps(m) + b"\n" for m in messages))
        self.stdout.feed_eof()

    async def wait(self) -> int:
        return 0


DESIRED = {
    "deployment_id": "d-1",
    "pipe": "web",
    "version": 3,
    "yaml": "name: web\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n",
    "params": {},
    "builtins": {"agent.id": "a-1"},
    "hash": "f" * 64,
}


async def an_agent_with_a_pipe(data_dir: Path) -> tuple[Agent, WorkerHandle]:
    """An agent (not started) with one worker that reported status, a log line and a capture,
    a refused preview and a refused setting: every part of a check-in body filled by the agent's
    own code."""
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", data_dir=str(data_dir)))
    agent.agent_id, agent.seq = "a-1", 4
    worker = WorkerHandle(DESIRED, agent._job(DESIRED), agent.news, on_log=agent._worker_log("d-1"))
    agent.workers["d-1"] = worker
    worker._stopping = True  # the stand-in process exits after its lines: not a crash
    await worker._read(
        WorkerOutput(  # type: ignore[arg-type]
            {
                "type": "status",
                "state": "running",
                "error": None,
                "metrics": {"input": {"events": 7}, "output": {"events": 7}},
                "checkpoint": {"offset": 7},
            },
            {"type": "log", "level": "warning", "message": "slow output"},
            {"type": "capture", "id": "c-1", "events": [{"n": 1}], "error": None},
        )
    )
    worker.state, worker._stopping = "running", False  # it runs on, for the report
    await agent._preview({"id": "p-1", "args": {"yaml": DESIRED["yaml"]}})  # refused: no policy
    agent.apply_settings({"long-poll": 10**6}, "v-7")  # over the agent's bound: refused
    agent.acks.append("cmd-9")
    return agent, worker


def valid(body: dict[str, Any]) -> CheckinRequest:
    model = CheckinRequest.model_validate_json(orjson.dumps(body))
    assert set(model.model_fields_set) == set(body), "the server's model dropped a field"
    return model


def test_the_agents_checkin_bodies_validate_against_the_servers_model(tmp_path: Path) -> None:
    agent, worker = asyncio.run(an_agent_with_a_pipe(tmp_path / "agent"))

    full = agent._report(wait=0.0)
    assert full["full"] and full["attributes"]
    assert full["captures"] and full["logs"] and full["settings"]["refused"]
    model = valid(full)
    assert model.pipes[0].metrics == {"input": {"events": 7}, "output": {"events": 7}}
    assert {c.command_id for c in model.captures} == {"c-1", "p-1"}

    agent._sent(full)
    agent.full = False
    worker.state, worker.error = "failed", "the output refused the connection"
    incremental = agent._report(wait=25.0)
    assert not incremental["full"] and "attributes" not in incremental
    model = valid(incremental)
    assert [(p.state, p.metrics) for p in model.pipes] == [("failed", None)]

    agent.full = True
    leaving = {**agent._report(0), "leaving": True}  # what Agent._shutdown sends
    assert valid(leaving).leaving


def test_the_guard_sees_a_field_the_server_does_not_know(tmp_path: Path) -> None:
    """The model forbids unknown fields, so an agent-side addition the server misses fails above."""
    agent, _ = asyncio.run(an_agent_with_a_pipe(tmp_path / "agent"))
    body = agent._report(wait=0.0)
    with pytest.raises(ValueError, match="extra"):
        valid({**body, "new_field": 1})
