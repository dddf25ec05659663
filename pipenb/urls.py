"""Where the pipenb API lives under a server's address: ``/pipenb/api/v1``.

One constant for everyone who builds or serves these paths (the server's route table, the client,
the agent, the install line, the TLS bootstrap), so a new API version is one change. Standard
library only: the agent imports it.
"""

from __future__ import annotations

API_PREFIX = "/pipenb/api/v1"
