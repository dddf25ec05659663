"""Agent endpoints: check-in (agent key only) and enrollment (enrollment key only)."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class CheckinHandler(ApiHandler):
    @api(
        "Agent check-in: report state, receive desired pipes and commands (long poll)",
        auth="agent",
        body=M.CheckinRequest,
        response=M.CheckinResponse,
    )
    async def post(self) -> None:
        body = self.body(M.CheckinRequest)
        self.send(await self.cp.checkin.checkin(self.agent_id, body))


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
