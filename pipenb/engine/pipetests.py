"""Run a pipe's own ``tests:`` section: input lines or events in, expected events out.

Expected events are compared as subsets (only the fields a test names must match), in order, and
the number of events must match. ``expect-count`` and ``expect-errors`` check counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipenb.engine.base import Event, RunContext
from pipenb.engine.build import compile_chain
from pipenb.engine.codecs.lines import decode_lines
from pipenb.lang.spec import PipeSpec, PipeTestCase


@dataclass
class PipeTestResult:
    name: str
    passed: bool
    message: str = ""
    output: list[Event] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    line: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "message": self.message,
            "line": self.line,
            "output": self.output,
            "errors": self.errors,
        }


# words, not emoji: they read the same in every font and to screen readers
PASS_HTML = "<b style='color:#2e7d32'>PASS</b>"
FAIL_HTML = "<b style='color:#c62828'>FAIL</b>"


@dataclass
class PipeTestReport:
    pipe: str
    results: list[PipeTestResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def __repr__(self) -> str:
        lines = [f"{self.pipe}: {sum(r.passed for r in self.results)}/{len(self.results)} passed"]
        for r in self.results:
            lines.append(f"  {'PASS' if r.passed else 'FAIL'} {r.name}")
            if not r.passed:
                lines.extend("      " + m for m in r.message.splitlines())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{PASS_HTML if r.passed else FAIL_HTML}</td><td>{html.escape(r.name)}</td>"
            f"<td><pre>{html.escape(r.message)}</pre></td></tr>"
            for r in self.results
        )
        return f"<b>{html.escape(self.pipe)}</b><table>{rows}</table>"


def is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(is_subset(e, a) for e, a in zip(expected, actual))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, float) or isinstance(actual, float):
        try:
            return abs(float(expected) - float(actual)) < 1e-9
        except (TypeError, ValueError):
            return False
    return bool(expected == actual)


def run_test(spec: PipeSpec, case: PipeTestCase) -> PipeTestResult:
    from pipenb.lang.validate import load_pipe

    if case.params:
        spec = load_pipe(spec.source, spec.file, {**_given(spec), **case.params})
    ctx = RunContext(pipe=spec.name, preview=True, values=spec.values)
    chain = compile_chain(spec, ctx)
    fmt = getattr(spec.input.options, "format", "lines")
    events: list[Event] = []
    for item in case.input:
        if isinstance(item, dict):
            events.append(dict(item))
        else:
            decoded, _rejects = decode_lines([item], fmt if fmt in ("lines", "json") else "lines")
            events.extend(decoded)
    out, failures = chain.run(events)
    tail, more = chain.flush()
    out += tail
    failures += more
    errors = [{"stage": chain.names[f.stage], "message": str(f.error)} for f in failures]
    problems: list[str] = []
    if case.expect is not None:
        problems += _compare(case.expect, out, "")
    if case.expect_outputs is not None:
        shares = _outputs(spec, ctx, out, errors)
        for oname, expected in case.expect_outputs.items():
            problems += _compare(expected, shares.get(oname, []), f"output {oname}: ")
    if case.expect_count is not None and len(out) != case.expect_count:
        problems.append(f"expected {case.expect_count} event(s), got {len(out)}")
    if case.expect_errors is not None and len(failures) != case.expect_errors:
        problems.append(f"expected {case.expect_errors} error(s), got {len(failures)}")
    if errors and case.expect_errors is None and problems:
        problems.append("errors: " + "; ".join(f"{e['stage']}: {e['message']}" for e in errors[:3]))
    line = spec.smap.where(case.path)[0]
    return PipeTestResult(case.name, not problems, "\n".join(problems), out, errors, line)


def _compare(expected: list[dict[str, Any]], out: list[Event], where: str) -> list[str]:
    problems = []
    if len(out) != len(expected):
        problems.append(f"{where}expected {len(expected)} event(s), got {len(out)}")
    for i, (exp, act) in enumerate(zip(expected, out)):
        if not is_subset(exp, act):
            diff = {k: act.get(k, "<missing>") for k in exp if not is_subset(exp[k], act.get(k))}
            problems.append(f"{where}event {i}: expected {exp}, differs in {diff}")
    return problems


def _outputs(
    spec: PipeSpec, ctx: RunContext, events: list[Event], errors: list[dict[str, Any]]
) -> dict[str, list[Event]]:
    """Each output's events, routed as the engine routes them (the outputs are not built)."""
    from pipenb.engine.preview import PreviewResult, _preview_routes

    res = PreviewResult(spec.name, [])
    _preview_routes(spec, ctx, events, res)
    errors.extend(
        {"stage": e["_error"]["stage"], "message": e["_error"]["message"]} for e in res.errors
    )
    return res.outputs


def _given(spec: PipeSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.values.items() if k in spec.params}


def run_tests(spec: PipeSpec) -> PipeTestReport:
    return PipeTestReport(spec.name, [run_test(spec, c) for c in spec.tests])
