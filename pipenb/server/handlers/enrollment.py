"""Enrollment token endpoints: create, list, show, revoke."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class EnrollTokensHandler(ApiHandler):
    @api(
        "List enrollment tokens (never the tokens themselves)",
        response=M.EnrollTokenList,
        role="admin",
    )
    def get(self) -> None:
        self.send(self.cp.enrollment.tokens())

    @api(
        "Create an enrollment token: shown once, stored hashed; agents it enrolls get its labels",
        body=M.EnrollTokenCreate,
        response=M.EnrollTokenCreated,
        status=201,
        role="admin",
    )
    def post(self) -> None:
        self.send(self.cp.enrollment.create_token(self.body(M.EnrollTokenCreate)))


class EnrollTokenHandler(ApiHandler):
    @api("Show an enrollment token", response=M.EnrollToken, role="admin")
    def get(self, token_id: str) -> None:
        self.send(self.cp.enrollment.token(token_id))

    @api(
        "Revoke an enrollment token (agents it enrolled keep their keys)", status=204, role="admin"
    )
    def delete(self, token_id: str) -> None:
        self.cp.enrollment.revoke_token(token_id)
        self.send(None, 204)
