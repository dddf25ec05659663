"""The agent: a small process on a worker host that checks in with the server and runs pipes.

The agent process itself imports only the standard library and orjson (no pydantic, pandas,
Jupyter or server code), so an idle agent stays small. Each pipe runs in its own worker process
(``python -m pipenb.agent.worker_main``), which imports the engine.
"""

from typing import Any

__all__ = ["Agent", "AgentSettings"]


def __getattr__(name: str) -> Any:
    # loaded on first use: ``pipenb --help`` reads AgentSettings' fields to make the agent's
    # flags, and should not pay for importing the agent itself
    if name == "Agent":
        from pipenb.agent.agent import Agent

        return Agent
    if name == "AgentSettings":
        from pipenb.agent.settings import AgentSettings

        return AgentSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
