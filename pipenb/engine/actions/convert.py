"""``convert``: cast fields to int, float, bool, str, sizes (``10KB``) or durations (``250ms``)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BeforeValidator

from pipenb.engine.actions.common import get_src, set_code, step
from pipenb.engine.base import RunContext
from pipenb.engine.steps import EventStep
from pipenb.errors import EventError
from pipenb.lang.expressions import Namespace
from pipenb.lang.registry import ActionOptions, mapping_shorthand, registry
from pipenb.lang.units import parse_duration, parse_size


def _int(v: Any) -> int:
    if isinstance(v, int):  # bool included: true -> 1
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("not a finite number")
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return _int(_float(v))  # "42.0", "1e3"
    raise ValueError(f"cannot make a number of {type(v).__name__}")


def _float(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(f):
            raise ValueError("not a finite number")
        return f
    raise ValueError(f"cannot make a number of {type(v).__name__}")


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError("expected true/false, yes/no, on/off or 1/0")


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return orjson.dumps(v).decode()  # objects and arrays become their JSON text


def _size(v: Any) -> int:
    return parse_size(v.strip() if isinstance(v, str) else v)


def _duration(v: Any) -> float:
    return parse_duration(v.strip() if isinstance(v, str) else v)


CASTS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "float": _float,
    "bool": _bool,
    "str": _str,
    "size": _size,
    "duration": _duration,
}


def _check_type(name: Any) -> str:
    if name not in CASTS:
        close = difflib.get_close_matches(str(name), list(CASTS), n=1, cutoff=0.5)
        mean = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown type {name!r}{mean}; types: {', '.join(CASTS)}")
    return name


CastName = Annotated[str, AfterValidator(_check_type)]
# YAML reads `on-error: null` as None; it means the option value "null".
OnError = Annotated[
    Literal["error", "null", "keep"], BeforeValidator(lambda v: "null" if v is None else v)
]


class ConvertOptions(ActionOptions):
    """Options of ``convert``: ``- convert: {status: int, bytes: size, took: duration}``.

    Each field is cast to its type: ``int`` (``"42"``, ``"42.0"``; ``42.7`` becomes ``42``),
    ``float``, ``bool`` (true/false, yes/no, on/off, 1/0 in any case), ``str`` (objects and
    arrays become JSON text), ``size`` (``"10KB"`` is 10000 bytes, ``"10KiB"`` 10240) or
    ``duration`` (``"250ms"`` is 0.25 seconds). Missing and null fields stay so. ``on-error`` says
    what happens when a value cannot be cast: send the event to ``errors:`` (``error``, the
    default), set the field to ``null``, or ``keep`` the value as it was. In the short form the
    keys ``when`` and ``on-error`` are options; the long form ``- convert: {fields: {...}}`` can
    cast fields with those names.
    """

    fields: dict[str, CastName]
    on_error: OnError = "error"


def _caster(field: str, type_name: str, on_error: str) -> Callable[[Any], Any]:
    cast = CASTS[type_name]

    def convert(v: Any) -> Any:
        try:
            return cast(v)
        except (ValueError, TypeError, OverflowError) as exc:
            if on_error == "null":
                return None
            if on_error == "keep":
                return v
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise EventError(
                f"convert: field {field!r} value {shown} is not a valid {type_name}: {exc}; "
                "fix the input, or set on-error: null or keep"
            ) from None

    return convert


@registry.register(
    "action", "convert", ConvertOptions, shorthand=mapping_shorthand({"when", "on-error"})
)
def convert_action(opts: ConvertOptions, ctx: RunContext) -> EventStep:
    """Cast fields to int, float, bool, str, size (bytes) or duration (seconds)."""
    ns = Namespace()
    code = []
    for field, type_name in opts.fields.items():
        fn = ns.const(_caster(field, type_name, opts.on_error), "cast")
        code.append(f"_v = {get_src(field)}")
        code.append(f"if _v is not None:\n    {set_code(field, f'{fn}(_v)', ns)}")
    return step(opts, code, ns)
