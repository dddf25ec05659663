"""User endpoints: pipes, agents and their keys, deployments, commands, metrics and logs."""

from __future__ import annotations

import asyncio
from datetime import datetime

from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api


def _limit(handler: ApiHandler) -> int:
    return handler.query("limit", 1000)


def _since(handler: ApiHandler) -> datetime | None:
    return handler.query("since")


# ---------------------------------------------------------------------------- pipes
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


# ---------------------------------------------------------------------------- agents
class AgentsHandler(ApiHandler):
    @api("List agents with their state", response=M.AgentList)
    def get(self) -> None:
        self.send(self.cp.agents.list())

    @api("Add an agent by hand", body=M.AgentCreate, response=M.Agent, status=201, role="admin")
    def post(self) -> None:
        self.send(self.cp.agents.add(self.body(M.AgentCreate)))


class AgentHandler(ApiHandler):
    @api("Show an agent", response=M.Agent)
    def get(self, agent_id: str) -> None:
        self.send(self.cp.agents.get(agent_id))

    @api("Change an agent's name or labels", body=M.AgentUpdate, response=M.Agent, role="admin")
    def patch(self, agent_id: str) -> None:
        self.send(self.cp.agents.update(agent_id, self.body(M.AgentUpdate)))

    @api(
        "Remove an agent and its keys: it is answered 401 at once, stops its pipes and exits; "
        "its id is never enrolled again",
        status=204,
        role="admin",
    )
    def delete(self, agent_id: str) -> None:
        self.cp.agents.remove(agent_id)
        self.send(None, 204)


class AgentKeysHandler(ApiHandler):
    @api("List an agent's API keys (never the keys themselves)", response=M.ApiKeyList)
    def get(self, agent_id: str) -> None:
        self.send(self.cp.agents.keys(agent_id))

    @api(
        "Create an API key (optionally expiring): shown once, stored hashed",
        body=M.ApiKeyCreate,
        response=M.ApiKeyCreated,
        status=201,
        role="admin",
    )
    def post(self, agent_id: str) -> None:
        self.send(self.cp.agents.create_key(agent_id, self.body(M.ApiKeyCreate)))


class AgentKeyHandler(ApiHandler):
    @api(
        "Revoke an API key: the agent's held check-in is answered 401 at once",
        status=204,
        role="admin",
    )
    def delete(self, agent_id: str, key_id: str) -> None:
        self.cp.agents.revoke_key(agent_id, key_id)
        self.send(None, 204)


# ---------------------------------------------------------------------------- enrollment tokens
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


class AgentMetricsHandler(ApiHandler):
    @api("Metrics reported by an agent", response=M.MetricList, query=("since", "limit"))
    def get(self, agent_id: str) -> None:
        self.cp.agents.get(agent_id)
        self.send(
            self.cp.telemetry.metrics(
                agent_id=agent_id,
                since=_since(self),
                limit=_limit(self),
            )
        )


class AgentLogsHandler(ApiHandler):
    @api("Log lines reported by an agent", response=M.LogList, query=("since", "limit"))
    def get(self, agent_id: str) -> None:
        self.cp.agents.get(agent_id)
        self.send(
            self.cp.telemetry.logs(
                agent_id=agent_id,
                since=_since(self),
                limit=_limit(self),
            )
        )


# ---------------------------------------------------------------------------- deployments
class DeploymentsHandler(ApiHandler):
    @api("List deployments with their instances' state", response=M.DeploymentList)
    def get(self) -> None:
        self.send(self.cp.deployments.list())

    @api(
        "Deploy a pipe version to agents (by id or labels); 200 when a deployment of that "
        "name was changed instead",
        body=M.DeploymentCreate,
        response=M.Deployment,
        status=201,
    )
    def post(self) -> None:
        dep, created = self.cp.deployments.apply(self.body(M.DeploymentCreate))
        self.send(dep, 201 if created else 200)


