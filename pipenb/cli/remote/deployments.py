"""``pipenb deploy`` and ``pipenb deployments list|status|start|stop|upgrade|delete|restart|...``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipenb.cli.remote import telemetry
from pipenb.cli.remote.args import csv, instances, params
from pipenb.cli.remote.call import Handler
from pipenb.cli.remote.output import as_json, done, err, listing, print_json, table
from pipenb.explain import no_match, recent_errors

if TYPE_CHECKING:
    from pipenb.client import Client


def _version_text(dep: dict[str, Any]) -> str:
    if dep.get("version") == "latest":
        return f"latest ({dep.get('resolved_version')})"
    return str(dep.get("version"))


def _target(dep: dict[str, Any]) -> str:
    parts = []
    if dep.get("agents"):
        parts.append("agents " + ",".join(dep["agents"]))
    if dep.get("labels"):
        parts.append("labels " + ",".join(dep["labels"]))
    return "; ".join(parts) or "every agent"


def _newest(client: Client, pipe: str) -> int:
    """The pipe's newest version: what a deploy or upgrade pins when no --version is given."""
    return int(client.pipe(pipe)["version"])


def cmd_deploy(client: Client, args: argparse.Namespace) -> None:
    values = params(args.param)
    # pinned by default: a later `pipes push` must not go live everywhere by itself
    version = args.version if args.version is not None else _newest(client, args.pipe)
    result = client.deploy(
        args.pipe,
        version=version,
        params=values,
        agents=csv(args.agents) if args.agents is not None else None,
        labels=csv(args.labels) if args.labels is not None else None,
        instances=args.instances,
        failover=args.failover,
        name=args.name or args.pipe,
        new=args.new,
    )
    if args.json:
        print_json(result)
    else:
        print(result["id"])  # alone, so that DEP=$(pipenb deploy PIPE) works
    missing = no_match(result)
    if missing:
        err(f"warning: {missing}; the deployment stays pending until one does")


def _deployment_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": d["id"],
        "pipe": d["pipe"],
        "version": _version_text(d),
        "state": d["state"],
        "instances": d["instances"],
        "placed": len(d["status"]),
        "target": _target(d),
        "failover": d["failover"],
    }


def cmd_deployments_list(client: Client, args: argparse.Namespace) -> None:
    empty = "no deployments yet: pipenb deploy PIPE"
    listing(args, client.deployments(), "deployments", _deployment_row, empty)


def _show_deployment(dep: dict[str, Any]) -> None:
    print(f"deployment {dep['id']}: {dep['pipe']} version {_version_text(dep)}, {dep['state']}")
    print(
        f"  target: {_target(dep)}; instances: {dep['instances']}; "
        f"failover: {'on' if dep['failover'] else 'off'}"
    )
    if dep.get("params"):
        print("  params: " + ", ".join(f"{k}={v}" for k, v in dep["params"].items()))
    if dep.get("created_by") or dep.get("updated_by"):
        print(
            f"  created by {dep.get('created_by') or '?'} at {dep['created_at']}; "
            f"last changed by {dep.get('updated_by') or '?'} at {dep['updated_at']}"
        )


def _instance_row(s: dict[str, Any]) -> dict[str, Any]:
    events_in, events_out = telemetry.events(s.get("metrics"))
    return {
        "agent": s["agent_id"],
        "agent_state": s["agent_state"],
        "state": s["state"],
        "in_sync": s["in_sync"],
        "events_in": events_in,
        "events_out": events_out,
        "error": s.get("error"),
    }


def cmd_deployments_status(client: Client, args: argparse.Namespace) -> None:
    dep = client.deployment(args.id)
    if as_json(args, dep):
        return
    _show_deployment(dep)
    rows = [_instance_row(s) for s in dep["status"]]
    print()
    table(rows, no_match(dep) or "no instances")
    for r in rows:  # the table cuts long cells: a refusal's rule is shown whole
        if r["error"] and r["state"] in ("refused", "failed"):
            print(f"{r['agent']} {r['state']}: {r['error']}")
    errors = recent_errors(client.logs(dep["id"], limit=200)["logs"])
    if errors:
        print()
        print("recent errors:")
        for line in errors:
            print("  " + line)


