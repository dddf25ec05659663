"""``pipenb agents list|add|label|show|remove|install-command|keys ...``: agents and their keys."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from pipenb.cli.options import option
from pipenb.cli.remote import agent_settings
from pipenb.cli.remote.args import csv
from pipenb.cli.remote.output import as_json, done, err, listing, print_json

if TYPE_CHECKING:
    from pipenb.client import Client


def _agent_row(a: dict[str, Any]) -> dict[str, Any]:
    attrs = a["attributes"]
    return {
        "id": a["id"],
        "name": a["name"],
        "state": a["state"],
        "labels": ",".join(a["labels"]),
        "pipes": a["pipes"],
        "last_seen": a["last_seen"],
        "host": attrs.get("hostname") or attrs.get("host"),
        "version": attrs.get("pipenb") or attrs.get("version"),
    }


def cmd_agents_list(client: Client, args: argparse.Namespace) -> None:
    listing(args, client.agents(), "agents", _agent_row, "no agents yet: pipenb agents add ID")


def cmd_agents_add(client: Client, args: argparse.Namespace) -> None:
    result = client.add_agent(args.id, args.name, csv(args.labels or ""))
    if as_json(args, result):
        return
    labels = ", ".join(result["labels"]) or "none"
    print(f"added agent {result['id']} (labels: {labels})")
    print(f"give it an API key: pipenb agents keys create {result['id']}")


def cmd_agents_label(client: Client, args: argparse.Namespace) -> None:
    result = client.update_agent(args.id, labels=csv(args.labels))
    done(args, result, f"agent {result['id']} labels: {', '.join(result['labels']) or 'none'}")


def cmd_agents_show(client: Client, args: argparse.Namespace) -> None:
    a = client.agent(args.id)
    if as_json(args, a):
        return
    print(f"agent {a['id']} ({a['name']}): {a['state']}")
    print(f"  labels: {', '.join(a['labels']) or 'none'}")
    print(f"  last seen: {a['last_seen'] or 'never'}; enrolled: {'yes' if a['enrolled'] else 'no'}")
    print(f"  pipes: {a['pipes']}")
    for k, v in (a.get("attributes") or {}).items():
        shown = orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v
        print(f"  {k}: {shown}")


def cmd_agents_remove(client: Client, args: argparse.Namespace) -> None:
    client.remove_agent(args.id)
    done(args, {"removed": args.id}, f"removed agent {args.id}")


def cmd_agents_install_command(client: Client, args: argparse.Namespace) -> None:
    line = client.install_command(
        args.enroll_token,
        labels=csv(args.labels or "") or None,
        name=args.name,
        prefix=args.prefix,
        service=not args.no_service,
        server_url=args.server_url,
        insecure_http=args.insecure_http,
    )
    if args.json:
        print_json({"command": line})
        return
    print(line)
    if sys.stderr.isatty():
        where = "runs it in the foreground" if args.no_service else "starts pipenb-agent.service"
        err(f"paste it on a worker host: it installs the agent in {args.prefix} and {where}")


def cmd_keys_create(client: Client, args: argparse.Namespace) -> None:
    result = client.create_key(args.id, expires_in=args.expires)
    if as_json(args, result):
        return
    expires = f", expires {result['expires_at']}" if result.get("expires_at") else ""
    print(f"API key {result['key_id']} for agent {result['agent_id']}{expires}:")
    print(result["api_key"])
    print("Store it now: it is not shown again (the server keeps only its hash).")


def cmd_keys_revoke(client: Client, args: argparse.Namespace) -> None:
    client.revoke_key(args.id, args.key_id)
    done(
        args,
        {"revoked": args.key_id, "agent_id": args.id},
        f"revoked key {args.key_id} of agent {args.id}",
    )


def _install_command_options(p: argparse.ArgumentParser) -> None:
    option(
        p,
        "--enroll-token",
        metavar="T",
        help="the enrollment token the agent enrolls with (default: a one-use token, valid "
        "for a day, made now with --labels)",
    )
    p.add_argument(
        "--labels", metavar="A,B", help="labels of the one-use token made when none is given"
    )
    p.add_argument("--name", help="the agent's display name")
    p.add_argument(
        "--prefix",
        default="/opt/pipenb-agent",
        help="where the venv and the agent's settings go (default: /opt/pipenb-agent)",
    )
    p.add_argument(
        "--no-service",
        action="store_true",
        help="no systemd unit and no user: the line runs the agent in the foreground",
    )
    p.add_argument(
        "--server-url",
        metavar="URL",
        help="the server's address as worker hosts reach it (default: --url)",
    )
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow a plain-http server URL that is not loopback (labs only)",
    )


def register(sub: Any, leaf: Any) -> None:
    g = sub.add_parser("agents", help="agents known to the server: list, add, label, keys, ...")
    gs = g.add_subparsers(dest="agents_command", metavar="COMMAND", required=True)
    leaf(gs, "list", cmd_agents_list, "list agents with their state and labels")
    p = leaf(gs, "add", cmd_agents_add, "add an agent by hand (then give it a key)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--name", help="a readable name (default: the id)")
    p.add_argument("--labels", metavar="A,B", help="labels, comma-separated")
    p = leaf(gs, "label", cmd_agents_label, "replace an agent's labels")
    p.add_argument("id", metavar="ID")
    p.add_argument("labels", metavar="A,B", help="the new labels, comma-separated ('' for none)")
    p = leaf(gs, "show", cmd_agents_show, "an agent's state, labels and attributes")
    p.add_argument("id", metavar="ID")
    p = leaf(gs, "remove", cmd_agents_remove, "remove an agent and its keys")
    p.add_argument("id", metavar="ID")
    p = leaf(
        gs,
        "install-command",
        cmd_agents_install_command,
        "print one shell line that installs an agent on a worker host from this server",
    )
    _install_command_options(p)
    agent_settings.register(gs, leaf)
    k = gs.add_parser("keys", help="an agent's API keys: create, revoke")
    ks = k.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    p = leaf(ks, "create", cmd_keys_create, "create an API key for an agent (shown once)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 90d (default: never expires)")
    p = leaf(ks, "revoke", cmd_keys_revoke, "revoke an agent's API key")
    p.add_argument("id", metavar="ID")
    p.add_argument("key_id", metavar="KEY_ID")
