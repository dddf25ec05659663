"""Command and preview endpoints: a command's state and captured events, how long commands
wait, previews of a pipe on an agent."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


class CommandHandler(ApiHandler):
    @api("Show a command and, for a capture, the events it caught", response=M.Command)
    def get(self, command_id: str) -> None:
        self.send(self.cp.commands.get(command_id))


class CommandExpiryHandler(ApiHandler):
    @api(
        "How long each type of command waits for its agent, and is kept once done",
        response=M.CommandExpiryList,
    )
    def get(self) -> None:
        from pipenb.server.services.commands import expiry_list

        self.send(expiry_list())


class AgentPreviewsHandler(ApiHandler):
    @api(
        "Preview a pipe on this agent's real data, under its policy (editors only)",
        body=M.PreviewCreate,
        response=M.Preview,
        status=201,
        role="editor",
    )
    def post(self, agent_id: str) -> None:
        self.send(self.cp.commands.create_preview(agent_id, self.body(M.PreviewCreate)))


class PreviewHandler(ApiHandler):
    @api("A preview's state and answer (only the user who asked may read it)", response=M.Preview)
    def get(self, preview_id: str) -> None:
        self.send(self.cp.commands.get_preview(preview_id))