def _deployment_action(verb: str, call: Callable[[Any, argparse.Namespace], Any]) -> Handler:
    def cmd(client: Client, args: argparse.Namespace) -> None:
        dep = call(client, args)
        line = f"{verb} {dep['id']}: {dep['pipe']} version {_version_text(dep)}, {dep['state']}"
        done(args, dep, line)

    return cmd


def _upgrade(client: Client, args: argparse.Namespace) -> Any:
    version = args.version
    if version is None:
        version = _newest(client, client.deployment(args.id)["pipe"])
    return client.upgrade(args.id, version)


def _command(kind: str) -> Handler:
    def cmd(client: Client, args: argparse.Namespace) -> None:
        result = client.command(args.id, kind, agent=args.agent)
        agents = ", ".join(c["agent_id"] for c in result["commands"])
        line = f"{kind} of {args.id} queued for agent(s) {agents}: they act on their next check-in"
        done(args, result, line)

    return cmd


def cmd_deployments_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_deployment(args.id)
    done(args, {"deleted": args.id}, f"deleted deployment {args.id}")


def register_deploy(sub: Any, leaf: Any, version_option: Any) -> None:
    p = leaf(sub, "deploy", cmd_deploy, "run a pipe on agents; prints the deployment id")
    p.add_argument("pipe", metavar="PIPE")
    version_option(p, "the pipe version; 'latest' follows new pushes", pinned=True)
    p.add_argument(
        "--name",
        help="the deployment's name (default: the pipe's); deploying again with the same name "
        "changes that deployment instead of making another",
    )
    p.add_argument(
        "--new", action="store_true", help="make another deployment even if the name exists"
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--agents", metavar="A,B", help="these agents (comma-separated ids)")
    target.add_argument(
        "--labels",
        metavar="A,B",
        help="agents carrying all these labels (default: the labels the pipe declares)",
    )
    p.add_argument(
        "--instances",
        type=instances,
        default="all",
        metavar="N|all",
        help="how many agents run it (default: all that match)",
    )
    p.add_argument(
        "--failover",
        action="store_true",
        help="move instances off agents that go offline (with --instances N)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="a parameter value (repeatable)",
    )


def register(sub: Any, leaf: Any, version_option: Any) -> None:
    g = sub.add_parser("deployments", help="deployments: list, status, start, stop, upgrade, ...")
    gs = g.add_subparsers(dest="deployments_command", metavar="COMMAND", required=True)
    leaf(gs, "list", cmd_deployments_list, "list deployments and their state")
    p = leaf(gs, "status", cmd_deployments_status, "a deployment and the state of each instance")
    p.add_argument("id", metavar="ID")
    for name, action, what in (
        (
            "start",
            _deployment_action("started", lambda c, a: c.start(a.id)),
            "start a stopped deployment",
        ),
        (
            "stop",
            _deployment_action("stopped", lambda c, a: c.stop(a.id)),
            "stop a deployment (it is kept and can be started again)",
        ),
        (
            "upgrade",
            _deployment_action("upgraded", _upgrade),
            "move a deployment to another pipe version",
        ),
    ):
        p = leaf(gs, name, action, what)
        p.add_argument("id", metavar="ID")
    # p is upgrade's parser, the last of the three
    version_option(p, "the version to run; 'latest' follows new pushes", pinned=True)
    p = leaf(gs, "delete", cmd_deployments_delete, "delete a deployment (its agents stop it)")
    p.add_argument("id", metavar="ID")
    telemetry.register_logs_and_metrics(gs, leaf)
    for kind, what in (
        ("restart", "restart a deployment's pipe on its agents"),
        (
            "reset-checkpoint",
            "forget a deployment's checkpoints: its input starts afresh (start-at)",
        ),
    ):
        p = leaf(gs, kind, _command(kind), what)
        p.add_argument("id", metavar="ID")
        p.add_argument("--agent", help="only on this agent (default: every agent running it)")
