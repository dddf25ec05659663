"""Plain-text tables for people at a terminal (``--json`` is for scripts)."""

from __future__ import annotations

from typing import Any

import orjson


def _cell(v: Any, width: int) -> str:
    if v is None:
        s = ""
    elif isinstance(v, str):
        s = v
    elif isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, (dict, list)):
        s = orjson.dumps(v, default=str).decode()
    else:
        s = str(v)
    s = s.replace("\n", "\\n")
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, max_width: int = 48
) -> str:
    """Rows as an aligned table; columns default to every key in order of first appearance."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    cells = [[_cell(r.get(c), max_width) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([head, *body])
