"""Five-field cron schedules (``minute hour day-of-month month day-of-week``) for ``exec``.

Each field takes ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a``
to the field's maximum), or a comma-separated list of those. Months and weekdays also take
English three-letter names (``jan``, ``mon``); day-of-week 0 and 7 are both Sunday. The macros
``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly``
(``@annually``) stand for their usual expressions.

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither starts with
``*``), a day matches when *either* matches: ``0 0 1 * mon`` fires on the 1st and on Mondays.

Times are naive ``datetime``s: the caller decides the clock (``exec`` uses the host's local time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# name, low, high, value names (index + low is the value)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
_HORIZON_YEARS = 9  # a schedule that never fires within this is rejected (Feb 29: every 4-8)


@dataclass(frozen=True)
class Cron:
    """A parsed schedule. ``next_after(dt)`` is the first firing time strictly after ``dt``."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_star: bool
    weekdays_star: bool

    def day_matches(self, dt: datetime) -> bool:
        dom = dt.day in self.days
        dow = (dt.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next_after(self, dt: datetime) -> datetime:
        """The first time after ``dt`` (at second 0) this schedule fires."""
        t = dt.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t.year + _HORIZON_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _next_month(t)
                continue
            if not self.day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t
        raise ValueError(f"cron expression {self.text!r} never fires")

    def times(self, start: datetime, n: int) -> list[datetime]:
        """The next ``n`` firing times after ``start`` (for tests and docs)."""
        out = []
        for _ in range(n):
            start = self.next_after(start)
            out.append(start)
        return out


def _next_month(t: datetime) -> datetime:
    if t.month == 12:
        return t.replace(year=t.year + 1, month=1, day=1, hour=0, minute=0)
    return t.replace(month=t.month + 1, day=1, hour=0, minute=0)


def parse_cron(text: str) -> Cron:
    """Parse a cron expression; raises ValueError saying which field is wrong and why."""
    if not isinstance(text, str):
        raise ValueError(f"a cron expression is a string, got {type(text).__name__}")
    expr = MACROS.get(text.strip().lower(), text)
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {text!r}"
        )
    sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(
        text,
        sets[0],
        sets[1],
        sets[2],
        sets[3],
        weekdays,
        days_star=parts[2].startswith("*"),
        weekdays_star=parts[4].startswith("*"),
    )
    cron.next_after(datetime(2000, 1, 1))  # rejects "0 0 31 2 *" and its kind
    return cron


def _field(text: str, name: str, low: int, high: int, names: list[str] | None) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"cron {name}: empty item in {text!r}")
        rng, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {name}: the step in {item!r} must be a positive number")
            step = int(step_text)
        if rng == "*":
            first, last = low, high
        elif "-" in rng:
            a, _, b = rng.partition("-")
            first, last = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if first > last:
                raise ValueError(f"cron {name}: range {rng!r} runs backwards")
        else:
            first = _value(rng, name, low, high, names)
            last = high if slash else first  # "5/15" means 5, 20, 35, 50
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    t = text.strip().lower()
    if names is not None and t in names:
        return names.index(t) + (1 if name == "month" else 0)
    if not t.isdigit():
        hint = f" or a name such as {names[1]!r}" if names else ""
        raise ValueError(f"cron {name}: {text!r} is not a number{hint}")
    v = int(t)
    if not low <= v <= high:
        raise ValueError(f"cron {name}: {v} is out of range {low}-{high}")
    return v
