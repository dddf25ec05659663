"""``--param NAME=VALUE`` parsing, for every command line that takes pipe parameters.

``pipenb check/preview/run``, ``pipenb deploy`` and the ``%pipe`` magics all take it; one parser
keeps the rule (a name, an ``=``, any value, kept as text for the pipe's declared types to
convert) and its error message the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipenb.errors import UsageError


def parse_params(
    items: Iterable[str] | None, error: type[Exception] = UsageError
) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; ``error`` for an item without a name
    or an ``=``."""
    params: dict[str, str] = {}
    for item in items or ():
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise error(f"--param takes NAME=VALUE, got {item!r}")
        params[name.strip()] = value
    return params
