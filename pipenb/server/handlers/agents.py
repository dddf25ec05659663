"""Agent endpoints for users: agents, their keys, metrics, logs and settings."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api
from pipenb.server.handlers.params import limit, since


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


class AgentMetricsHandler(ApiHandler):
    @api("Metrics reported by an agent", response=M.MetricList, query=("since", "limit"))
    def get(self, agent_id: str) -> None:
        self.cp.agents.get(agent_id)
        self.send(
            self.cp.telemetry.metrics(
                agent_id=agent_id,
                since=since(self),
                limit=limit(self),
            )
        )


class AgentLogsHandler(ApiHandler):
    @api("Log lines reported by an agent", response=M.LogList, query=("since", "limit"))
    def get(self, agent_id: str) -> None:
        self.cp.agents.get(agent_id)
        self.send(
            self.cp.telemetry.logs(
                agent_id=agent_id,
                since=since(self),
                limit=limit(self),
            )
        )


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
