"""What the agent and a worker say to each other: one JSON object per line.

agent -> worker (stdin): the first line is the job ``{"deployment_id", "yaml", "params",
``"builtins", "hash", "checkpoint", "checkpoint_seq", "data_dir", "allow"}``; then commands
``{"type": "capture", "id", "stage", "limit"}`` and ``{"type": "stop"}``. End of input means the
agent is gone: the worker stops cleanly.

worker -> agent (stdout): ``{"type": "status", "state", "error", "metrics", "checkpoint"}`` when
the state changes and every few seconds, and ``{"type": "capture", "id", "events", "error"}``.
"""

from __future__ import annotations

#: A worker exits with this when restarting cannot help (invalid pipe, refused capability).
EXIT_REFUSED = 3
