"""The capabilities a pipe may need and an agent may refuse: running programs and scripts.

``exec`` (the exec input) and ``script`` (the script action) are what a host's policy or
``--disable`` turns off; the engine checks a run's ``allow`` against them. Named once here so the
agent, the engine, the CLI and the cluster runner agree on the list. Standard library only.
"""

from __future__ import annotations

CAPABILITIES = ("exec", "script")

#: every capability: what a run allows when nothing restricts it
ALL_CAPABILITIES = frozenset(CAPABILITIES)
