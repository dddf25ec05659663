"""Agent endpoints: check-in (agent key only) and enrollment (enrollment key only)."""

from __future__ import annotations

import asyncio

import orjson

from pipenb.errors import ApiError
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
        key = self.bearer()
        answer = await self.cp.checkin.checkin(
            self.agent_id, body, self._closed, lambda: self.cp.agents.authenticate(key)
        )
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
        "Enroll an agent with an enrollment token (or the bootstrap key): the server assigns "
        "its id and its labels (the token's); returns the agent's own API key",
        auth="none",
        body=M.EnrollRequest,
        response=M.EnrollResult,
        status=201,
    )
    def post(self) -> None:
        self._refuse_chosen_identity()
        body = self.body(M.EnrollRequest)
        self.send(self.cp.enrollment.enroll(body, self.request.remote_ip or "?"))

    def _refuse_chosen_identity(self) -> None:
        """An agent asking for an id or labels (an older agent, or a rogue host) is told why it
        cannot have them, rather than "extra inputs are not permitted"."""
        try:
            data = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError:
            return  # body() says what is wrong
        if not isinstance(data, dict):
            return
        if "id" in data:
            raise ApiError(
                400,
                "invalid_body",
                "id: an agent cannot choose its id; the server assigns one at enrollment",
            )
        if "labels" in data:
            raise ApiError(
                400,
                "invalid_body",
                "labels: an agent cannot choose its labels; they come from the enrollment "
                "token (pipenb enroll-tokens create --labels ...) or an admin "
                "(pipenb agents label ...)",
            )
