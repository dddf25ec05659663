"""The API's query parameters in one table: how each is parsed and bounded (bad values are a
400 naming the parameter, never a 500 from the database), and how the OpenAPI document
describes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pipenb.errors import ApiError
from pipenb.server.models import MAX_INT32

if TYPE_CHECKING:
    from pipenb.server.handlers.base import ApiHandler


@dataclass(frozen=True)
class QueryParam:
    kind: Literal["int", "time", "str"]
    description: str
    minimum: int = 1
    maximum: int = MAX_INT32
    max_length: int = 200

    def parse(self, name: str, value: str) -> Any:
        if self.kind == "str":
            if len(value) > self.max_length:
                raise ApiError(
                    400, "bad_request", f"{name} is longer than {self.max_length} characters"
                )
            return value
        if self.kind == "time":
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, "bad_request", f"{name} must be an ISO 8601 time") from None
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        text = value.strip()
        if not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())) or len(text) > 30:
            raise ApiError(400, "bad_request", f"query parameter {name!r} must be an integer")
        number = int(text)
        if not self.minimum <= number <= self.maximum:
            raise ApiError(
                400,
                "bad_request",
                f"{name} must be between {self.minimum} and {self.maximum}",
            )
        return number

    def schema(self) -> dict[str, Any]:
        if self.kind == "int":
            return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.kind == "time":
            return {"type": "string", "format": "date-time"}
        return {"type": "string", "maxLength": self.max_length}


QUERY_PARAMS: dict[str, QueryParam] = {
    "version": QueryParam("int", "a pipe version (default: the newest)"),
    "from": QueryParam("int", "the version to compare from"),
    "to": QueryParam("int", "the version to compare to"),
    "limit": QueryParam("int", "at most this many (the newest)", 1, 100_000),
    "since": QueryParam("time", "only what is this new or newer (ISO 8601)"),
    "agent": QueryParam("str", "only this agent's"),
    "until": QueryParam("time", "only what is this old or older (ISO 8601)"),
    "user": QueryParam("str", "only this user's"),
    "object": QueryParam("str", "only about this object (a pipe name, a deployment id)"),
}


def limit(handler: ApiHandler) -> int:
    """The ``limit`` query parameter of a listing (default 1000)."""
    return int(handler.query("limit", 1000))


def since(handler: ApiHandler) -> datetime | None:
    """The ``since`` query parameter: only what is newer."""
    value: datetime | None = handler.query("since")
    return value
