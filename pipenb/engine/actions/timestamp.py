"""``time``: parse a time field (strptime, ISO 8601, epoch) into ISO 8601 UTC or epoch numbers."""

from __future__ import annotations

import difflib
import functools
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, field_validator

from pipenb.engine.actions.common import get_src, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import ActionOptions, registry
from pipenb.lang.types import FieldName

NAMED_FORMATS = ("auto", "iso8601", "epoch", "epoch_ms")
CACHE_SIZE = 4096  # distinct input strings remembered per step; log times repeat within a second
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_DIRECTIVE = re.compile(r"%(.)", re.S)
_YEAR_DIRECTIVES = frozenset("YyGcx")


# YAML reads `on-error: null` as None; it means the option value "null".
OnError = Annotated[
    Literal["error", "keep", "drop", "null"], BeforeValidator(lambda v: "null" if v is None else v)
]


def _zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "Z"):
        return _UTC
    return zoneinfo.ZoneInfo(name)


class TimeOptions(ActionOptions):
    """Options of ``time``.

    ``field`` holds the time; ``format`` says how to read it: a strptime format such as
    ``"%d/%b/%Y:%H:%M:%S %z"``, ``iso8601``, ``epoch`` (seconds, a number or a numeric string),
    ``epoch_ms`` (milliseconds), or ``auto`` (the default: ISO 8601, else epoch seconds). A
    strptime format without a year (syslog's ``%b %d %H:%M:%S``) takes the current year, or the
    previous one when that would put the time more than a day in the future. Times without an
    offset are in ``timezone`` (an IANA name, ``UTC`` by default). The result goes to ``to``
    (default: ``field`` itself) as ``output``: ``iso8601`` (UTC, ``2017-06-09T20:10:40Z``),
    ``epoch`` (seconds: a whole number when whole)
    or ``epoch_ms`` (whole milliseconds). ``precision`` fixes the ISO 8601 fraction for the whole
    pipe, so the strings sort in time order: ``s``, ``ms`` (``.123``), ``us`` (``.123456``), or
    ``auto``: seconds for a strptime format without ``%f``, else milliseconds. A missing or null field is left alone. ``on-error`` says
    what happens to a value that cannot be read: send the event to ``errors:`` (``error``, the
    default), ``keep`` it unchanged, ``drop`` it, or set ``to`` to ``null``.
    """

    field: FieldName
    format: str = "auto"
    to: FieldName | None = None
    output: Literal["iso8601", "epoch", "epoch_ms"] = "iso8601"
    precision: Literal["auto", "s", "ms", "us"] = "auto"
    timezone: str = "UTC"
    on_error: OnError = "error"

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v in NAMED_FORMATS:
            return v
        if "%" not in v:
            close = difflib.get_close_matches(v, NAMED_FORMATS, n=1, cutoff=0.5)
            mean = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown format {v!r}{mean}; use {', '.join(NAMED_FORMATS)} or a strptime "
                "format such as '%d/%b/%Y:%H:%M:%S %z'"
            )
        try:
            datetime.strptime("", v)
        except ValueError as exc:
            if "directive" in str(exc) or "stray %" in str(exc):
                raise ValueError(f"invalid strptime format: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            _zone(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            close = difflib.get_close_matches(v, sorted(zoneinfo.available_timezones()), n=1)
            mean = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown time zone {v!r}{mean}; use an IANA name such as UTC or Europe/Paris"
            ) from None
        return v


# ---------------------------------------------------------------------------------- reading
# Each reader takes the field's value and returns an aware datetime or raises ValueError with a
# phrase saying what is wrong with the value ("is not ...", "does not match ...").


def _utcnow() -> datetime:
    return datetime.now(_UTC)


def _number(v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError("is not a number")
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                raise ValueError("is not a number") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("is not a number")
    return v


def _epoch_reader(unit: str) -> Callable[[Any], datetime]:
    def read(v: Any) -> datetime:
        try:
            n = _number(v)
        except ValueError:
            raise ValueError(f"is not a number of epoch {unit}") from None
        if unit == "seconds":
            return _EPOCH + timedelta(seconds=n)
        return _EPOCH + timedelta(milliseconds=n)

    return read


def _iso_reader(tz: tzinfo) -> Callable[[Any], datetime]:
    def read(v: Any) -> datetime:
        if not isinstance(v, str):
            raise ValueError("is not an ISO 8601 text")
        s = v.strip()
        if s[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read Z
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError("is not ISO 8601") from None
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)

    return read


def _auto_reader(tz: tzinfo) -> Callable[[Any], datetime]:
    iso, epoch = _iso_reader(tz), _epoch_reader("seconds")

    def read(v: Any) -> datetime:
        if isinstance(v, str):
            try:
                return iso(v)
            except ValueError:
                pass
        try:
            return epoch(v)
        except ValueError:
            raise ValueError("is neither ISO 8601 nor epoch seconds") from None

    return read


def _has_year(fmt: str) -> bool:
    return any(d in _YEAR_DIRECTIVES for d in _DIRECTIVE.findall(fmt))


def _strptime_reader(fmt: str, tz: tzinfo) -> Callable[[Any], datetime]:
    strptime = datetime.strptime

    def parse(v: str, f: str) -> datetime:
        try:
            dt = strptime(v, f)
        except ValueError as exc:
            msg = str(exc)
            why = "" if msg.startswith("time data") else f" ({msg})"
            raise ValueError(f"does not match format {fmt!r}{why}") from None
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)

    if _has_year(fmt):

        def read(v: Any) -> datetime:
            if not isinstance(v, str):
                raise ValueError(f"is not a text to read with format {fmt!r}")
            return parse(v, fmt)

        return read

    with_year = "%Y " + fmt

    def read_yearless(v: Any) -> datetime:
        if not isinstance(v, str):
            raise ValueError(f"is not a text to read with format {fmt!r}")
        now = _utcnow()
        try:
            dt = parse(f"{now.year} {v}", with_year)
        except ValueError:  # Feb 29 of a leap year, read in the year after
            return parse(f"{now.year - 1} {v}", with_year)
        if dt - now > timedelta(days=1):
            dt = parse(f"{now.year - 1} {v}", with_year)
        return dt

    return read_yearless


