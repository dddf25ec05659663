"""The safe expression language: Python syntax, a whitelist of nodes, compiled to Python source.

Expressions are parsed with ``ast`` and only the listed node types and functions are accepted; the
result is Python *source* that reads the event through ``e.get`` and calls our own helpers. The
engine inlines that source into one generated loop per batch, so a filter costs what a hand-written
comparison costs. The generated code never touches attributes, imports or builtins, which is what
keeps the sandbox closed: the only names it can reach are the helpers we put in its namespace.

Semantics users rely on:
- a missing field is ``null`` (None), never an error;
- ``==``/``!=`` compare anything; ``<``/``>``... with a null side are false, with mismatched types
  (a string against a number) an error that sends the event to ``errors:``;
- arithmetic with a null operand is null; a function of null is null (``exists`` and
  ``coalesce`` excepted);
- ``true``, ``false`` and ``null`` are literals, as are Python's ``True``, ``False``, ``None``.
"""

from __future__ import annotations

import ast
import datetime as _dt
import itertools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipenb.errors import EventError
from pipenb.lang.paths import get_path
from pipenb.lang.regexes import compile_user
from pipenb.lang.suggest import did_you_mean

FUNCTIONS = [
    "len",
    "lower",
    "upper",
    "contains",
    "startswith",
    "endswith",
    "matches",
    "int",
    "float",
    "str",
    "round",
    "exists",
    "coalesce",
    "now",
]
LITERAL_NAMES = {"true": True, "false": False, "null": None}


class ExpressionError(ValueError):
    """An expression is not valid; ``offset`` is the 0-based column inside the expression."""

    def __init__(self, message: str, offset: int = 0):
        self.offset = offset
        super().__init__(message)


# ---------------------------------------------------------------- runtime helpers (the sandbox)
_MISSING = object()


_path = get_path  # the name generated code calls


def _idx(v: Any, k: Any) -> Any:
    if isinstance(v, dict):
        return v.get(k)
    if isinstance(v, (list, str)) and isinstance(k, int) and -len(v) <= k < len(v):
        return v[k]
    return None


def _mismatch(op: str, a: Any, b: Any) -> EventError:
    return EventError(
        f"cannot compare {type(a).__name__} {a!r} {op} {type(b).__name__} {b!r}; "
        f"convert one side first, e.g. int(field)"
    )


def _lt(a, b):
    if a is None or b is None:
        return False
    try:
        return a < b
    except TypeError:
        raise _mismatch("<", a, b) from None


def _le(a, b):
    if a is None or b is None:
        return False
    try:
        return a <= b
    except TypeError:
        raise _mismatch("<=", a, b) from None


def _gt(a, b):
    if a is None or b is None:
        return False
    try:
        return a > b
    except TypeError:
        raise _mismatch(">", a, b) from None


def _ge(a, b):
    if a is None or b is None:
        return False
    try:
        return a >= b
    except TypeError:
        raise _mismatch(">=", a, b) from None


def _in(a, b):
    if b is None:
        return False
    try:
        return a in b
    except TypeError:
        if isinstance(b, str) and a is not None:
            return str(a) in b
        raise EventError(f"cannot test {a!r} in {type(b).__name__}") from None


