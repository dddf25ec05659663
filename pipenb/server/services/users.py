"""Users of the API: their roles, their tokens (stored hashed), and who a token belongs to.

The server's own ``--token`` is the first admin's, named ``admin``; it is compared in constant
time and never stored. Every other person gets a row here and tokens ``pnu_<id>_<secret>`` of
their own, which can expire and be revoked; only a hash of the secret part is stored.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from pipenb.errors import ApiError
from pipenb.server import convert
from pipenb.server import models as M
from pipenb.server.db_tables import UserRow, UserTokenRow, utcnow
from pipenb.server.roles import Principal
from pipenb.server.security import hash_secret, same_secret, same_token
from pipenb.server.services.pipes import not_found

if TYPE_CHECKING:
    from pipenb.server.db import SessionScope
    from pipenb.server.settings import ServerSettings

TOKEN_PREFIX = "pnu"
#: The name of the admin whose token is the server's ``--token``.
ADMIN = "admin"


def new_user_token() -> tuple[str, str]:
    """``(token_id, token)``; the token is ``pnu_<token_id>_<secret>``."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def split_user_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)


class UserService:
    def __init__(self, settings: ServerSettings, session: SessionScope):
        self.settings = settings
        self.session = session

    # ------------------------------------------------------------------ who is calling
    def authenticate(self, bearer: str | None) -> Principal | None:
        """The principal a bearer token stands for, or None (missing, wrong, revoked, expired).

        One constant-time comparison whatever the token: the server's token for anything that
        is not a user token, the stored hash for a user token."""
        if not bearer:
            return None
        parts = split_user_token(bearer)
        if parts is None:
            expected = self.settings.token
            if expected and same_token(bearer, expected):
                return Principal(ADMIN, "admin", "token")
            return None
        token_id, secret = parts
        with self.session() as s:
            row = s.get(UserTokenRow, token_id)
            user = s.get(UserRow, row.user) if row is not None else None
            if row is None or user is None:
                same_secret(secret, "0" * 64)  # the same work as a real comparison
                return None
            ok = same_secret(secret, row.hash)
            expires = _aware(row.expires_at)
            if not ok or row.revoked_at is not None or (expires and expires <= utcnow()):
                return None
            return Principal(user.name, user.role, "user-token")

    # ------------------------------------------------------------------ users
    def add(self, body: M.UserCreate) -> M.User:
        if body.name == ADMIN:
            raise ApiError(
                409,
                "conflict",
                f"{ADMIN!r} is the server's own admin (its --token); choose another",
            )
        with self.session() as s:
            if s.get(UserRow, body.name) is not None:
                raise ApiError(409, "conflict", f"user {body.name!r} exists already")
            row = UserRow(name=body.name, role=body.role, created_at=utcnow())
            s.add(row)
            return convert.user(row, tokens=0)

    def list(self) -> M.UserList:
        now = utcnow()
        with self.session() as s:
            live = dict(
                s.execute(
                    select(UserTokenRow.user, func.count())
                    .where(
                        UserTokenRow.revoked_at.is_(None),
                        (UserTokenRow.expires_at.is_(None)) | (UserTokenRow.expires_at > now),
                    )
                    .group_by(UserTokenRow.user)
                ).all()
            )
            rows = s.scalars(select(UserRow).order_by(UserRow.name)).all()
            return M.UserList(users=[convert.user(r, tokens=live.get(r.name, 0)) for r in rows])

    def remove(self, name: str) -> None:
        with self.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise not_found("user", name)
            s.query(UserTokenRow).filter(UserTokenRow.user == name).delete()
            s.delete(row)

    # ------------------------------------------------------------------ tokens
    def create_token(self, name: str, body: M.UserTokenCreate) -> M.UserTokenCreated:
        token_id, token = new_user_token()
        now = utcnow()
        expires = now + timedelta(seconds=body.expires_in) if body.expires_in else None
        with self.session() as s:
            if s.get(UserRow, name) is None:
                raise not_found("user", name)
            secret = split_user_token(token)[1]  # type: ignore[index]
            s.add(
                UserTokenRow(
                    id=token_id, user=name, hash=hash_secret(secret), created_at=now,
                    expires_at=expires,
                )
            )  # fmt: skip
        return M.UserTokenCreated(token_id=token_id, user=name, expires_at=expires, token=token)

    def tokens(self, name: str) -> M.UserTokenList:
        with self.session() as s:
            if s.get(UserRow, name) is None:
                raise not_found("user", name)
            rows = s.scalars(
                select(UserTokenRow)
                .where(UserTokenRow.user == name)
                .order_by(UserTokenRow.created_at)
            ).all()
            return M.UserTokenList(tokens=[convert.user_token(r) for r in rows])

    def revoke_token(self, name: str, token_id: str) -> None:
        with self.session() as s:
            row = s.get(UserTokenRow, token_id)
            if row is None or row.user != name:
                raise not_found("token", token_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
