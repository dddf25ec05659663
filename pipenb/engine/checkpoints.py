"""Where a pipe's input position is kept between runs.

The engine saves a position only after the output confirmed everything before it. Saves are
atomic (write a temporary file, then rename), so a crash leaves the old or the new checkpoint,
never half of one.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from pipenb.atomic import write_atomic


class CheckpointStore:
    """Interface: ``load()`` the last saved position (or None), ``save(position)``."""

    def load(self) -> Any:
        return None

    def save(self, position: Any) -> None:
        pass

    def reset(self) -> None:
        pass


class MemoryCheckpointStore(CheckpointStore):
    def __init__(self, position: Any = None):
        self.position = position
        self.saves = 0

    def load(self) -> Any:
        return self.position

    def save(self, position: Any) -> None:
        self.position = position
        self.saves += 1

    def reset(self) -> None:
        self.position = None


class FileCheckpointStore(CheckpointStore):
    def __init__(self, path: str):
        self.path = path

    def load(self) -> Any:
        try:
            with open(self.path, "rb") as fh:
                return orjson.loads(fh.read()).get("position")
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, AttributeError, OSError):
            # A damaged checkpoint must not stop the pipe: start over and say so.
            import logging

            logging.getLogger("pipenb.engine").warning(
                "checkpoint %s is unreadable; starting without it", self.path
            )
            return None

    def save(self, position: Any) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        data = orjson.dumps({"version": 1, "position": position})
        write_atomic(self.path, data, prefix=".ckpt-")

    def reset(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def default_data_dir() -> str:
    """``$PIPENB_DATA_DIR``, else ``$XDG_STATE_HOME/pipenb``, else ``~/.local/state/pipenb``."""
    if os.environ.get("PIPENB_DATA_DIR"):
        return os.environ["PIPENB_DATA_DIR"]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "pipenb")


def checkpoint_path(data_dir: str, pipe: str) -> str:
    return os.path.join(data_dir, "checkpoints", f"{pipe}.json")
