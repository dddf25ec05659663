"""Writing a file so that a crash leaves the old content or the new, never half of either.

The agent's store (identity, desired pipes), the kept TLS files and the engine's checkpoints
write this way: a temporary file beside the target, then a rename over it (a checkpoint's later
saves in a run rewrite that file in place: ``pipenb/engine/checkpoints.py`` says why). One
function keeps the clean-up (the temporary file goes if anything fails) and the permissions in
one place. Standard library only: the agent imports it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None, prefix: str = ""
) -> None:
    """Replace ``path`` with ``data`` in one rename. ``mode``: the file's permissions (the
    temporary file is made 0600 by ``mkstemp``); ``prefix``: the temporary file's name start
    (default ``.NAME.``)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{os.path.basename(path)}.", dir=directory)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