class DeploymentHandler(ApiHandler):
    @api("Show a deployment and the state of each instance", response=M.Deployment)
    def get(self, dep_id: str) -> None:
        self.send(self.cp.deployments.get(dep_id))

    @api("Delete a deployment (its agents stop the pipe)", status=204)
    def delete(self, dep_id: str) -> None:
        self.cp.deployments.delete(dep_id)
        self.send(None, 204)


class DeploymentStartHandler(ApiHandler):
    @api("Start a stopped deployment", response=M.Deployment)
    def post(self, dep_id: str) -> None:
        self.send(self.cp.deployments.set_running(dep_id, True))


class DeploymentStopHandler(ApiHandler):
    @api("Stop a deployment (kept, can be started again)", response=M.Deployment)
    def post(self, dep_id: str) -> None:
        self.send(self.cp.deployments.set_running(dep_id, False))


class DeploymentUpgradeHandler(ApiHandler):
    @api(
        "Move a deployment to another pipe version (default: latest)",
        body=M.DeploymentUpgrade,
        response=M.Deployment,
    )
    def post(self, dep_id: str) -> None:
        self.send(self.cp.deployments.upgrade(dep_id, self.body(M.DeploymentUpgrade)))


class DeploymentCommandsHandler(ApiHandler):
    @api("Commands sent to a deployment's agents", response=M.CommandList)
    def get(self, dep_id: str) -> None:
        self.cp.deployments.get(dep_id)
        self.send(self.cp.commands.list(dep_id))

    @api(
        "Queue a command (restart, reset-checkpoint, capture) for its agents",
        body=M.CommandCreate,
        response=M.CommandList,
        status=201,
    )
    def post(self, dep_id: str) -> None:
        self.send(self.cp.commands.create(dep_id, self.body(M.CommandCreate)))


class DeploymentMetricsHandler(ApiHandler):
    @api("Metrics of a deployment", response=M.MetricList, query=("agent", "since", "limit"))
    def get(self, dep_id: str) -> None:
        self.cp.deployments.get(dep_id)
        self.send(
            self.cp.telemetry.metrics(
                dep_id,
                self.query("agent"),
                _since(self),
                _limit(self),
            )
        )


class DeploymentLogsHandler(ApiHandler):
    @api("Log lines of a deployment", response=M.LogList, query=("agent", "since", "limit"))
    def get(self, dep_id: str) -> None:
        self.cp.deployments.get(dep_id)
        self.send(
            self.cp.telemetry.logs(
                dep_id,
                self.query("agent"),
                _since(self),
                _limit(self),
            )
        )


class CommandHandler(ApiHandler):
    @api("Show a command and, for a capture, the events it caught", response=M.Command)
    def get(self, command_id: str) -> None:
        self.send(self.cp.commands.get(command_id))


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


class CommandExpiryHandler(ApiHandler):
    @api(
        "How long each type of command waits for its agent, and is kept once done",
        response=M.CommandExpiryList,
    )
    def get(self) -> None:
        from pipenb.server.services.commands import expiry_list

        self.send(expiry_list())


class AgentSettingsHandler(ApiHandler):
    @api("Settings given to agents, per label and per agent", response=M.AgentSettingsScopeList)
    def get(self) -> None:
        self.send(self.cp.agent_settings.list())

    @api(
        "Set agents' settings (log level, log shipping, metrics interval, long poll, capture "
        "limit) for labels or one agent; null removes a key",
        body=M.AgentSettingsSet,
        response=M.AgentSettingsScopeList,
        role="admin",
    )
    def put(self) -> None:
        self.send(self.cp.agent_settings.set(self.body(M.AgentSettingsSet)))


class AgentSettingsOfHandler(ApiHandler):
    @api(
        "An agent's settings: what the server gives it, the version it applied, what it refused",
        response=M.AgentSettingsView,
    )
    def get(self, agent_id: str) -> None:
        self.send(self.cp.agent_settings.show(agent_id))
