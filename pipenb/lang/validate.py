"""Validate a whole pipe document and report every problem at once, each with its position.

The flow: YAML with positions -> top-level keys -> params -> ``{{templates}}`` rendered -> each
component looked up in the registry and its options checked by its pydantic model. Problems are
collected rather than raised one by one, because an analyst fixing a cell wants them all.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from pipenb.errors import PipeSyntaxError, Problem
from pipenb.lang.expressions import ExpressionError
from pipenb.lang.registry import Kind, registry
from pipenb.lang.source import Path, SourceMap, load_yaml
from pipenb.lang.spec import ComponentSpec, ParamSpec, PipeSpec, PipeTestCase, RouteSpec
from pipenb.lang.suggest import did_you_mean
from pipenb.lang.templates import BUILTINS, TEMPLATE, builtin_values, render

TOP_KEYS = (
    "name",
    "description",
    "labels",
    "params",
    "input",
    "actions",
    "output",
    "outputs",
    "route",
    "errors",
    "tests",
)
ROUTE_MODES = ("all", "first")
ROUTE_KEYS = ("when", "actions")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PARAM_KEYS = ("default", "enum", "type", "description", "secret")
PARAM_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
TEST_KEYS = ("name", "input", "expect", "expect-count", "expect-errors", "params")


def local_builtins(name: str) -> dict[str, Any]:
    """Built-in template values for a pipe run outside an agent (preview, ``pipenb run``)."""
    host = socket.gethostname()
    return builtin_values("local", host, name, "local")


def load_pipe(
    text: str,
    file: str = "<pipe>",
    params: dict[str, Any] | None = None,
    builtins: dict[str, Any] | None = None,
    *,
    line_offset: int = 0,
    require_params: bool = False,
) -> PipeSpec:
    """Parse and validate ``text``; raise PipeSyntaxError listing every located problem.

    ``params`` override declared defaults (strings from a command line are converted to the
    declared type). With ``require_params`` a parameter without default and value is an error;
    otherwise a placeholder is used, so ``pipenb check`` can validate a pipe meant for deploys.
    """
    doc, smap = load_yaml(text, file, line_offset)
    checker = _Checker(smap)
    spec = checker.document(doc, params or {}, builtins, require_params)
    if checker.problems:
        raise PipeSyntaxError(checker.problems)
    assert spec is not None
    spec.source = text
    spec.file = file
    spec.smap = smap
    return spec


class _Checker:
    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.problems: list[Problem] = []
        self.doc: Any = None
        self.unresolved: set[str] = set()  # required params checked with a placeholder value
        self.route_names: list[str] = []  # names under outputs:, for tests' expect: {NAME: ...}

    def add(self, path: Path, message: str, *, key: bool = False) -> None:
        self.problems.append(self.smap.problem(path, message, key=key))

    # ------------------------------------------------------------------ document
    def document(
        self,
        doc: Any,
        given: dict[str, Any],
        builtins: dict[str, Any] | None,
        require_params: bool,
    ) -> PipeSpec | None:
        if not isinstance(doc, dict):
            self.add((), "a pipe is a YAML mapping with name, input, actions and output")
            return None
        self.doc = doc
        for key in doc:
            if key not in TOP_KEYS:
                self.add(
                    (key,),
                    f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}; "
                    f"a pipe has: {', '.join(TOP_KEYS)}",
                    key=True,
                )
        for key in ("name", "input"):
            if key not in doc:
                self.add((), f"missing required key {key!r}")
        if "output" not in doc and "outputs" not in doc:
            self.add((), "missing required key 'output'")
        if "output" in doc and "outputs" in doc:
            self.add(
                ("outputs",),
                "a pipe has output: (one) or outputs: (several, by name), not both",
                key=True,
            )

        name = doc.get("name")
        if "name" in doc and (
            not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 200
        ):
            self.add(
                ("name",),
                f"invalid name {name!r}: use up to 200 lower-case letters, digits, '-' and '_', "
                "starting with a letter or digit",
            )
            name = None
        name = name if isinstance(name, str) else "pipe"
        description = doc.get("description") or ""
        if not isinstance(description, str):
            self.add(("description",), "description must be a string")
            description = ""
        labels = self.labels(doc.get("labels"))
        params = self.params(doc.get("params"))
        values = self.values(params, given, require_params)
        values.update(local_builtins(name) if builtins is None else builtins)
        values.setdefault("pipe.name", name)
        self.expand_param_templates(params, given, values)

        rendered: dict[str, Any] = {}
        for section in ("input", "actions", "output", "outputs", "errors"):
            if section in doc:
                rendered[section], errs = render(doc[section], values, (section,))
                for err in errs:
                    self.add(err.path, str(err))
        inp = self.component("input", rendered["input"], ("input",)) if "input" in doc else None
        out = self.component("output", rendered["output"], ("output",)) if "output" in doc else None
        routes: list[RouteSpec] = []
        if "outputs" in doc and "output" not in doc:
            routes = self.routes(rendered["outputs"])
            self.route_names = [r.name for r in routes]
            out = routes[0].output if routes else None
        route_mode = doc.get("route", "all")
        if route_mode not in ROUTE_MODES:
            self.add(("route",), f"route must be all or first, not {route_mode!r}")
            route_mode = "all"
        elif "route" in doc and "outputs" not in doc:
            self.add(("route",), "route: applies to outputs: (several outputs)", key=True)
        errs_out = None
        if doc.get("errors") is not None:
            errs_out = self.component("output", rendered["errors"], ("errors",))
        actions: list[ComponentSpec] = []
        raw_actions = rendered.get("actions")
        if raw_actions is None:
            raw_actions = []
        if not isinstance(raw_actions, list):
            self.add(("actions",), "actions must be a list, e.g. '- filter: level == \"error\"'")
            raw_actions = []
        for i, raw in enumerate(raw_actions):
            spec = self.component("action", raw, ("actions", i))
            if spec is not None:
                actions.append(spec)
        tests = self.tests(doc.get("tests"), values)
        if inp is None or out is None:
            return None
        return PipeSpec(
            name=name,
            description=description,
            labels=labels,
            params=params,
            input=inp,
            actions=actions,
            output=out,
            errors=errs_out,
            tests=tests,
            values=values,
            routes=routes,
            route=route_mode,
        )

    # ------------------------------------------------------------------ outputs (routes)
    def routes(self, raw: Any) -> list[RouteSpec]:
        """``outputs: {NAME: {when: EXPR, actions: [...], <output>: {...}}}``."""
        eg = 'outputs: {errors: {when: level == "error", file: {path: e.ndjson}}}'
        if not isinstance(raw, dict) or not raw:
            self.add(("outputs",), f"outputs must be a mapping of name: output, e.g. {eg}")
            return []
        out: list[RouteSpec] = []
        for name, body in raw.items():
            path: Path = ("outputs", name)
            if not isinstance(name, str) or not NAME_RE.match(name):
                self.add(path, f"invalid output name {name!r}: use a-z, 0-9, '-', '_'", key=True)
                continue
            if not isinstance(body, dict):
                self.add(path, f"output {name!r} must be a mapping, e.g. {eg}")
                continue
            comp = {k: v for k, v in body.items() if k not in ROUTE_KEYS}
            output = self.component("output", comp, path)
            when = None
            if "when" in body:
                if name == "default":
                    self.add(
                        (*path, "when"),
                        "the default output takes what no other output took: it has no when:",
                        key=True,
                    )
                else:
                    when = self.route_when(body["when"], (*path, "when"))
            actions: list[ComponentSpec] = []
            raw_actions = body.get("actions") or []
            if not isinstance(raw_actions, list):
                self.add((*path, "actions"), "actions must be a list")
                raw_actions = []
            for i, a in enumerate(raw_actions):
                spec = self.component("action", a, (*path, "actions", i))
                if spec is not None and spec.name == "aggregate":
                    # an output's share is cut at each write: time windows would not close
                    self.add(
                        (*path, "actions", i, "aggregate"),
                        "aggregate cannot be one of an output's own actions; put it in the "
                        "shared actions: (before the routes)",
                        key=True,
                    )
                elif spec is not None:
                    actions.append(spec)
            if output is not None:
                out.append(RouteSpec(name, when, output, actions, path))
        return out

    def route_when(self, expr: Any, path: Path) -> Any:
        comp = registry.get("action", "filter")
        assert comp is not None
        try:
            return comp.options.model_validate({"expr": expr})
        except ValidationError as exc:
            err = _relevant(exc.errors())[0]
            cause = (err.get("ctx") or {}).get("error")
            msg = str(cause) if isinstance(cause, Exception) else err.get("msg", "invalid")
            self.add(path, f"when: {msg.removeprefix('Value error, ')}")
            return None

    def labels(self, raw: Any) -> list[str]:
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            self.add(("labels",), "labels must be a list of strings, e.g. labels: [web, eu]")
            return []
        return list(raw)

    # ------------------------------------------------------------------ params
    def params(self, raw: Any) -> dict[str, ParamSpec]:
        out: dict[str, ParamSpec] = {}
        if raw is None:
            return out
        if not isinstance(raw, dict):
            self.add(("params",), "params must be a mapping of name: {default: ..., enum: [...]}")
            return out
        for pname, pdef in raw.items():
            path = ("params", pname)
            if not isinstance(pname, str) or not re.match(r"^[A-Za-z_][\w-]*$", pname):
                self.add(path, f"invalid parameter name {pname!r}", key=True)
                continue
            if pname.split(".")[0] in ("agent", "pipe", "deployment"):
                self.add(path, f"{pname!r} is a built-in name; choose another", key=True)
                continue
            if not isinstance(pdef, dict):
                out[pname] = ParamSpec(pname, default=pdef, type=_type_name(pdef))
                continue
            for k in pdef:
                if k not in PARAM_KEYS:
                    self.add(
                        (*path, k),
                        f"unknown key {k!r} in parameter {pname!r}{did_you_mean(k, PARAM_KEYS)}; "
                        f"allowed: {', '.join(PARAM_KEYS)}",
                        key=True,
                    )
            ptype = pdef.get("type")
            if ptype is not None and ptype not in PARAM_TYPES:
                self.add(
                    (*path, "type"),
                    f"unknown type {ptype!r}; use one of {', '.join(PARAM_TYPES)}",
                )
                ptype = None
            enum = pdef.get("enum")
            if enum is not None and not isinstance(enum, list):
                self.add((*path, "enum"), "enum must be a list of allowed values")
                enum = None
            required = "default" not in pdef
            default = pdef.get("default")
            if ptype is None and not required:
                ptype = _type_name(default)
            if not required and enum is not None and default not in enum:
                self.add((*path, "default"), f"default {default!r} is not one of {enum}")
            desc = pdef.get("description") or ""
            secret = pdef.get("secret", False)
            if not isinstance(secret, bool):
                self.add((*path, "secret"), "secret must be true or false")
                secret = True  # treat the value as secret all the same: never show it
            if secret and not required:
                self.add(
                    (*path, "default"),
                    f"secret parameter {pname!r} takes no default: the pipe text is stored and "
                    f"shown; give the value when deploying (--param {pname}=...)",
                    key=True,
                )
            out[pname] = ParamSpec(
                pname, default, required, tuple(enum) if enum else None, ptype, str(desc), secret
            )
        return out

    def values(
        self, params: dict[str, ParamSpec], given: dict[str, Any], require: bool
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for k in given:
            if k not in params and k not in BUILTINS:
                self.problems.append(
                    Problem(
                        0,
                        0,
                        f"unknown parameter {k!r}{did_you_mean(k, list(params))}; "
                        f"declared: {', '.join(params) or 'none'}",
                        ("params", k),
                        self.smap.file,
                    )
                )
        for pname, p in params.items():
            if pname in given:
                try:
                    v = coerce_param(p, given[pname])
                except ValueError as exc:
                    self.add(("params", pname), str(exc), key=True)
                    v = given[pname]  # still known, so its uses are not "unknown" as well
                values[pname] = v
            elif p.required:
                self.unresolved.add(pname)
                if require:
                    self.add(
                        ("params", pname),
                        f"parameter {pname!r} has no default and no value was given; "
                        f"pass it (e.g. --param {pname}=...)",
                        key=True,
                    )
                values[pname] = _placeholder(p)
            else:
                values[pname] = p.default
        return values

    def expand_param_templates(
        self, params: dict[str, ParamSpec], given: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """``default: "/x/{{agent.name}}.ndjson"``: built-ins inside a parameter's value are
        expanded too, so each agent gets its own file and not one named ``{{agent.name}}``.

        Only built-ins: a parameter made of other parameters would need an order to expand in.
        """
        builtins = {k: values[k] for k in BUILTINS if k in values}
        for pname in params:
            value = values.get(pname)
            if not isinstance(value, str) or "{{" not in value:
                continue
            where: Path = ("params", pname) if pname in given else ("params", pname, "default")
            values[pname], errs = render(value, builtins, where)
            if errs:
                bad = [m.group(1) for m in TEMPLATE.finditer(value) if m.group(1) not in builtins]
                self.add(
                    where,
                    f"{{{{{bad[0] if bad else '?'}}}}} in parameter {pname!r}: a parameter's "
                    f"value may use the built-ins only ({', '.join(BUILTINS)})",
                )

    # ------------------------------------------------------------------ components
    def component(self, kind: Kind, raw: Any, path: Path) -> ComponentSpec | None:
        names = registry.names(kind)
        example = {"input": "files: {path: /var/log/*.log}", "output": "file: {path: out.ndjson}"}
        if not isinstance(raw, dict) or len(raw) != 1:
            what = "an action" if kind == "action" else f"the {kind}"
            eg = example.get(kind, 'filter: level == "error"')
            self.add(
                path,
                f"{what} must be a mapping with exactly one {kind} name, e.g. '{eg}'; "
                f"{kind}s: {', '.join(names)}",
            )
            return None
        ((name, body),) = raw.items()
        cpath = (*path, name)
        comp = registry.get(kind, name)
        if comp is None:
            self.add(
                cpath,
                f"unknown {kind} {name!r}{did_you_mean(name, names)}; {kind}s: {', '.join(names)}",
                key=True,
            )
            return None
        raw = comp.normalise(body)
        try:
            opts = comp.options.model_validate(raw)
        except ValidationError as exc:
            reported = [
                self.option_error(comp.name, comp.options, cpath, body, err)
                for err in _relevant(exc.errors())
            ]
            if any(reported) or not isinstance(raw, dict):
                return None
            # every error came from a placeholder of a parameter given at run or deploy time:
            # valid as far as can be told now (this spec is only checked, never run)
            opts = comp.options.model_construct(**raw)
        except (ValueError, TypeError) as exc:
            self.add(cpath, f"{name}: {exc}")
            return None
        return ComponentSpec(comp, opts, cpath)

    def option_error(self, cname: str, model: type, cpath: Path, body: Any, err: dict) -> bool:
        """Report one pydantic error at its place; False when it was not worth reporting."""
        loc = tuple(err.get("loc", ()))
        path = self.locate(cpath, loc, body)
        if self.from_placeholder(path):
            return False  # the value comes from a parameter given only at run or deploy time
        self._option_error(cname, model, path, loc, err)
        return True

    def _option_error(self, cname: str, model: type, path: Path, loc: tuple, err: dict) -> None:
        etype = err.get("type", "")
        where = ".".join(str(x) for x in loc)
        if etype == "extra_forbidden":
            key = loc[-1] if loc else "?"
            # inside `rotate: {...}` or `batch: {...}`: that mapping's own options
            owner, inner = _nested_model(model, loc[:-1])
            allowed = _allowed(owner)
            where_key = ".".join([cname, *(str(x) for x in loc[:inner])])
            self.add(
                path,
                f"unknown option {key!r} for {where_key}{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}",
                key=True,
            )
            return
        if etype == "missing":
            self.add(
                path[:-1] if path[-1] == loc[-1] else path,
                f"{cname}: missing required option {where!r}",
            )
            return
        cause = (err.get("ctx") or {}).get("error")
        msg = str(cause) if isinstance(cause, Exception) else err.get("msg", "invalid")
        if isinstance(cause, ExpressionError):
            line, col = self.smap.where(path)
            col += cause.offset + self.quote_shift(line, col)
            msg += self.flow_comma_hint(line, msg)
            self.problems.append(
                Problem(
                    line,
                    col,
                    f"{cname}.{where}: {msg}" if where else f"{cname}: {msg}",
                    path,
                    self.smap.file,
                )
            )
            return
        msg = msg.removeprefix("Value error, ")
        self.add(path, f"{cname}.{where}: {msg}" if where else f"{cname}: {msg}")

    def from_placeholder(self, path: Path) -> bool:
        if not self.unresolved:
            return False
        raw: Any = self.doc
        for key in path:
            if (isinstance(raw, dict) and key in raw) or (
                isinstance(raw, list) and isinstance(key, int) and key < len(raw)
            ):
                raw = raw[key]
            else:
                return False
        if not isinstance(raw, str):
            return False
        return any(m.group(1) in self.unresolved for m in TEMPLATE.finditer(raw))

    def flow_comma_hint(self, line: int, msg: str) -> str:
        """``set: {msg: concat(a, b)}``: YAML split the expression at the comma."""
        idx = line - self.smap.line_offset - 1
        text = self.smap.lines[idx] if 0 <= idx < len(self.smap.lines) else ""
        if "never closed" in msg and "{" in text and "," in text:
            return (
                "; inside {...} a ',' ends the entry, which cut the expression: quote it "
                '(e.g. set: {msg: "concat(a, b)"})'
            )
        return ""

    def quote_shift(self, line: int, col: int) -> int:
        """An expression written in quotes starts one column after the value's mark."""
        idx = line - self.smap.line_offset - 1
        if 0 <= idx < len(self.smap.lines):
            text = self.smap.lines[idx]
            if 0 < col <= len(text) and text[col - 1] in "'\"":
                return 1
        return 0

    def locate(self, cpath: Path, loc: tuple, body: Any) -> Path:
        """Map a pydantic location to a document path, undoing shorthands where needed."""
        full = (*cpath, *loc)
        if full in self.smap.positions or full in self.smap.key_positions:
            return full
        if loc and loc[0] == "fields" and isinstance(body, dict) and "fields" not in body:
            alt = (*cpath, *loc[1:])
            if alt in self.smap.positions or alt in self.smap.key_positions:
                return alt
        # scalar shorthand: the value itself is the option
        if not isinstance(body, dict):
            return cpath if len(loc) <= 1 else (*cpath, *loc[1:])
        return full

    # ------------------------------------------------------------------ tests
    def tests(self, raw: Any, values: dict[str, Any]) -> list[PipeTestCase]:
        out: list[PipeTestCase] = []
        if raw is None:
            return out
        if not isinstance(raw, list):
            self.add(("tests",), "tests must be a list of {name, input, expect}")
            return out
        for i, t in enumerate(raw):
            path = ("tests", i)
            if not isinstance(t, dict):
                self.add(path, "a test is a mapping with name, input and expect or expect-count")
                continue
            for k in t:
                if k not in TEST_KEYS:
                    self.add(
                        (*path, k),
                        f"unknown key {k!r} in test{did_you_mean(k, TEST_KEYS)}; "
                        f"allowed: {', '.join(TEST_KEYS)}",
                        key=True,
                    )
            t, errs = render(t, values, path)
            for err in errs:
                self.add(err.path, str(err))
            name = str(t.get("name") or f"test {i + 1}")
            inp = t.get("input")
            if not isinstance(inp, list):
                self.add((*path, "input"), "input must be a list of lines (strings) or events")
                continue
            for j, item in enumerate(inp):
                if not isinstance(item, (str, dict)):
                    self.add((*path, "input", j), "each input item is a line (string) or an event")
            expect = t.get("expect")
            expect_outputs = None
            if isinstance(expect, dict) and self.route_names:
                expect_outputs, expect = expect, None
                for oname, evs in expect_outputs.items():
                    if oname not in self.route_names:
                        self.add(
                            (*path, "expect", oname),
                            f"no output {oname!r}{did_you_mean(oname, self.route_names)}; "
                            f"outputs: {', '.join(self.route_names)}",
                            key=True,
                        )
                    elif not isinstance(evs, list) or not all(isinstance(x, dict) for x in evs):
                        self.add((*path, "expect", oname), "expect a list of events (mappings)")
            elif expect is not None and (
                not isinstance(expect, list) or not all(isinstance(x, dict) for x in expect)
            ):
                self.add(
                    (*path, "expect"),
                    "expect must be a list of events (mappings)"
                    + (
                        ", or {OUTPUT: [events]} in a pipe with outputs:"
                        if "outputs" in str(self.doc)
                        else ""
                    ),
                )
                expect = None
            count = t.get("expect-count")
            nerr = t.get("expect-errors")
            for key, v in (("expect-count", count), ("expect-errors", nerr)):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    self.add((*path, key), f"{key} must be a whole number")
            if expect is None and expect_outputs is None and count is None and nerr is None:
                self.add(path, f"test {name!r} needs expect, expect-count or expect-errors")
            tparams = t.get("params") or {}
            if not isinstance(tparams, dict):
                self.add((*path, "params"), "params must be a mapping of name: value")
                tparams = {}
            out.append(PipeTestCase(name, inp, expect, count, nerr, tparams, path, expect_outputs))
        return out


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "literal", "tuple"}


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-member tags (``str``, ``list[...]``) from an error location."""
    return tuple(
        x for x in loc if not (isinstance(x, str) and ("[" in x or "(" in x or x in _TYPE_TAGS))
    )


def _relevant(errors: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One error per location: of a union's failed members keep the most telling one."""
    by_loc: dict[tuple, list[dict]] = {}
    for error in errors:
        err = {**error, "loc": _clean_loc(tuple(error.get("loc", ())))}
        by_loc.setdefault(err["loc"], []).append(err)
    out = []
    for errs in by_loc.values():
        telling = [e for e in errs if e.get("type") in ("value_error", "assertion_error")]
        out.append((telling or errs)[0])
    return out


