"""Part files: where a partition's ``file`` output goes, and how it becomes complete atomically.

A ``file`` output with ``path: P`` writes ``P/part-00042.ndjson`` for partition 42 (``P`` may
use ``${field}``: each value gets its own directory of parts). A partition writes
``.part-00042.ndjson.<token>.tmp`` first, with a token made by the attempt itself, and renames it
only when its engine finished: a worker killed half way leaves a temp file nobody reads, and the
re-run (Dask re-runs the partitions of a dead worker) writes its own. With ``merge: true`` the
parts go to ``P.parts/`` and are joined, in partition order, into ``P`` at the end.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from typing import Any

import orjson

from pipenb.engine.outputs.file import FileOptions
from pipenb.lang.spec import ComponentSpec
from pipenb.lang.templates import FIELD_REF

EXT = {"ndjson": ".ndjson", "csv": ".csv", "raw": ".txt"}
PART_RE = re.compile(r"^part-(\d{5,})\.")


def file_options(c: ComponentSpec) -> FileOptions:
    """The options of a ``file`` output: the only output a cluster run writes part files for."""
    assert isinstance(c.options, FileOptions), c.name
    return c.options


def parts_dir(c: ComponentSpec) -> str:
    """The directory (template) of a file output's part files."""
    o = file_options(c)
    path = os.path.abspath(o.path)
    return path + ".parts" if o.merge else path


def part_name(c: ComponentSpec, index: int) -> str:
    return f"part-{index:05d}{EXT.get(file_options(c).format, '.out')}"


def temp_path(c: ComponentSpec, index: int, token: str) -> str:
    return os.path.join(parts_dir(c), f".{part_name(c, index)}.{token}.tmp")


def as_glob(template: str) -> str:
    """A glob matching every path a ``${field}`` template can make (a value never holds ``/``)."""
    out, last = [], 0
    for m in FIELD_REF.finditer(template):
        out.append(glob.escape(template[last : m.start()]))
        out.append("*")
        last = m.end()
    out.append(glob.escape(template[last:]))
    return "".join(out)


def commit(c: ComponentSpec, index: int, token: str) -> list[dict[str, Any]]:
    """Rename this attempt's temp files to their part names; return them with their sizes."""
    files = []
    for tmp in sorted(glob.glob(as_glob(temp_path(c, index, token)))):
        final = os.path.join(os.path.dirname(tmp), part_name(c, index))
        os.replace(tmp, final)
        files.append({"path": final, "size": os.path.getsize(final)})
    return files


def clear(c: ComponentSpec) -> None:
    """Remove the part files and temp files an earlier run left (ours only, by name)."""
    for path in glob.glob(os.path.join(as_glob(parts_dir(c)), "*")) + glob.glob(
        os.path.join(as_glob(parts_dir(c)), ".part-*.tmp")
    ):
        name = os.path.basename(path)
        if (
            PART_RE.match(name)
            or (name.startswith(".part-") and name.endswith(".tmp"))
            or name == "_manifest.json"
        ):
            os.unlink(path)


def sweep_temps(c: ComponentSpec) -> int:
    """Remove temp files of attempts that died (their partitions were run again)."""
    n = 0
    for path in glob.glob(os.path.join(as_glob(parts_dir(c)), ".part-*.tmp")):
        os.unlink(path)
        n += 1
    return n


def check_target(c: ComponentSpec) -> str | None:
    """Why the output path cannot hold part files, or None."""
    d = parts_dir(c)
    if "${" not in d and os.path.isfile(d):
        return (
            f"{d} is a file; a cluster run writes a directory of part files there: remove it, "
            "choose another path, or set merge: true to get one file"
        )
    return None


def merge(c: ComponentSpec, files: list[str]) -> dict[str, Any]:
    """Join part files (in order) into the output path atomically, then remove the parts."""
    o = file_options(c)
    target = os.path.abspath(o.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    skip_header = o.format == "csv" and o.header
    fd, tmp = tempfile.mkstemp(prefix=".merge-", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as out:
            for i, path in enumerate(files):
                with open(path, "rb") as fh:
                    if skip_header and i > 0:
                        fh.readline()
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for path in files:
        os.unlink(path)
    d = parts_dir(c)
    if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
    return {"path": target, "size": os.path.getsize(target)}


def write_manifest(c: ComponentSpec, doc: dict[str, Any]) -> None:
    d = parts_dir(c)
    if "${" in d or file_options(c).merge or not os.path.isdir(d):
        return
    write_json(os.path.join(d, "_manifest.json"), doc)


def write_json(path: str, doc: Any) -> None:
    """Atomically: a temp file in the same directory, then a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
    os.chmod(tmp, 0o644)  # like the part files beside it, not mkstemp's 0600
    os.replace(tmp, path)
