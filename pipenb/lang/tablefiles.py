"""Table files that travel with a pipe (``lookup: {table: hosts.csv}``) instead of being on disk.

A pushed pipe may carry the contents of the table files it names (``files: {hosts.csv: ...}``):
the server validates the pipe against them (it has no ``hosts.csv`` of its own), stores them with
the version, and hands them to the agents, whose workers write them under the data dir. While a
pipe is validated inside ``provided(files)``, a lookup reads a table named there from memory.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

_PROVIDED: ContextVar[dict[str, str] | None] = ContextVar("pipenb_table_files", default=None)
_LENIENT: ContextVar[bool] = ContextVar("pipenb_table_files_lenient", default=False)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_FILES = 20


@contextlib.contextmanager
def provided(files: dict[str, str] | None, *, lenient: bool = False) -> Iterator[None]:
    """Validate inside with these table files; ``lenient``: a table not among them is not read
    at all (the server re-reading a stored version: its tables were checked at push)."""
    token = _PROVIDED.set(dict(files or {}))
    token2 = _LENIENT.set(lenient)
    try:
        yield
    finally:
        _PROVIDED.reset(token)
        _LENIENT.reset(token2)


def lenient() -> bool:
    return _LENIENT.get()


def content_of(name: str) -> str | None:
    """The provided content of table ``name``, or None (then the file is read from disk)."""
    files = _PROVIDED.get()
    return None if files is None else files.get(name)


def check_names(files: dict[str, str]) -> str | None:
    """Why ``files`` cannot be accepted (names become file names on agents), or None."""
    if len(files) > MAX_FILES:
        return f"at most {MAX_FILES} table files travel with a pipe, got {len(files)}"
    for name in files:
        if not NAME_RE.match(name) or ".." in name:
            return (
                f"table file name {name!r}: use a plain file name (letters, digits, '.', '-', "
                "'_'; no directories), as written in lookup: table:"
            )
        if not name.endswith((".csv", ".json")):
            return f"table file {name!r}: only .csv and .json tables travel with a pipe"
    return None
