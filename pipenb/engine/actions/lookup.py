"""``lookup``: enrich events from a table (CSV or JSON file, or inline rows) by a key field.

The table is indexed in memory once (at most ``max-rows`` rows: the bound that keeps a wrong
file from eating the worker's memory) and re-read when the file changes, checked at most every
``reload-every`` seconds, so editing ``hosts.csv`` takes effect in a running pipe without a
restart. A table that cannot be re-read keeps the last good index (and logs why). Keys are
compared as text, so a status code ``200`` finds the CSV row ``200``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from pipenb.engine.actions.common import get_src, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import ActionOptions, registry
from pipenb.lang.types import FieldName

log = logging.getLogger("pipenb.engine")


class LookupOptions(ActionOptions):
    """Options of ``lookup``.

    ``table`` is a ``.csv`` file (a header line names the columns) or a ``.json`` file (a list of
    objects, or an object of key -> object); or give the rows inline with ``rows: [{...}]``.
    ``key`` is the event field whose value is looked up in the table's ``column`` (by default
    the column named like the key's last part). ``fields`` lists the columns copied into the
    event (default: every column but the key column); ``target`` puts them under one field
    instead of the top level. ``on-miss``: ``keep`` the event unchanged (default), ``drop`` it,
    or send it to ``errors:`` (``error``). A relative table path is resolved against the
    current directory of the run (where ``pipenb run`` or ``preview`` was started); on an agent,
    a table file pushed with the pipe (``pipenb push --file``) is used. The
    table file is re-read when it changes (checked at most every ``reload-every`` seconds) and
    may hold at most ``max-rows`` rows.
    """

    table: str | None = None
    rows: list[dict[str, Any]] | None = None
    key: FieldName
    column: str | None = None
    fields: list[FieldName] | None = None
    target: FieldName | None = None
    on_miss: Literal["keep", "drop", "error"] = "keep"
    reload_every: float = Field(default=1.0, ge=0)
    max_rows: int = Field(default=1_000_000, ge=1)

    @model_validator(mode="after")
    def _table(self) -> LookupOptions:
        if (self.table is None) == (self.rows is None):
            raise ValueError("give the table as table: FILE (.csv or .json) or as rows: [...]")
        if self.table is not None and not self.table.endswith((".csv", ".json")):
            raise ValueError(f"table {self.table!r}: use a .csv or .json file")
        if self.table is not None and "<" in self.table:
            return self  # a parameter's placeholder: the file is checked where it is given
        from pipenb.lang.tablefiles import content_of, lenient

        if self.table is not None and lenient() and content_of(self.table) is None:
            return self  # the server re-reading a stored version: checked when it was pushed
        load_table(self, Path(self.table) if self.table else None)  # missing file or column
        return self

    @property
    def key_column(self) -> str:
        return self.column or self.key.split(".")[-1]


def _read_rows(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    from pipenb.lang.tablefiles import content_of

    try:
        given = content_of(str(path))  # shipped with the pipe (validated on the server)
        data = given.encode("utf-8") if given is not None else path.read_bytes()
    except FileNotFoundError:
        raise ValueError(
            f"table {str(path)!r} not found (relative paths are resolved against "
            f"{os.getcwd()}); check the path, or give the rows inline with rows:"
        ) from None
    except OSError as exc:
        raise ValueError(f"table {str(path)!r} cannot be read: {exc.strerror}") from None
    if path.suffix == ".json":
        try:
            rows = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"table {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(rows, (list, dict)):
            raise ValueError(f"table {str(path)!r}: expected a list of objects or an object")
        return rows
    text = data.decode("utf-8-sig", "replace")
    return list(csv.DictReader(io.StringIO(text)))


def load_table(opts: LookupOptions, path: Path | None) -> dict[str, dict[str, Any]]:
    """The index key -> the columns to copy; ValueError (with the fix) when it cannot be made."""
    col = opts.key_column
    where = f"table {str(path)!r}" if path else "rows"
    raw = _read_rows(path) if path is not None else list(opts.rows or [])
    if isinstance(raw, dict):  # {"web1": {"team": "a"}, ...}: the keys are the key column
        raw = [{col: k, **(v if isinstance(v, dict) else {"value": v})} for k, v in raw.items()]
    if len(raw) > opts.max_rows:
        raise ValueError(f"{where} has {len(raw)} rows, more than max-rows ({opts.max_rows})")
    index: dict[str, dict[str, Any]] = {}
    columns: set[str] = set()
    for i, row in enumerate(raw):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: row {i + 1} is not an object")
        columns.update(row)
    if raw and col not in columns:
        raise ValueError(
            f"{where} has no key column {col!r}; its columns: {', '.join(sorted(columns))} "
            "(set column: to the one holding the key)"
        )
    missing = [f for f in opts.fields or () if raw and f not in columns]
    if missing:
        raise ValueError(
            f"{where} has no column {missing[0]!r} (from fields:); "
            f"its columns: {', '.join(sorted(columns))}"
        )
    for row in raw:
        k = row.get(col)
        if k is None:
            continue
        if opts.fields is not None:
            index[str(k)] = {f: row[f] for f in opts.fields if f in row}
        else:
            index[str(k)] = {f: v for f, v in row.items() if f != col}
    return index


class Table:
    """The index of one lookup, re-read when its file changes."""

    def __init__(self, opts: LookupOptions, ctx: RunContext):
        self.opts = opts
        self.path: Path | None = None
        if opts.table is not None:
            p = Path(opts.table)
            shipped = Path(ctx.files_dir) / p if ctx.files_dir and not p.is_absolute() else None
            if shipped is not None and shipped.is_file():
                p = shipped  # a table file that came with the deployed pipe: the agent wrote it
            elif ctx.guard is not None:
                ctx.guard.read(str(p), "lookup table")
            self.path = p
        self.stamp: tuple[int, int] | None = self._stamp()
        self.index = load_table(opts, self.path)
        self.reloads = 0
        self.next_check = time.monotonic() + opts.reload_every

    def _stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self, key: Any) -> dict[str, Any] | None:
        if self.path is not None:
            now = time.monotonic()
            if now >= self.next_check:
                self.next_check = now + self.opts.reload_every
                self.maybe_reload()
        return self.index.get(key if isinstance(key, str) else str(key))

    def maybe_reload(self) -> None:
        stamp = self._stamp()
        if stamp is None or stamp == self.stamp:
            return
        try:
            self.index = load_table(self.opts, self.path)
        except ValueError as exc:
            log.warning("lookup: keeping the last good table: %s", exc)
        else:
            self.reloads += 1
        self.stamp = stamp


@registry.register("action", "lookup", LookupOptions)
def lookup_action(opts: LookupOptions, ctx: RunContext) -> EventStep:
    """Add fields from a table (CSV, JSON or inline rows) found by a key field."""
    ns = Namespace()
    table = Table(opts, ctx)
    get = ns.const(table.get, "lookup")
    apply = set_code(opts.target, "_r.copy()", ns) if opts.target else "e.update(_r)"
    if opts.on_miss == "keep":
        miss: list[str] = []
    elif opts.on_miss == "drop":
        miss = ["DROP"]
    else:
        ns.values.setdefault("_EventError", EventError)
        msg = ns.const(f"lookup: no row for the value of {opts.key!r}", "msg")
        miss = [f"raise _EventError({msg})"]
    code = [
        f"_v = {get_src(opts.key)}",
        f"_r = {get}(_v) if _v is not None else None",
        f"if _r is not None:\n    {apply}" + ("\nelse:\n    " + miss[0] if miss else ""),
    ]
    out = step(opts, code, ns)
    out.table = table  # type: ignore[attr-defined]  # for tests: how often it reloaded
    return out
