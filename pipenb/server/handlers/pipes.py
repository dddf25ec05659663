"""Pipe endpoints: push, show, list versions, diff, delete."""

from __future__ import annotations

import asyncio

from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class PipesHandler(ApiHandler):
    @api("List pipes", response=M.PipeList)
    def get(self) -> None:
        self.send(self.cp.pipes.list())

    @api(
        "Push a pipe: a new version unless identical to the newest",
        body=M.PipePush,
        response=M.PipePushResult,
        status=201,
        body_limit="max_pipe_body",
    )
    async def post(self) -> None:
        body = self.body(M.PipePush)
        spec = await asyncio.to_thread(self.cp.pipes.check, body)  # off the event loop
        result = await self.cp.db.run(self.cp.pipes.store, body, spec)
        self.send(result, 201 if result.created else 200)


class PipeHandler(ApiHandler):
    @api("Show a pipe version (default: the newest)", response=M.PipeVersion, query=("version",))
    def get(self, name: str) -> None:
        self.send(self.cp.pipes.show(name, self.query("version")))

    @api("Delete a pipe and its versions (refused while deployed)", status=204)
    def delete(self, name: str) -> None:
        self.cp.pipes.delete(name)
        self.send(None, 204)


class PipeVersionsHandler(ApiHandler):
    @api("List a pipe's versions", response=M.PipeVersionList)
    def get(self, name: str) -> None:
        self.send(self.cp.pipes.versions(name))


class PipeDiffHandler(ApiHandler):
    @api("Unified diff between two versions", response=M.PipeDiff, query=("from", "to"))
    def get(self, name: str) -> None:
        v1, v2 = self.query("from"), self.query("to")
        if v1 is None or v2 is None:
            raise ApiError(400, "bad_request", "give both ?from=V1&to=V2")
        self.send(self.cp.pipes.diff(name, v1, v2))
