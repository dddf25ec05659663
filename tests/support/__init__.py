"""What the tests share: helpers to import (``from support.waiting import wait_until``).

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (pytest's ``pythonpath`` option), so
``support`` is importable from any test file, however pytest was started. Fixtures stay in
``conftest.py`` files; this package holds plain functions and classes only:

- ``pipes``: pipe documents around an action list, running actions, located problems.
- ``files``: reading what a pipe wrote (NDJSON, complete lines).
- ``waiting``: ``wait_until`` and friends; tests poll a condition with a deadline, never sleep.
- ``processes``: the environment, ports and signals every process helper uses.
- ``cli``: ``pipenb`` as a subprocess (local and against a server).
- ``serverproc``, ``agentproc``, ``labproc``: a real server, agent or JupyterLab process.
- ``edgekit``: a control-plane world (agents, a deployment) and the API's operations.
- ``engines``: a pipe's engine running on the test's loop, pipe documents for network inputs,
  a scripted HTTP server.
- ``faultkit``, ``tlskit``, ``fuzzing``, ``loghub``: fault injection, certificates, the fuzzers'
  shared strategies, the loghub samples.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout the tests run from (``tests/support/`` is two levels down)."""

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
"""Where tests leave files worth a look after a run (screenshots, fault figures); git ignores it."""
