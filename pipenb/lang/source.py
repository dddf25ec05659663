"""Load YAML into plain Python values while remembering where every value came from.

Validation reports ``file:line:column``; PyYAML's composer keeps marks on nodes, so we build plain
dicts/lists from the node tree and keep a side table from value path to position. Plain values keep
the runtime fast; the table is only read when something is wrong.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipenb.errors import PipeSyntaxError, Problem

Path = tuple[Any, ...]
MAX_DEPTH = 64  # nesting levels of a pipe document: deeper is a mistake (or an attack)
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 surprises that bite pipe authors (``on``/``no`` as booleans)."""


# YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans; `on-miss: keep` would still work but
# `level: no` would not. Keep only true/false as booleans, as YAML 1.2 does.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class SourceMap:
    """Positions of the values of one document, keyed by their path from the root."""

    file: str = "<pipe>"
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    line_offset: int = 0
    lines: list[str] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``, or of its nearest ancestor we know."""
        table = self.key_positions if key else self.positions
        p = tuple(path)
        while True:
            if p in table:
                line, col = table[p]
                return line + self.line_offset, col
            if key and p in self.positions:
                line, col = self.positions[p]
                return line + self.line_offset, col
            if not p:
                return (1 + self.line_offset, 1)
            p = p[:-1]

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(line, col, message, tuple(path), self.file)


def decode_text(data: bytes, file: str = "<pipe>") -> str:
    """A pipe file's bytes as text; bytes that are not UTF-8 are a located Problem."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        msg = f"the file is not UTF-8 text: byte {data[exc.start]:#04x} cannot be read"
        raise PipeSyntaxError([Problem(line, col, msg, (), file)]) from None


def yaml_hint(problem: str, context: str, line: str, column: int, previous: str = "") -> str | None:
    """The usual cause of a YAML syntax error, in words: the parser's own message names the
    token it choked on, not the quoting that would have avoided it. ``previous``: the line
    before, where a comment may have cut an open ``[`` or ``{`` short."""
    before = line[: max(0, column - 1)]
    cut_before = "flow" in context and not before.strip() and " #" in previous
    if " #" in before or "\t#" in before or cut_before:
        return (
            "' #' starts a comment in YAML, which cut the value short: quote a value that "
            "contains '#' (e.g. pattern: '^#(?P<n>\\d+)')"
        )
    if "mapping values are not allowed" in problem:
        return (
            "a ': ' inside an unquoted value starts a mapping: quote the whole value "
            """(e.g. filter: "message == 'a: b'")"""
        )
    if "flow mapping" in context or "flow sequence" in context:
        closer = "}" if "mapping" in context else "]"
        return (
            f"inside {{...}} or [...] a ',' ends an entry and '{closer}' the whole: quote a "
            "value that contains ',', '{', '}', '[', ']', '?' or ': '"
        )
    return None


def load_yaml(text: str, file: str = "<pipe>", line_offset: int = 0) -> tuple[Any, SourceMap]:
    """Parse one YAML document; return its value and a SourceMap. Raises PipeSyntaxError."""
    smap = SourceMap(file=file, line_offset=line_offset, lines=text.splitlines())
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML syntax: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            msg = f"YAML syntax: {exc.problem} ({exc.context})"
        source_line = smap.lines[line - 1] if 0 < line <= len(smap.lines) else ""
        previous = smap.lines[line - 2] if 1 < line <= len(smap.lines) + 1 else ""
        hint = yaml_hint(str(exc.problem or ""), str(exc.context or ""), source_line, col, previous)
        if hint:
            msg = f"{msg}; {hint}"
        raise PipeSyntaxError([Problem(line + line_offset, col, msg, (), file)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise PipeSyntaxError([Problem(1 + line_offset, 1, f"YAML: {exc}", (), file)]) from None
    except RecursionError:
        msg = f"YAML: the document is nested too deeply (at most {MAX_DEPTH} levels)"
        raise PipeSyntaxError([Problem(1 + line_offset, 1, msg, (), file)]) from None
    if node is None:
        return None, smap
    loader = _Loader("")
    # aliases may repeat a node any number of times ("billion laughs"): building more values
    # than the text could hold without them is refused, so loading stays linear in its size
    budget = [2 * len(text) + 1000]
    try:
        return _build(node, (), smap, loader, budget), smap
    finally:
        loader.dispose()


def _construct(node: yaml.Node, smap: SourceMap, loader: _Loader) -> Any:
    """A scalar (or a key) as PyYAML reads it; a tag or value it cannot read is a Problem."""
    line, col = node.start_mark.line + 1 + smap.line_offset, node.start_mark.column + 1
    if node.tag == MERGE_TAG:
        msg = "YAML merge keys (<<) are not supported; write the keys out"
        raise PipeSyntaxError([Problem(line, col, msg, (), smap.file)])
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        msg = f"YAML: {exc.problem or exc.context}"
        raise PipeSyntaxError([Problem(line, col, msg, (), smap.file)]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        msg = f"YAML: cannot read this value: {exc}"
        raise PipeSyntaxError([Problem(line, col, msg, (), smap.file)]) from None


def _build(node: yaml.Node, path: Path, smap: SourceMap, loader: _Loader, budget: list[int]) -> Any:
    smap.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    budget[0] -= 1
    if budget[0] < 0 or len(path) > MAX_DEPTH:
        line, col = smap.positions[path]
        msg = (
            f"YAML: the document is nested too deeply (at most {MAX_DEPTH} levels)"
            if budget[0] >= 0
            else "YAML: aliases (*name) expand the document to too many values"
        )
        raise PipeSyntaxError([Problem(line + smap.line_offset, col, msg, path, smap.file)])
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        problems = []
        for knode, vnode in node.value:
            key = _construct(knode, smap, loader)
            if isinstance(key, (list, dict, set, tuple)):
                key = reprlib.repr(key)  # bounded: str() of a shared structure can explode
            elif not isinstance(key, (str, int, float, bool)) or key is None:
                key = str(key)
            if key in out:
                line, col = knode.start_mark.line + 1, knode.start_mark.column + 1
                problems.append(
                    Problem(line + smap.line_offset, col, f"duplicate key {key!r}", path, smap.file)
                )
            kpath = (*path, key)
            smap.key_positions[kpath] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            out[key] = _build(vnode, kpath, smap, loader, budget)
        if problems:
            raise PipeSyntaxError(problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), smap, loader, budget) for i, v in enumerate(node.value)]
    return _construct(node, smap, loader)
