"""What the three fuzzers share: Hypothesis settings, a wall-clock limit, and the grammar of
expressions the language accepts (``valid_expressions``), which the pipe and engine fuzzers embed
in whole documents.

Hypothesis is deterministic here (``derandomize=True``), so CI runs the same examples each time.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from pipenb.lang.expressions import ARITY, FUNCTIONS


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic, no deadline, no example database, no health checks, no explain phase."""
    return settings(
        derandomize=True,
        deadline=None,
        database=None,
        max_examples=max_examples,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain: it reruns a lot
    )


# ------------------------------------------------------------------------------ time limits


class Hang(BaseException):
    """Raised by ``time_limit`` (a BaseException, so no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the call") -> Iterator[None]:
    """Fail with ``Hang`` when the block runs longer than ``seconds`` (SIGALRM, main thread).

    pytest-timeout's own alarm (if armed) is put back afterwards with the time it had left.
    """

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"{what} took more than {seconds}s")

    old = signal.signal(signal.SIGALRM, alarm)
    start = time.monotonic()
    prev_delay, prev_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if prev_delay:
            left = max(0.001, prev_delay - (time.monotonic() - start))
            signal.setitimer(signal.ITIMER_REAL, left, prev_interval)


# ------------------------------------------------------------------------------ expressions

FIELDS = [
    "a",
    "b",
    "s",
    "n",
    "f",
    "big",
    "lst",
    "d",
    "missing",
    "http.status",
    "http.list[1]",
    'event["odd key"]',
    "d.x.y",
    "lst[0]",
    "event",
]
EVENT: dict[str, Any] = {
    "a": 1,
    "b": None,
    "s": "Hello ünïcode ☃",
    "n": "42",
    "f": 2.5,
    "big": 2**70,
    "lst": [1, "two", None, [3]],
    "d": {"x": {"y": -3}},
    "http": {"status": 500, "list": [1, 2]},
    "odd key": True,
    "__class__": "just a key",
}

literal = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["0", "1", "-1", "2", "10", "64", "1e308", "0.5", "-0.0", "1_000", "0x10"]),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(max_size=8).map(repr),
    st.sampled_from(["true", "false", "null", "True", "False", "None", "[]", "{}", "()"]),
)
field = st.sampled_from(FIELDS)
BINOPS = ["+", "-", "*", "/", "//", "%", "**"]
CMPOPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
REGEXES = ["'^H'", "'o$'", "'\\\\d+'", "'(?i)hello'", "'[a-z]+'", "''"]


def _call(name: str, args: list[str]) -> str:
    return f"{name}({', '.join(args)})"


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def call(draw: st.DrawFn) -> str:
        name = draw(st.sampled_from(FUNCTIONS))
        if name == "exists":
            return f"exists({draw(st.sampled_from(FIELDS[:-1]))})"
        if name == "matches":
            return f"matches({draw(inner)}, {draw(st.sampled_from(REGEXES))})"
        lo, hi = ARITY[name]
        n = draw(st.integers(lo, min(hi, 3)))
        return _call(name, [draw(inner) for _ in range(n)])

    return st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(BINOPS), inner),
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(CMPOPS), inner),
        st.builds(lambda a, b, c: f"({a} < {b} <= {c})", inner, inner, inner),
        st.builds(
            lambda a, b: f"({a} is null)" if b else f"({a} is not None)", inner, st.booleans()
        ),
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["and", "or"]), inner),
        st.builds(lambda a, op: f"({op}{a})", inner, st.sampled_from(["not ", "-", "+"])),
        st.builds(lambda a, b, c: f"({a} if {b} else {c})", inner, inner, inner),
        st.builds(lambda xs: "[" + ", ".join(xs) + "]", st.lists(inner, max_size=3)),
        st.builds(lambda k, v: f"{{{k}: {v}}}", st.text(max_size=3).map(repr), inner),
        st.builds(lambda a, i: f"{a}[{i}]", inner, st.sampled_from(["0", "-1", "'x'", "a"])),
        st.composite(lambda draw: call(draw))(),
    )


#: expressions from the grammar: what the language accepts
valid_expressions = st.recursive(st.one_of(literal, field), _extend, max_leaves=12)