def _arith(op: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def f(a, b):
        if a is None or b is None:
            return None
        try:
            return fn(a, b)
        except ZeroDivisionError:
            raise EventError(f"division by zero in {a!r} {op} {b!r}") from None
        except (TypeError, OverflowError):
            raise EventError(
                f"cannot compute {type(a).__name__} {a!r} {op} {type(b).__name__} {b!r}"
            ) from None

    return f


MAX_RESULT = 1 << 20  # items/characters; beyond, an expression would stall the pipe
MAX_INT_BITS = 14_000  # about 4200 digits: bigger is slow to compute and Python won't print it
_SEQ = (str, list, tuple)


def _weight(v: Any, memo: dict[int, int]) -> int:
    """Items and characters in ``v``, a shared part counted each time it is reached (as JSON
    would write it), at most about MAX_RESULT: what repeating ``v`` would multiply."""
    key = id(v)
    if key in memo:
        return memo[key]
    n = len(v) if isinstance(v, (str, list, tuple, dict)) else 1
    if isinstance(v, (list, tuple, dict)):
        for x in v.values() if isinstance(v, dict) else v:
            if n > MAX_RESULT:
                break
            if isinstance(x, (str, list, tuple, dict)):
                n += _weight(x, memo)
    memo[key] = n
    return n


def _mul(a, b):
    if a is None or b is None:
        return None
    if isinstance(a, _SEQ) or isinstance(b, _SEQ):
        n = b if isinstance(a, _SEQ) else a
        seq = a if isinstance(a, _SEQ) else b
        if (
            isinstance(n, int)
            and not isinstance(n, bool)
            and n > 1
            and _weight(seq, {}) * n > MAX_RESULT
        ):
            raise EventError(f"repeating a sequence {n} times makes more than {MAX_RESULT} items")
    elif (
        isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS
    ):
        raise EventError(f"{a.bit_length()}-bit * {b.bit_length()}-bit is too large a number")
    try:
        return a * b
    except (TypeError, OverflowError):
        raise EventError(
            f"cannot compute {type(a).__name__} {a!r} * {type(b).__name__} {b!r}"
        ) from None


def _pow(a, b):
    if a is None or b is None:
        return None
    big = isinstance(a, int) and isinstance(b, int) and b > 1 and abs(a) > 1
    if big and b * abs(a).bit_length() > MAX_INT_BITS:
        raise EventError(f"{abs(a).bit_length()}-bit ** {b} is too large a number")
    try:
        return a**b
    except (TypeError, OverflowError, ZeroDivisionError):
        raise EventError(
            f"cannot compute {type(a).__name__} {a!r} ** {type(b).__name__} {b!r}"
        ) from None


def _mod(a, b):
    if isinstance(a, str):  # str % x would be printf formatting: "%0999999999d" % 1 is 1 GB
        raise EventError("% is the remainder of numbers; build text with str() and +")
    return _mod_num(a, b)


_mod_num = _arith("%", lambda a, b: a % b)


def _neg(a):
    if a is None:
        return None
    try:
        return -a
    except TypeError:
        raise EventError(f"cannot negate {type(a).__name__} {a!r}") from None


def _len(v):
    if v is None:
        return None
    try:
        return len(v)
    except TypeError:
        return len(str(v))


def _strfn(name: str) -> Callable[..., Any]:
    def f(v, *args):
        if v is None:
            return None
        s = v if isinstance(v, str) else str(v)
        return getattr(s, name)(*args)

    return f


def _contains(v, sub):
    if v is None or sub is None:
        return None if v is None else False
    if isinstance(v, (list, dict)):
        return sub in v
    return str(sub) in (v if isinstance(v, str) else str(v))


def _matches(v, pattern):
    if v is None:
        return None
    rx = pattern if hasattr(pattern, "search") else compile_user(str(pattern))
    return rx.search(v if isinstance(v, str) else str(v)) is not None


def _int(v, base=10):
    if v is None:
        return None
    try:
        if isinstance(v, str):
            s = v.strip()
            try:
                return int(s, base)
            except ValueError:
                return int(float(s))
        return int(v)
    except (TypeError, ValueError, OverflowError):
        raise EventError(f"int() cannot convert {v!r}") from None


def _float(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise EventError(f"float() cannot convert {v!r}") from None


def _str(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        import orjson

        return orjson.dumps(v).decode()
    return str(v)


def _round(v, nd=0):
    if v is None:
        return None
    try:
        nd = int(nd) if nd else 0
        if isinstance(v, int) and nd < -(abs(v).bit_length() // 3 + 1):
            return 0  # round(5, -10**7) would compute 10 ** 10**7 first
        return round(v, nd) if nd else round(v)
    except (TypeError, ValueError, OverflowError):
        raise EventError(f"round() needs a number, got {v!r}") from None


def _coalesce(*vals):
    for v in vals:
        if v is not None:
            return v
    return None


def _now():
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _exists(e: Any, keys: tuple) -> bool:
    for k in keys:
        if (isinstance(e, dict) and k in e) or (
            isinstance(e, list) and isinstance(k, int) and -len(e) <= k < len(e)
        ):
            e = e[k]
        else:
            return False
    return True


HELPERS: dict[str, Any] = {
    "__builtins__": {},
    "_path": _path,
    "_idx": _idx,
    "_lt": _lt,
    "_le": _le,
    "_gt": _gt,
    "_ge": _ge,
    "_in": _in,
    "_add": _arith("+", lambda a, b: a + b),
    "_sub": _arith("-", lambda a, b: a - b),
    "_mul": _mul,
    "_div": _arith("/", lambda a, b: a / b),
    "_fdiv": _arith("//", lambda a, b: a // b),
    "_mod": _mod,
    "_pow": _pow,
    "_neg": _neg,
    "_exists": _exists,
    "_f_len": _len,
    "_f_lower": _strfn("lower"),
    "_f_upper": _strfn("upper"),
    "_f_contains": _contains,
    "_f_startswith": _strfn("startswith"),
    "_f_endswith": _strfn("endswith"),
    "_f_matches": _matches,
    "_f_int": _int,
    "_f_float": _float,
    "_f_str": _str,
    "_f_round": _round,
    "_f_coalesce": _coalesce,
    "_f_now": _now,
}
ARITY = {
    "len": (1, 1),
    "lower": (1, 1),
    "upper": (1, 1),
    "contains": (2, 2),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "matches": (2, 2),
    "int": (1, 2),
    "float": (1, 1),
    "str": (1, 1),
    "round": (1, 2),
    "exists": (1, 1),
    "coalesce": (1, 99),
    "now": (0, 0),
}
_CMP = {ast.Lt: "_lt", ast.LtE: "_le", ast.Gt: "_gt", ast.GtE: "_ge"}
_BIN = {
    ast.Add: "_add",
    ast.Sub: "_sub",
    ast.Mult: "_mul",
    ast.Div: "_div",
    ast.FloorDiv: "_fdiv",
    ast.Mod: "_mod",
    ast.Pow: "_pow",
}
_BIN_PY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//"}


class Namespace:
    """Names a group of generated snippets share: helpers plus constants hoisted out of loops."""

    _ids = itertools.count()

    def __init__(self) -> None:
        self.values: dict[str, Any] = dict(HELPERS)

    def const(self, value: Any, hint: str = "c") -> str:
        name = f"_{hint}{next(self._ids)}"
        self.values[name] = value
        return name


@dataclass(frozen=True)
class Expression:
    """A compiled expression: Python ``source`` over the event ``e`` and a callable."""

    text: str
    source: str
    fn: Callable[[dict], Any]


#: Operators people bring from other languages, and what this one says instead.
_FOREIGN = (
    (re.compile(r"=~"), "'=~' is not an operator here: use matches(field, \"regex\")"),
    (re.compile(r"!~"), "'!~' is not an operator here: use not matches(field, \"regex\")"),
    (re.compile(r"&&"), "'&&' is not an operator here: use and"),
    (re.compile(r"\|\|"), "'||' is not an operator here: use or"),
    (re.compile(r"(?<![=!<>])=(?![=~])"), "'=' assigns; to compare, use =="),
)


def syntax_hint(text: str) -> tuple[int, str] | None:
    """(offset, message) for a syntax error whose cause is a common habit: ``=``, ``&&``,
    ``||``, ``=~``. Quoted text is left out of the search (``msg == "a=b"`` is fine)."""
    blanked = re.sub(
        r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", lambda m: " " * len(m.group()), text
    )
    for pattern, message in _FOREIGN:
        m = pattern.search(blanked)
        if m:
            return m.start(), message
    return None


def parse(text: str) -> ast.expr:
    """Parse and check an expression; raises ExpressionError with the offending column."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("the expression is empty")
    if "\n" in text.strip():
        text = " ".join(text.split("\n"))
    try:
        with warnings.catch_warnings():  # '\d' in a string: the same with -W error as without
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        hint = syntax_hint(text.strip())
        if hint is not None:
            offset, message = hint
            raise ExpressionError(f"invalid expression: {message}", offset) from None
        raise ExpressionError(f"invalid expression: {exc.msg}", (exc.offset or 1) - 1) from None
    except ValueError as exc:  # a NUL byte
        raise ExpressionError(f"invalid expression: {exc}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(_TOO_DEEP) from None
    src = _Compiler(Namespace()).visit(tree.body)  # validates
    try:  # what the engine will compile, with room for the loop it is inlined into
        compile(f"(((((((({src}))))))))", "<expression>", "eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ExpressionError(_TOO_DEEP) from None
    return tree.body


FieldHook = Callable[[tuple], "str | None"]
MAX_DEPTH = 64  # nesting levels of an expression
_TOO_DEEP = f"the expression is nested too deeply (at most {MAX_DEPTH} levels)"


def to_source(text: str, ns: Namespace, var: str = "e", fields: FieldHook | None = None) -> str:
    """Compile ``text`` to a Python expression over the event variable ``var``.

    ``fields`` may supply the source that reads a field path (None: read it from the event);
    the engine uses it to evaluate a filter on a regex match before the event is built.
    """
    return _Compiler(ns, var, fields).visit(parse(text))


def field_paths(text: str) -> set[tuple]:
    """Every field path an expression reads; ``()`` stands for the whole event."""
    tree = parse(text)
    seen: set[tuple] = set()

    def hook(keys: tuple) -> str:
        seen.add(keys)
        return "None"

    _Compiler(Namespace(), "e", hook).visit(tree)
    return seen


def field_path_of(node: ast.AST) -> tuple | None:
    """The field path a node of a parsed expression names (``level``, ``a.b``,
    ``event["x"]``) as a tuple of keys; None when it is not a field path."""
    return _Compiler(Namespace()).field_path(node)


def compile_expression(text: str, ns: Namespace | None = None) -> Expression:
    ns = ns or Namespace()
    src = to_source(text, ns)
    fn = eval(f"lambda e: ({src})", ns.values)
    return Expression(text, src, fn)


class _Compiler:
    """Turns a whitelisted AST into Python source; any other node is an ExpressionError."""

    def __init__(self, ns: Namespace, var: str = "e", fields: FieldHook | None = None):
        self.ns = ns
        self.var = var
        self.fields = fields
        self.depth = 0

    def fail(self, node: ast.AST, message: str) -> ExpressionError:
        return ExpressionError(message, getattr(node, "col_offset", 0))

    def visit(self, node: ast.AST) -> str:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, _unsupported(node))
        if self.depth >= MAX_DEPTH:
            raise self.fail(node, _TOO_DEEP)
        self.depth += 1
        try:
            return method(node)
        finally:
            self.depth -= 1

    # -- fields
    def field_path(self, node: ast.AST) -> tuple | None:
        """``a.b.c`` or ``event["x"]["y"]`` as a tuple of keys, or None if not a field path."""
        keys: list[Any] = []
        while True:
            if isinstance(node, ast.Attribute):
                keys.append(node.attr)
                node = node.value
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, (str, int))
                and not isinstance(node.slice.value, bool)
            ):
                keys.append(node.slice.value)
                node = node.value
            elif isinstance(node, ast.Name):
                if node.id == "event":
                    return tuple(reversed(keys))
                if node.id in LITERAL_NAMES:
                    return None
                keys.append(node.id)
                return tuple(reversed(keys))
            else:
                return None

    def visit_Name(self, node: ast.Name) -> str:
        if node.id in LITERAL_NAMES:
            return repr(LITERAL_NAMES[node.id])
        if node.id == "event":
            return self._keys(())
        return self._keys((node.id,))

    def visit_Attribute(self, node: ast.Attribute) -> str:
        keys = self.field_path(node)
        if keys is None:
            raise self.fail(
                node,
                "attribute access is not allowed; use dotted field paths like http.status",
            )
        return self._keys(keys)

    def _keys(self, keys: tuple) -> str:
        if self.fields is not None:
            src = self.fields(keys)
            if src is not None:
                return src
        if len(keys) == 0:
            return self.var
        if len(keys) == 1:
            return f"{self.var}.get({keys[0]!r})"
        return f"_path({self.var}, {keys!r})"

    def visit_Subscript(self, node: ast.Subscript) -> str:
        keys = self.field_path(node)
        if keys is not None:
            return self._keys(keys)
        if isinstance(node.slice, ast.Slice):
            raise self.fail(node, "slices are not supported")
        return f"_idx({self.visit(node.value)}, {self.visit(node.slice)})"

    # -- literals
    def visit_Constant(self, node: ast.Constant) -> str:
        if not isinstance(node.value, (str, int, float, bool, type(None))):
            raise self.fail(node, f"unsupported literal {node.value!r}")
        return self._repr(node, node.value)

    def _repr(self, node: ast.AST, value: Any) -> str:
        try:
            return repr(value)
        except ValueError:  # a 0x... number too long to write in decimal
            raise self.fail(node, "the number is too large") from None

    def _literal(self, node: ast.AST) -> tuple[bool, Any]:
        try:
            value = ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError):
            if isinstance(node, ast.Name) and node.id in LITERAL_NAMES:
                return True, LITERAL_NAMES[node.id]
            return False, None
        return True, value

    def visit_List(self, node: ast.List) -> str:
        return "[" + ", ".join(self.visit(x) for x in node.elts) + "]"

    def visit_Tuple(self, node: ast.Tuple) -> str:
        return "(" + "".join(self.visit(x) + ", " for x in node.elts) + ")"

    def visit_Set(self, node: ast.Set) -> str:
        return "{" + ", ".join(self.visit(x) for x in node.elts) + "}"

    def visit_Dict(self, node: ast.Dict) -> str:
        if any(k is None for k in node.keys):
            raise self.fail(node, "** unpacking is not supported")
        items = ", ".join(
            f"{self.visit(k)}: {self.visit(v)}"
            for k, v in zip(node.keys, node.values)
            if k is not None  # always: ** was refused above
        )
        return "{" + items + "}"

    # -- operators
    def visit_BoolOp(self, node: ast.BoolOp) -> str:
        op = " and " if isinstance(node.op, ast.And) else " or "
        return "(" + op.join(self.visit(v) for v in node.values) + ")"

    def visit_UnaryOp(self, node: ast.UnaryOp) -> str:
        if isinstance(node.op, ast.Not):
            return f"(not {self.visit(node.operand)})"
        if isinstance(node.op, ast.USub):
            ok, value = self._literal(node)
            if ok:
                return self._repr(node, value)
            return f"_neg({self.visit(node.operand)})"
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand)
        raise self.fail(node, "bitwise operators are not supported")

    def visit_BinOp(self, node: ast.BinOp) -> str:
        helper = _BIN.get(type(node.op))
        if helper is None:
            raise self.fail(node, "bitwise operators are not supported; use and/or/not")
        left, right = self.visit(node.left), self.visit(node.right)
        lok, lv = self._literal(node.left)
        rok, rv = self._literal(node.right)
        both_num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lv, rv))
        if (
            lok
            and rok
            and both_num
            and type(node.op) in _BIN_PY
            and not (isinstance(node.op, (ast.Div, ast.FloorDiv)) and rv == 0)
        ):
            return f"({left} {_BIN_PY[type(node.op)]} {right})"
        return f"{helper}({left}, {right})"

    def visit_Compare(self, node: ast.Compare) -> str:
        parts = []
        srcs = [self.visit(n) for n in (node.left, *node.comparators)]  # each operand once
        lefts, rights = srcs[:-1], srcs[1:]
        for i in range(1, len(srcs) - 1):  # a < f(b) < c: f(b) is evaluated once, as in Python
            if not self._literal(node.comparators[i - 1])[0]:
                name = f"_t{next(Namespace._ids)}"
                rights[i - 1], lefts[i] = f"({name} := {srcs[i]})", name
        for i, (op, right_node) in enumerate(zip(node.ops, node.comparators)):
            left, right = lefts[i], rights[i]
            if isinstance(op, (ast.Eq, ast.NotEq)):
                parts.append(f"({left} {'==' if isinstance(op, ast.Eq) else '!='} {right})")
            elif type(op) in _CMP:
                parts.append(f"{_CMP[type(op)]}({left}, {right})")
            elif isinstance(op, (ast.In, ast.NotIn)):
                ok, value = self._literal(right_node)
                neg = "not " if isinstance(op, ast.NotIn) else ""
                if ok and isinstance(value, (list, tuple, set)) and _hashable(value):
                    name = self.ns.const(frozenset(value), "set")
                    parts.append(f"({left} {neg}in {name})")
                else:
                    parts.append(f"({neg}_in({left}, {right}))")
            elif isinstance(op, (ast.Is, ast.IsNot)):
                ok, value = self._literal(right_node)
                if not ok or value is not None:
                    raise self.fail(node, "'is' only compares with null; use == instead")
                # `is` for a field; else `==`: Python warns about `1 is None` (and `1 + 1`,
                # `+'x'`, folded to constants), and for plain data the two agree
                is_, eq = ("is", "==") if isinstance(op, ast.Is) else ("is not", "!=")
                field = self.field_path((node.left, *node.comparators)[i]) is not None
                parts.append(f"({left} {is_ if field else eq} None)")
            else:  # pragma: no cover - every ast.cmpop is handled above
                raise self.fail(node, "unsupported comparison")
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def visit_IfExp(self, node: ast.IfExp) -> str:
        return (
            f"({self.visit(node.body)} if {self.visit(node.test)} else {self.visit(node.orelse)})"
        )

    # -- calls
    def visit_Call(self, node: ast.Call) -> str:
        if not isinstance(node.func, ast.Name):
            raise self.fail(
                node,
                "methods and computed functions cannot be called; "
                f"call one of: {', '.join(FUNCTIONS)}",
            )
        name = node.func.id
        if name not in FUNCTIONS:
            hint = did_you_mean(name, FUNCTIONS)
            raise self.fail(
                node,
                f"unknown function {name!r}{hint}; allowed: {', '.join(FUNCTIONS)}",
            )
        if node.keywords:
            raise self.fail(node, f"{name}() takes no keyword arguments")
        lo, hi = ARITY[name]
        if not lo <= len(node.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(node, f"{name}() takes {want} argument(s), got {len(node.args)}")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "* unpacking is not supported")
        if name == "exists":
            keys = self.field_path(node.args[0])
            if not keys:
                raise self.fail(node, "exists() takes a field name, e.g. exists(http.status)")
            if self.fields is not None:
                self.fields(("<exists>", *keys))  # tells field_paths; exists reads the event
            return f"_exists({self.var}, {keys!r})"
        args = [self.visit(a) for a in node.args]
        if name == "matches":
            ok, value = self._literal(node.args[1])
            if ok:
                if not isinstance(value, str):
                    raise self.fail(node, "matches() takes a regular expression string")
                try:
                    args[1] = self.ns.const(compile_user(value), "rx")
                except re.error as exc:
                    raise self.fail(node, f"invalid regular expression: {exc}") from None
        return f"_f_{name}({', '.join(args)})"


def _hashable(values: Any) -> bool:
    try:
        frozenset(values)
    except TypeError:
        return False
    return True


def _unsupported(node: ast.AST) -> str:
    kind = type(node).__name__
    explain = {
        "Lambda": "lambda is not allowed",
        "ListComp": "comprehensions are not allowed",
        "SetComp": "comprehensions are not allowed",
        "DictComp": "comprehensions are not allowed",
        "GeneratorExp": "comprehensions are not allowed",
        "JoinedStr": "f-strings are not allowed; use str() and +",
        "NamedExpr": "assignment (:=) is not allowed",
        "Await": "await is not allowed",
        "Yield": "yield is not allowed",
        "Starred": "* unpacking is not supported",
    }
    return explain.get(kind, f"{kind} expressions are not allowed")
