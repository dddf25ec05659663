"""Log rate limiting: the same message at most N times per interval, then a count of the rest.

An attacker who can make the server log (bad requests, refused connections, broken check-ins)
must not be able to fill the disk: a flood of one kind of line becomes ``repeats`` lines and,
once per ``window``, one line saying how many more were not written. "The same message" is the
same logger, level, message template (before its arguments are filled in) and exception type,
so lines that differ only in an address or an id count as one kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pipenb.server.logs")
MAX_KINDS = 10_000  # kinds of message tracked at once; past it the counts start over


@dataclass
class _Count:
    start: float
    passed: int = 0
    dropped: int = 0


class RepeatFilter(logging.Filter):
    """A handler filter; ``flush()`` (call it every ``window``) reports what was dropped."""

    def __init__(
        self, repeats: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__()
        self.repeats, self.window, self.clock = repeats, window, clock
        self.counts: dict[tuple[object, ...], _Count] = {}

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple[object, ...]:
        exc = record.exc_info[0] if record.exc_info else None
        return (record.name, record.levelno, str(record.msg)[:300], exc)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "pipenb_summary", False):
            return True
        now = self.clock()
        key = self.kind(record)
        count = self.counts.get(key)
        if count is None or now - count.start >= self.window:
            if count is not None and count.dropped:
                self._report(key, count)
            if len(self.counts) >= MAX_KINDS:
                self.flush()
                self.counts.clear()
            count = self.counts[key] = _Count(start=now)
        if count.passed < self.repeats:
            count.passed += 1
            return True
        count.dropped += 1
        return False

    def flush(self) -> None:
        """Report the kinds whose window is over and that dropped lines; forget quiet ones."""
        now = self.clock()
        for key, count in list(self.counts.items()):
            if now - count.start >= self.window:
                if count.dropped:
                    self._report(key, count)
                del self.counts[key]

    def _report(self, key: tuple[object, ...], count: _Count) -> None:
        name, _level, template, _exc = key
        log.warning(
            "%d more lines like this from %s were not logged (at most %d per %.0f s): %s",
            count.dropped,
            name,
            self.repeats,
            self.window,
            template,
            extra={"pipenb_summary": True},
        )
        count.dropped = 0


def install(repeats: int, window: float) -> RepeatFilter:
    """Put a RepeatFilter on every handler of the root logger (where every line ends up)."""
    f = RepeatFilter(repeats, window)
    for handler in logging.getLogger().handlers:
        handler.addFilter(f)
    return f
