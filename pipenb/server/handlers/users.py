"""User endpoints for people: who am I, users and their tokens (admins), the audit trail."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class WhoAmIHandler(ApiHandler):
    @api("Who this request's credentials stand for, and their role", response=M.WhoAmI)
    def get(self) -> None:
        p = self.principal
        assert p is not None  # @api authenticated the request before this runs
        self.send(M.WhoAmI(name=p.name, role=p.role, via=p.via))  # type: ignore[arg-type]


class UsersHandler(ApiHandler):
    @api("List users and their roles", response=M.UserList)
    def get(self) -> None:
        self.send(self.cp.users.list())

    @api("Add a user with a role", body=M.UserCreate, response=M.User, status=201, role="admin")
    def post(self) -> None:
        self.send(self.cp.users.add(self.body(M.UserCreate)), 201)


class UserHandler(ApiHandler):
    @api("Remove a user and their tokens", status=204, role="admin")
    def delete(self, name: str) -> None:
        self.cp.users.remove(name)
        self.send(None, 204)


class UserTokensHandler(ApiHandler):
    @api(
        "List a user's tokens (never the tokens themselves)", response=M.UserTokenList, role="admin"
    )
    def get(self, name: str) -> None:
        self.send(self.cp.users.tokens(name))

    @api(
        "Create a token for a user: shown once, stored hashed",
        body=M.UserTokenCreate,
        response=M.UserTokenCreated,
        status=201,
        role="admin",
    )
    def post(self, name: str) -> None:
        self.send(self.cp.users.create_token(name, self.body(M.UserTokenCreate)), 201)


class UserTokenHandler(ApiHandler):
    @api("Revoke a user's token", status=204, role="admin")
    def delete(self, name: str, token_id: str) -> None:
        self.cp.users.revoke_token(name, token_id)
        self.send(None, 204)


class AuditHandler(ApiHandler):
    @api(
        "Writes through the API: who, when, from where, what, answered how",
        response=M.AuditList,
        query=("user", "object", "since", "until", "limit"),
    )
    def get(self) -> None:
        self.send(
            self.cp.audit.query(
                user=self.query("user"),
                obj=self.query("object"),
                since=self.query("since"),
                until=self.query("until"),
                limit=self.query("limit", 1000),
            )
        )
