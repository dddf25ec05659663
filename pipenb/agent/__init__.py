"""The agent: a small process on a worker host that checks in with the server and runs pipes.

The agent process itself imports only the standard library and orjson (no pydantic, pandas,
Jupyter or server code), so an idle agent stays small. Each pipe runs in its own worker process
(``python -m pipenb.agent.worker_main``), which imports the engine.
"""

from pipenb.agent.agent import Agent
from pipenb.agent.settings import AgentSettings

__all__ = ["Agent", "AgentSettings"]
