"""Agent endpoints: check-in (agent key only) and enrollment (enrollment key only)."""

from __future__ import annotations

import asyncio

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class CheckinHandler(ApiHandler):
    @api(
        "Agent check-in: report state, receive desired pipes and commands (long poll)",
        auth="agent",
        body=M.CheckinRequest,
        response=M.CheckinResponse,
        body_limit="max_checkin_body",
    )
    async def post(self) -> None:
        body = self.body(M.CheckinRequest)
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answer = await self.cp.checkin.checkin(self.agent_id, body, self._closed)
        if not self._closed.done():
            self.send(answer)

    def on_connection_close(self) -> None:
        """The agent hung up (or died) while held: stop counting it as present now."""
        super().on_connection_close()  # ends a body still on its way
        closed = getattr(self, "_closed", None)
        if closed is not None and not closed.done():
            closed.set_result(None)


class EnrollHandler(ApiHandler):
    @api(
        "Enroll an agent with the server's enrollment key; returns its own API key",
        auth="none",
        body=M.EnrollRequest,
        response=M.EnrollResult,
        status=201,
    )
    def post(self) -> None:
        self.send(self.cp.agents.enroll(self.body(M.EnrollRequest)))