def _reader(fmt: str, tz: tzinfo) -> Callable[[Any], datetime]:
    if fmt == "auto":
        return _auto_reader(tz)
    if fmt == "iso8601":
        return _iso_reader(tz)
    if fmt == "epoch":
        return _epoch_reader("seconds")
    if fmt == "epoch_ms":
        return _epoch_reader("milliseconds")
    return _strptime_reader(fmt, tz)


# ---------------------------------------------------------------------------------- writing


def iso8601(dt: datetime, precision: str = "ms") -> str:
    """``2017-06-09T20:10:40Z`` with no, 3 or 6 fraction digits: one width for a whole pipe."""
    dt = dt.astimezone(_UTC)
    us = dt.microsecond
    frac = {"s": "", "ms": f".{us // 1000:03d}", "us": f".{us:06d}"}[precision]
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
        f"T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}{frac}Z"
    )


def iso_precision(opts: TimeOptions) -> str:
    if opts.precision != "auto":
        return opts.precision
    if opts.format not in NAMED_FORMATS and "%f" not in opts.format:
        return "s"
    return "ms"


def epoch(dt: datetime) -> int | float:
    """Seconds since 1970 UTC: an int when whole, else a float."""
    d = dt - _EPOCH
    s = d.days * 86400 + d.seconds
    return s + d.microseconds / 1_000_000 if d.microseconds else s


def epoch_ms(dt: datetime) -> int:
    """Whole milliseconds since 1970 UTC."""
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000


def _writer(opts: TimeOptions) -> Callable[[datetime], Any]:
    if opts.output == "iso8601":
        return functools.partial(iso8601, precision=iso_precision(opts))
    return epoch if opts.output == "epoch" else epoch_ms


def _converters(opts: TimeOptions) -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    """The step's cached converter for strings and one for any other value."""
    read, write, field = (
        _reader(opts.format, _zone(opts.timezone)),
        _writer(opts),
        opts.field,
    )
    hint = "; check format:, or set on-error: keep, drop or null"

    @functools.lru_cache(maxsize=CACHE_SIZE, typed=True)
    def convert(v: Any) -> Any:
        try:
            return write(read(v))
        except ValueError as exc:
            why = str(exc)
        except OverflowError:
            why = "is out of the range of dates"
        shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
        raise EventError(f"time: field {field!r} value {shown} {why}{hint}")

    def convert_other(v: Any) -> Any:
        if isinstance(v, (int, float)):  # hashable: cached too
            return convert(v)
        kinds: dict[type, str] = {dict: "an object", list: "an array"}
        kind = kinds.get(type(v), type(v).__name__)
        raise EventError(f"time: field {field!r} holds {kind}, not a time{hint}")

    return convert, convert_other


@registry.register("action", "time", TimeOptions)
def time_action(opts: TimeOptions, ctx: RunContext) -> EventStep:
    """Parse a time field into ISO 8601 UTC (or epoch seconds or milliseconds)."""
    ns = Namespace()
    ns.values["_str"] = str
    conv, conv_other = _converters(opts)
    fast, slow = ns.const(conv, "time"), ns.const(conv_other, "time")
    to = opts.to or opts.field
    call = f"_v = {fast}(_v) if _v.__class__ is _str else {slow}(_v)"
    if opts.on_error == "error":
        body = [call, set_code(to, "_v", ns)]
    else:
        failed = {"keep": "pass", "drop": "DROP", "null": set_code(to, "None", ns)}[opts.on_error]
        body = [
            f"try:\n    {call}\nexcept _EventError:\n    {failed}\n"
            f"else:\n    {set_code(to, '_v', ns)}"
        ]
    code = [f"_v = {get_src(opts.field)}", "if _v is not None:\n" + _indent(body)]
    return step(opts, code, ns)


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + sub for stmt in lines for sub in stmt.split("\n"))
