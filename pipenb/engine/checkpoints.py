"""Where a pipe's input position is kept between runs.

The engine saves a position only after the output confirmed everything before it. Saves are
atomic, so a process that dies leaves the old or the new checkpoint, never half of one: the
first save writes a temporary file and renames it over the old one; later saves rewrite that
file's first page in place (``FileCheckpointStore``).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import orjson

from pipenb.atomic import write_atomic

#: ``os.access`` can ask as the effective user (the one that writes), where the platform lets it
_EFFECTIVE_IDS = os.access in os.supports_effective_ids


class CheckpointStore:
    """Interface: ``load()`` the last saved position (or None), ``save(position)``, ``reset()``,
    and ``close()`` when a run is over."""

    def load(self) -> Any:
        return None

    def save(self, position: Any) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        """The run is over: let go of what the store holds open (it may be used again)."""


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
    """A JSON file: ``{"version": 1, "position": ...}``, padded with spaces (JSON whitespace).

    Why in place: the fast path saves after every chunk it writes, and a rename over the old
    file cost the pipe's process 0.2-0.6 ms each time in a run here (ext4), 4-6% of W1's time
    on one core (bench/README.md, 2026-12-06). So the first save of a run makes the file by a
    rename, padded to some room, and keeps it open; each later save that fits rewrites it with
    one ``pwrite`` of that room at offset 0. A write within one page is copied into the page
    cache whole or not at all (a fatal signal is only acted on between pages), so a process
    killed during it leaves the old checkpoint or the new, as the rename did. A position that
    does not fit, or a file removed or replaced meanwhile, takes a rename again, and a path no
    longer writable (a read-only mount) fails the save as the rename would have. Neither way
    syncs to disk: after a power loss the file holds what the kernel had written back."""

    #: the longest checkpoint rewritten in place: one page, at offset 0
    IN_PLACE = min(4096, mmap.PAGESIZE)
    #: the least room a file is made with, so that a position that grows a little still fits
    ROOM = 512

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None  # the file the last rename made, while it can be rewritten
        self._room = 0  # its length: what a rewrite in place fills
        self._ident: tuple[int, int] = (0, 0)  # its device and inode

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
        data = orjson.dumps({"version": 1, "position": position})
        if not self._rewrite(data):
            self._replace(data)

    def _rewrite(self, data: bytes) -> bool:
        """``data`` written over the file kept open, in one page; False when it cannot be."""
        fd, room = self._fd, self._room
        if fd is None or len(data) > room or not self._still_ours():
            return False
        return os.pwrite(fd, data.ljust(room), 0) == room  # (one page: never short)

    def _still_ours(self) -> bool:
        """The path still names the file this store keeps open (not removed or replaced), and a
        new open of it for writing would be allowed: a data dir made read-only meanwhile (a
        read-only mount, ``chattr +i``) stops the saves as it stopped the renames, rather than
        being written through the descriptor opened before."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ident and os.access(
            self.path, os.W_OK, effective_ids=_EFFECTIVE_IDS
        )

    def _replace(self, data: bytes) -> None:
        """A new file renamed over the old one; kept open when later saves may rewrite it."""
        self.close()
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fits = len(data) <= self.IN_PLACE
        room = min(self.IN_PLACE, max(self.ROOM, 2 * len(data))) if fits else len(data)
        write_atomic(self.path, data.ljust(room), prefix=".ckpt-")
        if not fits:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        st = os.fstat(fd)
        self._fd, self._room, self._ident = fd, room, (st.st_dev, st.st_ino)

    def reset(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


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
