"""Storage rows (``db_tables.py``) as API models (``models.py``): one function per model.

Rows and models differ on purpose (a row holds a key's hash, a model never does; JSON columns
may be ``None`` where a model wants ``[]``), so the mapping is written once here and the
services call it. What a row does not hold (an agent's presence, a command's expiry) the
service works out and passes in: these functions read no database and no live state.
"""

from __future__ import annotations

from datetime import datetime

from pipenb.server import models as M
from pipenb.server.db_tables import (
    AgentRow,
    ApiKeyRow,
    CommandRow,
    LogRow,
    MetricRow,
    UserRow,
    UserTokenRow,
)


def agent(
    row: AgentRow, *, state: str, last_seen: datetime | None, pipes: int = 0, refused: int = 0
) -> M.Agent:
    return M.Agent(
        id=row.id,
        name=row.name,
        labels=list(row.labels or []),
        attributes=dict(row.attributes or {}),
        state=state,  # type: ignore[arg-type]
        enrolled=row.enrolled,
        created_at=row.created_at,
        last_seen=last_seen,
        pipes=pipes,
        refused=refused,
    )


def api_key(r: ApiKeyRow) -> M.ApiKey:
    return M.ApiKey(
        key_id=r.id,
        agent_id=r.agent_id,
        created_at=r.created_at,
        revoked_at=r.revoked_at,
        expires_at=r.expires_at,
    )


def command(r: CommandRow, *, expires_at: datetime) -> M.Command:
    return M.Command(
        id=r.id,
        agent_id=r.agent_id,
        deployment_id=r.deployment_id,
        type=r.type,  # type: ignore[arg-type]
        args=dict(r.args or {}),
        created_at=r.created_at,
        acked_at=r.acked_at,
        result=r.result,
        issuer=r.issuer,
        expires_at=expires_at,
    )


def user(r: UserRow, *, tokens: int) -> M.User:
    return M.User(
        name=r.name,
        role=r.role,  # type: ignore[arg-type]
        created_at=r.created_at,
        tokens=tokens,
    )


def user_token(r: UserTokenRow) -> M.UserToken:
    return M.UserToken(
        token_id=r.id,
        user=r.user,
        created_at=r.created_at,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
    )


def metric_point(r: MetricRow) -> M.MetricPoint:
    return M.MetricPoint(
        agent_id=r.agent_id, deployment_id=r.deployment_id, time=r.time, data=r.data
    )


def log_line(r: LogRow) -> M.LogLine:
    return M.LogLine(
        agent_id=r.agent_id,
        deployment_id=r.deployment_id,
        time=r.time,
        level=r.level,
        message=r.message,
    )
