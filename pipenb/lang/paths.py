"""Reading a dotted field (``http.status``) out of an event: one definition of what "missing" is.

Expressions compile ``a.b.c`` to a call of ``get_path``, and the actions that take field names
(``aggregate``, ``dedupe``, ``unnest``) read them with it too, so a field that is absent, or
under something that is not an object, is null everywhere in the same way.
"""

from __future__ import annotations

from typing import Any


def get_path(e: Any, keys: tuple) -> Any:
    """``e[k1][k2]...``; None where a step is missing or not an object (a list takes an int key)."""
    for k in keys:
        if isinstance(e, dict):
            e = e.get(k)
        elif isinstance(e, list) and isinstance(k, int) and -len(e) <= k < len(e):
            e = e[k]
        else:
            return None
        if e is None:
            return None
    return e
