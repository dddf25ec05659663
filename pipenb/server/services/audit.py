"""The audit trail: every write through the API, with who made it, when and from where.

The base handler records each user request that is not a read once it is answered (refusals
included: a 403 says someone tried), so a new route is in the trail without anyone remembering
to add it. Objects are named by the route's own arguments (a deployment id, a pipe name).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from pipenb.server import models as M
from pipenb.server.db_tables import AuditRow, utcnow
from pipenb.server.roles import Principal

if TYPE_CHECKING:
    from pipenb.server.db import SessionScope


#: how long a read of the trail waits for records still being written
SETTLE_SECONDS = 5.0


class AuditService:
    def __init__(self, session: SessionScope):
        self.session = session
        # records are written on worker threads after the answer (handlers/base.py): a read
        # of the trail first waits for those in flight, so a client sees its own writes
        self._writing = 0
        self._settled = threading.Condition()
        # one writer thread: the trail keeps the order in which requests were answered
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pipenb-audit")

    def later(self, write: Callable[[], None]) -> None:
        """Write a record (``write``, which handles its own errors) soon, after the ones before
        it; reads of the trail from now on wait for it."""
        self.begin()

        def run() -> None:
            try:
                write()
            finally:
                self.done()

        self._writer.submit(contextvars.copy_context().run, run)

    def close(self) -> None:
        """Write what is still queued (the server is stopping)."""
        self._writer.shutdown(wait=True)

    def begin(self) -> None:
        with self._settled:
            self._writing += 1

    def done(self) -> None:
        with self._settled:
            self._writing -= 1
            self._settled.notify_all()

    def record(
        self,
        who: Principal,
        *,
        address: str,
        method: str,
        route: str,
        path: str,
        obj: str | None,
        status: int,
    ) -> None:
        with self.session() as s:
            s.add(
                AuditRow(
                    time=utcnow(),
                    user=who.name[:200],
                    role=who.role,
                    via=who.via,
                    address=address[:100],
                    method=method,
                    route=route[:200],
                    path=path[:1000],
                    object=obj[:200] if obj else None,
                    status=status,
                )
            )

    def query(
        self,
        *,
        user: str | None = None,
        obj: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> M.AuditList:
        q = select(AuditRow)
        if user:
            q = q.where(AuditRow.user == user)
        if obj:
            q = q.where(AuditRow.object == obj)
        if since:
            q = q.where(AuditRow.time >= since)
        if until:
            q = q.where(AuditRow.time <= until)
        with self._settled:
            self._settled.wait_for(lambda: self._writing <= 0, SETTLE_SECONDS)
        with self.session() as s:
            rows = s.scalars(q.order_by(AuditRow.id.desc()).limit(limit)).all()
            return M.AuditList(
                entries=[
                    M.AuditEntry(
                        time=r.time, user=r.user, role=r.role, via=r.via, address=r.address,
                        method=r.method, route=r.route, path=r.path, object=r.object,
                        status=r.status,
                    )
                    for r in reversed(rows)
                ]
            )  # fmt: skip
