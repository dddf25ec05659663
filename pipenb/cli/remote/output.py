"""What every management command prints: the server's answer as JSON, a table, or an error.

One set of helpers for all of them (``pipes``, ``agents``, ``deployments``, ``users``, ...), so
``--json``, empty tables and the wording of refusals are the same everywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from pipenb.errors import ApiError
from pipenb.explain import api_problem_lines
from pipenb.terminal_tables import format_table


def err(msg: str) -> None:
    print(msg, file=sys.stderr)


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def as_json(args: argparse.Namespace, value: Any) -> bool:
    """With ``--json``, print ``value`` (the server's answer) and say so: the caller is done."""
    if args.json:
        print_json(value)
    return bool(args.json)


def done(args: argparse.Namespace, value: Any, line: str) -> None:
    """``value`` as JSON with ``--json``, else ``line`` for people."""
    if not as_json(args, value):
        print(line)


def table(rows: list[dict[str, Any]], empty: str) -> None:
    """The rows as a table, or ``empty`` (what to do next) when there are none."""
    print(format_table(rows) if rows else empty)


def listing(
    args: argparse.Namespace,
    result: dict[str, Any],
    key: str,
    row: Callable[[dict[str, Any]], dict[str, Any]],
    empty: str,
) -> None:
    """A list answer: ``result`` as JSON with ``--json``, else one table row per ``result[key]``."""
    if not as_json(args, result):
        table([row(x) for x in result[key]], empty)


def api_error(exc: ApiError) -> None:
    """The message, then every located problem as ``file:line:column: message``."""
    first, *problems = api_problem_lines(exc.message, exc.code, exc.details)
    err(f"pipenb: {first}")
    for line in problems:
        err(line)
    fields = [d for d in exc.details if isinstance(d, dict) and "field" in d and "message" in d]
    if len(fields) > 1:
        for d in fields:
            err(f"  {d['field'] or 'body'}: {d['message']}")
