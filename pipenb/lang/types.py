"""Option types shared by components: durations, sizes, regexes, expressions, field templates."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from pipenb.lang import expressions
from pipenb.lang.units import parse_duration, parse_size


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _check_expr(value: str) -> str:
    expressions.parse(value)  # raises ExpressionError(offset) which the validator locates
    return value


def _str_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _expr_in(value: Any) -> Any:
    # YAML reads `filter: true` as a boolean; accept it as the expression it looks like.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
Regex = Annotated[str, AfterValidator(_check_regex)]
Expr = Annotated[str, BeforeValidator(_expr_in), AfterValidator(_check_expr)]
FieldName = Annotated[str, Field(min_length=1)]
FieldList = Annotated[list[FieldName], BeforeValidator(_str_list)]
