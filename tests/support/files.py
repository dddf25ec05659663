"""Reading what a pipe wrote, also while it is still writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_ndjson(path: Path | str) -> list[dict[str, Any]]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def read_complete_lines(path: Path | str) -> list[str]:
    """The complete (newline-terminated) lines of a file that may still be written."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    cut = data.rfind(b"\n")
    if cut < 0:
        return []
    return data[:cut].decode().split("\n")


def raw_values(path: Path | str) -> list[str]:
    """``_raw`` of every event of an NDJSON file (only complete lines)."""
    return [orjson.loads(line)["_raw"] for line in read_complete_lines(path) if line]
