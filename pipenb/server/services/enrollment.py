"""Enrollment: tokens that admit agents, and the enrollment itself.

An agent proves it may join with an enrollment token (``pnbe_<id>_<secret>``, stored hashed,
shown once) or with the server's bootstrap key (``--enroll-key``, for labs). The server, not the
agent, decides who the agent is: it assigns a fresh id, takes the labels from the token (none for
the bootstrap key) and keeps only a cleaned display name of what the agent says about itself. A
host holding a token can therefore become *an* agent with that token's labels, never a
particular agent or one with other labels.

Failed attempts spend a token bucket of the client's address, so a flood of wrong keys slows the
flooding host only; successful enrollments share one server-wide bucket.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from pipenb.errors import ApiError, AuthError
from pipenb.server import models as M
from pipenb.server.db_tables import AgentRow, EnrollTokenRow, RemovedAgentRow, utcnow
from pipenb.server.expiry import aware, expiry
from pipenb.server.ratelimit import BucketsByAddress, TokenBucket
from pipenb.server.security import (
    hash_secret,
    new_enroll_token,
    new_id,
    same_secret,
    same_token,
    split_enroll_token,
)
from pipenb.server.services.pipes import not_found

if TYPE_CHECKING:
    from pipenb.server.db import SessionScope
    from pipenb.server.services.agents import AgentService
    from pipenb.server.services.deployments import DeploymentService
    from pipenb.server.settings import ServerSettings

NAME_LIMIT = 100  # characters of an enrolling agent's display name that are kept


def clean_name(name: str | None, limit: int = NAME_LIMIT) -> str:
    """A display name an agent gave itself, safe to show: control and format characters
    (terminal escapes, bidi overrides, NUL, newlines) become spaces, runs of white space one,
    and it is cut to ``limit`` characters."""
    if not name:
        return ""
    kept = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") else c for c in name
    )
    return " ".join(kept.split())[:limit].strip()


def token_state(row: EnrollTokenRow, now: datetime | None = None) -> str:
    now = now or utcnow()
    if row.revoked_at is not None:
        return "revoked"
    expires = aware(row.expires_at)
    if expires is not None and expires <= now:
        return "expired"
    if row.max_uses is not None and row.uses >= row.max_uses:
        return "used_up"
    return "active"


class EnrollmentService:
    def __init__(
        self,
        settings: ServerSettings,
        session: SessionScope,
        agents: AgentService,
        deployments: DeploymentService,
    ):
        self.settings = settings
        self.session = session
        self.agents = agents
        self.deployments = deployments
        st = settings
        self.successes = TokenBucket(st.enroll_rate, st.enroll_rate)
        self.failures = BucketsByAddress(st.enroll_fail_rate, st.enroll_fail_burst)

    # ------------------------------------------------------------------ tokens
    def _model(self, row: EnrollTokenRow, **extra: Any) -> Any:
        cls = M.EnrollTokenCreated if extra else M.EnrollToken
        return cls(
            id=row.id,
            name=row.name,
            labels=list(row.labels or []),
            uses=row.uses,
            max_uses=row.max_uses,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            state=token_state(row),  # type: ignore[arg-type]
            **extra,
        )

    def create_token(self, body: M.EnrollTokenCreate) -> M.EnrollTokenCreated:
        from pipenb.server.services.agents import clean_labels

        expires_at = expiry(body.expires_in, body.expires_at)
        token_id, token = new_enroll_token()
        with self.session() as s:
            row = EnrollTokenRow(
                id=token_id,
                name=clean_name(body.name, 200),
                hash=hash_secret(split_enroll_token(token)[1]),  # type: ignore[index]
                labels=clean_labels(body.labels),
                uses=0,
                max_uses=body.uses,
                created_at=utcnow(),
                expires_at=expires_at,
            )
            s.add(row)
            s.flush()
            return self._model(row, token=token)

    def tokens(self) -> M.EnrollTokenList:
        with self.session() as s:
            rows = s.scalars(select(EnrollTokenRow).order_by(EnrollTokenRow.created_at)).all()
            return M.EnrollTokenList(tokens=[self._model(r) for r in rows])

    def token(self, token_id: str) -> M.EnrollToken:
        with self.session() as s:
            row = s.get(EnrollTokenRow, token_id)
            if row is None:
                raise not_found("enrollment token", token_id)
            return self._model(row)

    def revoke_token(self, token_id: str) -> None:
        """The token admits no one from now on; agents it enrolled keep their own keys."""
        with self.session() as s:
            row = s.get(EnrollTokenRow, token_id)
            if row is None:
                raise not_found("enrollment token", token_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()

    # ------------------------------------------------------------------ enrolling
    def enroll(self, body: M.EnrollRequest, address: str) -> M.EnrollResult:
        if not self.failures.allows(address):
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed enrollments from {address}; retry in a few seconds",
                [{"retry_after": max(1, round(1 / max(self.settings.enroll_fail_rate, 0.01)))}],
            )
        try:
            token_id, labels = self._admit(body.enroll_key)
        except AuthError:
            self.failures.spend(address)
            raise
        if not self.successes.take():
            raise ApiError(
                429, "rate_limited", "too many enrollments; retry in a second", [{"retry_after": 1}]
            )
        agents = self.agents
        # one transaction: the token's use, the agent, its key and its instances
        with self.deployments.placing() as (s, wake):
            if token_id is not None:
                # one use, atomically: two agents racing for a token's last use cannot both win
                spent = s.execute(
                    update(EnrollTokenRow)
                    .where(EnrollTokenRow.id == token_id, EnrollTokenRow.revoked_at.is_(None))
                    .where(
                        or_(
                            EnrollTokenRow.max_uses.is_(None),
                            EnrollTokenRow.uses < EnrollTokenRow.max_uses,
                        )
                    )
                    .values(uses=EnrollTokenRow.uses + 1)
                )
                if spent.rowcount != 1:  # type: ignore[attr-defined]
                    raise AuthError(401, "token_used_up", f"enrollment token {token_id} is used up")
            agent_id = self._fresh_id(s)
            name = clean_name(body.name) or agent_id
            s.add(
                AgentRow(
                    id=agent_id,
                    name=name,
                    labels=labels,
                    attributes=body.attributes,
                    enrolled=True,
                    created_at=utcnow(),
                )
            )
            s.flush()
            key_row, api_key = agents.key_row(agent_id, None)
            s.add(key_row)
            s.flush()
            wake.update(self.deployments.place_agents_in(s, [agent_id]))
        return M.EnrollResult(
            agent_id=agent_id, key_id=key_row.id, api_key=api_key, name=name, labels=labels
        )

    def _admit(self, key: str) -> tuple[str | None, list[str]]:
        """``(token id, labels)`` the key admits an agent with; AuthError saying why not."""
        parts = split_enroll_token(key)
        if parts is not None:
            token_id, secret = parts
            with self.session() as s:
                row = s.get(EnrollTokenRow, token_id)
                if row is None or not same_secret(secret, row.hash):
                    raise AuthError(401, "invalid_token", "invalid enrollment token")
                state = token_state(row)
                if state == "revoked":
                    raise AuthError(
                        401, "token_revoked", f"enrollment token {token_id} was revoked"
                    )
                if state == "expired":
                    when = aware(row.expires_at).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
                    raise AuthError(
                        401, "token_expired", f"enrollment token {token_id} expired at {when}"
                    )
                if state == "used_up":
                    raise AuthError(
                        401,
                        "token_used_up",
                        f"enrollment token {token_id} is used up "
                        f"(it enrolled {row.uses} of {row.max_uses} agents)",
                    )
                return token_id, list(row.labels or [])
        bootstrap = self.settings.enroll_key
        if not bootstrap:
            raise AuthError(
                403,
                "enrollment_disabled",
                "this server has no bootstrap enrollment key (--enroll-key); enroll with a "
                "token from `pipenb enroll-tokens create`",
            )
        if not same_token(key, bootstrap):
            raise AuthError(401, "invalid_token", "wrong enrollment key or token")
        return None, []

    def _fresh_id(self, s: Any) -> str:
        """A new agent id: never one in use, never one that was removed."""
        while True:
            agent_id = new_id("agent-")
            if s.get(AgentRow, agent_id) is None and s.get(RemovedAgentRow, agent_id) is None:
                return agent_id