def _nested_model(model: type, loc: tuple) -> tuple[type, int]:
    """The options model at ``loc`` inside ``model`` (``("rotate",)`` -> RotateOptions), and how
    many steps of ``loc`` it took; stops where the path leaves nested models (a list index)."""
    import types as _types
    import typing

    steps = 0
    for part in loc:
        fields = getattr(model, "model_fields", {})
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            break
        tp = field.annotation
        if typing.get_origin(tp) in (typing.Union, _types.UnionType):
            tp = next((a for a in typing.get_args(tp) if hasattr(a, "model_fields")), None)
        if not hasattr(tp, "model_fields"):
            break
        model, steps = tp, steps + 1
    return model, steps


def _allowed(model: type) -> list[str]:
    fields = getattr(model, "model_fields", {})
    return sorted((f.alias or n) for n, f in fields.items())


def _type_name(v: Any) -> str | None:
    for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(v, t):
            return name
    return None


def _placeholder(p: ParamSpec) -> Any:
    if p.enum:
        return p.enum[0]
    return {"int": 0, "float": 0.0, "bool": False}.get(p.type or "str", f"<{p.name}>")


def coerce_param(p: ParamSpec, value: Any) -> Any:
    """Convert a given parameter value (often a string from a command line) to its type.

    The messages never quote a secret parameter's value: they end up in API answers and logs."""
    shown = "***" if p.secret else repr(value)
    if p.type and isinstance(value, str) and p.type != "str":
        try:
            if p.type == "bool":
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = low in ("true", "1", "yes")
            else:
                value = PARAM_TYPES[p.type](value)
        except ValueError:
            raise ValueError(f"parameter {p.name!r} expects {p.type}, got {shown}") from None
    if p.enum is not None and value not in p.enum:
        raise ValueError(f"parameter {p.name!r} must be one of {list(p.enum)}, got {shown}")
    return value
