"""What the agent keeps in its data dir: its identity, its last desired pipes, applied resets.

Writes are atomic (temporary file, then rename); the folder and every file in it (identity, the
desired pipes with their secret params) are readable by their owner only.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from pipenb.atomic import write_atomic


class AgentStore:
    def __init__(self, data_dir: str, *, traversable: bool = False):
        """``traversable``: workers run as another user (``--run-as``) and must reach the
        ``out/`` and ``checkpoints/`` folders handed to them, so others may pass through the
        folder (0711) but still not list it; every file in it stays 0600."""
        self.dir = data_dir
        # identity, desired pipes (with secret params in clear) and logs: the owner's alone
        mode = 0o711 if traversable else 0o700
        os.makedirs(data_dir, mode=mode, exist_ok=True)
        os.chmod(data_dir, mode)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> Any:
        try:
            with open(self._path(name), "rb") as fh:
                return orjson.loads(fh.read())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def write(self, name: str, value: Any, *, private: bool = False) -> None:
        write_atomic(self._path(name), orjson.dumps(value), mode=0o600 if private else None)

    # named records
    def identity(self) -> dict[str, str] | None:
        return self.read("identity.json")

    def save_identity(self, agent_id: str, api_key: str) -> None:
        self.write("identity.json", {"agent_id": agent_id, "api_key": api_key}, private=True)

    def desired(self) -> list[dict[str, Any]]:
        return self.read("desired.json") or []

    def save_desired(self, desired: list[dict[str, Any]]) -> None:
        self.write("desired.json", desired)

    def applied_seqs(self) -> dict[str, int]:
        return self.read("applied.json") or {}

    def save_applied_seqs(self, seqs: dict[str, int]) -> None:
        self.write("applied.json", seqs)
