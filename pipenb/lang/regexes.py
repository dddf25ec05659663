"""Users' regular expressions, compiled so that no pattern can hang a pipe on one event.

A backtracking engine can take exponential time on a short line (``(a|aa)+$`` against 60 ``a``s
and a ``!``); with Python's ``re`` nothing stops it, so one line froze a pipe and SIGTERM waited
for it. ``compile_user`` gives every pattern of ``extract``, ``grok``, ``parse: grok``,
``matches()`` and ``mask`` (except its presets) one of two shapes:

- a plain ``re`` pattern when it is *provably linear*: anchored at the start (``^``, so one
  attempt per value), no alternation, every repeat of a single character class, and every
  repeat of varying length followed by a character it cannot match (``\\S+ ``, ``[^"]*"``,
  ``\\d+\\.``) or by the end. Backtracking then gives up each character at once, so matching
  takes time linear in the value. Typical log patterns (W2's) are like this and cost nothing.
- otherwise the ``regex`` package's pattern, matched with ``timeout=TIMEOUT``: a value that
  takes longer (CPU time) raises ``EventError``, so the event goes to ``errors:`` saying which
  pattern timed out, and the pipe goes on (and still stops on SIGTERM within ``TIMEOUT``).
  The time limit costs a clock read per match: about 1.5 to 2x ``re``'s time per match.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from pipenb.errors import EventError

try:  # Python 3.11+
    from re import _compiler as K  # type: ignore[attr-defined]
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_compile as K
    import sre_constants as C
    import sre_parse as P

log = logging.getLogger("pipenb.regexes")

#: CPU seconds one pattern may spend on one value before the event goes to ``errors:``
TIMEOUT = 1.0

_CHAR = {C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY}
_REPEAT = {C.MAX_REPEAT, C.MIN_REPEAT}
_STARTS = {C.AT_BEGINNING, C.AT_BEGINNING_STRING}
_ENDS = {C.AT_END, C.AT_END_STRING}
#: pairs of classes no character is in both of (\d is part of \w; \s shares nothing with \w)
_DISJOINT = [
    frozenset(pair)
    for pair in (
        (C.CATEGORY_SPACE, C.CATEGORY_NOT_SPACE),
        (C.CATEGORY_DIGIT, C.CATEGORY_NOT_DIGIT),
        (C.CATEGORY_WORD, C.CATEGORY_NOT_WORD),
        (C.CATEGORY_SPACE, C.CATEGORY_DIGIT),
        (C.CATEGORY_SPACE, C.CATEGORY_WORD),
        (C.CATEGORY_NOT_WORD, C.CATEGORY_DIGIT),
    )
]


class BoundedPattern:
    """A ``regex`` pattern whose ``search`` gives up after ``TIMEOUT`` seconds with a clear
    ``EventError``; otherwise used like an ``re.Pattern`` (``groupindex``, ``groups``)."""

    __slots__ = ("_rx", "_search", "groupindex", "groups", "pattern")

    def __init__(self, rx: Any):
        self.pattern: str = rx.pattern
        self.groupindex = rx.groupindex
        self.groups: int = rx.groups
        self._rx = rx
        self._search = rx.search

    def search(self, string: str) -> Any:
        try:
            return self._search(string, None, None, None, False, TIMEOUT)  # (positional: faster)
        except TimeoutError:
            raise self._timed_out(string) from None

    def sub(self, repl: Any, string: str, count: int = 0) -> str:
        try:
            return self._rx.sub(repl, string, count, timeout=TIMEOUT)
        except TimeoutError:
            raise self._timed_out(string) from None

    def _timed_out(self, string: str) -> EventError:
        return EventError(
            f"regular expression {self.pattern!r} took more than {TIMEOUT:g}s on a value of "
            f"{len(string)} characters (catastrophic backtracking): the event goes to "
            "errors:. Anchor the pattern with ^ and avoid nested or overlapping repeats "
            "such as (a+)+ or (a|aa)+"
        )


@functools.lru_cache(maxsize=512)
def compile_user(pattern: str, flags: int = 0) -> Any:
    """``re.compile(pattern)`` when the pattern is provably linear, else a ``BoundedPattern``.
    Raises ``re.error`` for a pattern ``re`` refuses (validation reports it)."""
    compiled = re.compile(pattern, flags)
    if is_linear(pattern, flags):
        return compiled
    import regex  # type: ignore[import-untyped]  # here: most pipes never need it (slow import)

    try:
        return BoundedPattern(regex.compile(pattern, flags | regex.V0))
    except regex.error as exc:  # re takes it, regex does not: run it unbounded, and say so
        log.warning("pattern %r runs without a time limit (%s)", pattern, exc)
        return compiled


def is_linear(pattern: str, flags: int = 0) -> bool:
    """Whether ``re`` matches ``pattern`` in time linear in the value (see the module doc)."""
    try:
        parsed = P.parse(pattern, flags)
    except re.error:
        return False
    if parsed.state.flags & re.MULTILINE:
        return False  # ^ would try at every line
    items = _flatten(list(parsed))
    if not items or items[0][0] != C.AT or items[0][1] not in _STARTS:
        return False
    for i, (op, av) in enumerate(items):
        if op == C.AT:
            if (av in _STARTS and i == 0) or (av in _ENDS and all(o == C.AT for o, _ in items[i:])):
                continue
            return False
        if op not in _REPEAT:
            continue
        lo, hi, body = av
        if lo == hi:
            continue
        rest = items[i + 1 :]
        if all(o == C.AT and a in _ENDS for o, a in rest):
            continue  # the last repeat: giving back characters only retries the end
        nxt_op, nxt = rest[0]
        if nxt_op in _REPEAT:
            if nxt[0] < 1:
                return False  # what follows may be empty: the next character is unknown
            nxt_op, nxt = nxt[2][0]
        if nxt_op not in _CHAR or not _disjoint(parsed.state, body[0], (nxt_op, nxt)):
            return False
    return True


def _flatten(items: list[Any]) -> list[Any] | None:
    """Groups opened up (captures do not change how matching backtracks); None when the
    pattern has something outside the linear class (alternation, lookaround, a repeated group,
    a backreference, a flag set inside)."""
    out: list[Any] = []
    for op, av in items:
        if op == C.SUBPATTERN:
            _group, add, remove, sub = av
            if add or remove:
                return None
            inner = _flatten(list(sub))
            if inner is None:
                return None
            out.extend(inner)
        elif op in _REPEAT:
            sub = list(av[2])
            if len(sub) != 1 or sub[0][0] not in _CHAR:
                return None
            out.append((op, (av[0], av[1], sub)))
        elif op in _CHAR or op == C.AT:
            out.append((op, av))
        else:
            return None
    return out


def _disjoint(state: Any, a: Any, b: Any) -> bool:
    """No character matches both single-character items ``a`` and ``b``."""
    for x, y in ((a, b), (b, a)):
        chars = _enumerate(x)
        if chars is not None:
            other = _matcher(state, y)
            return not any(other(c) for c in chars)
    return frozenset((_category(a), _category(b))) in _DISJOINT


def _enumerate(item: Any, limit: int = 1024) -> list[str] | None:
    """The characters a literal or a small positive set matches (None: too many to list)."""
    op, av = item
    if op == C.LITERAL:
        return [chr(av)]
    if op != C.IN:
        return None
    chars: list[str] = []
    for kind, val in av:
        if kind == C.LITERAL:
            chars.append(chr(val))
        elif kind == C.RANGE and val[1] - val[0] < limit:
            chars.extend(map(chr, range(val[0], val[1] + 1)))
        else:
            return None
        if len(chars) > limit:
            return None
    return chars


def _matcher(state: Any, item: Any) -> Any:
    """A function telling whether one character matches ``item`` (flags as in the pattern)."""
    sub = P.SubPattern(state, [item])
    rx = K.compile(sub, state.flags & ~re.MULTILINE)
    return lambda c: rx.fullmatch(c) is not None


def _category(item: Any) -> Any:
    """The one class (``\\s``, ``\\d``, ``\\w`` or their opposites) an item is, or None."""
    op, av = item
    if op == C.IN and len(av) == 1 and av[0][0] == C.CATEGORY:
        return av[0][1]
    return None
