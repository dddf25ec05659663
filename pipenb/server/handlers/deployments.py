"""Deployment endpoints: deploy, show, start, stop, upgrade, delete, and a deployment's
commands, metrics and logs."""

from __future__ import annotations

from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api
from pipenb.server.handlers.params import limit, since


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
                since(self),
                limit(self),
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
                since(self),
                limit(self),
            )
        )
