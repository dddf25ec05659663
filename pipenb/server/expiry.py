"""Expiry times of keys and enrollment tokens: computed when they are made, compared as UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import overload

from pipenb.errors import ApiError
from pipenb.server.db_tables import utcnow


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: datetime | None) -> datetime | None: ...
def aware(value: datetime | None) -> datetime | None:
    """SQLite gives times back without their zone; every time pipenb stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def expiry(expires_in: int | None, expires_at: datetime | None) -> datetime | None:
    """When something created now expires: from ``expires_in`` seconds or ``expires_at``."""
    if expires_in is not None and expires_at is not None:
        raise ApiError(400, "invalid_body", "give expires_in or expires_at, not both")
    if expires_in is not None:
        return utcnow() + timedelta(seconds=expires_in)
    if expires_at is not None:
        expires_at = aware(expires_at)
        if expires_at <= utcnow():
            raise ApiError(400, "invalid_body", "expires_at: must be in the future")
    return expires_at
