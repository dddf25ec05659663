"""What the agent and a worker say to each other: one JSON object per line.

agent -> worker (stdin): the first line is the job ``{"deployment_id", "yaml", "params",
``"builtins", "hash", "checkpoint", "checkpoint_seq", "data_dir", "allow", "policy", "run_as"}``
(``policy``: the host's policy as plain data, see pipenb/policy; ``run_as``: a user to become
before the pipe is built); then commands
``{"type": "capture", "id", "stage", "limit"}`` and ``{"type": "stop"}``. End of input means the
agent is gone: the worker stops cleanly.

worker -> agent (stdout): ``{"type": "status", "state", "error", "metrics", "checkpoint"}`` when
the state changes and every few seconds (``state: refused`` when the policy refuses the pipe,
before it starts or where a file or socket is opened; then it exits with EXIT_REFUSED), and
``{"type": "capture", "id", "events", "error"}``.
"""

from __future__ import annotations

#: A worker exits with this when restarting cannot help (invalid pipe, refused by the policy).
EXIT_REFUSED = 3
