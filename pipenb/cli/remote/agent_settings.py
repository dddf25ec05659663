"""``pipenb agents settings set|list|show`` and ``agents command-expiry``: what the server tells
agents to change at run time, and how long their commands wait."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pipenb.cli.remote.args import csv
from pipenb.cli.remote.output import as_json, done, listing
from pipenb.errors import UsageError

if TYPE_CHECKING:
    from pipenb.client import Client


def cmd_settings_set(client: Client, args: argparse.Namespace) -> None:
    values: dict[str, Any] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r}: write KEY=VALUE (KEY= removes the setting)")
        values[key.strip()] = value.strip() or None
    labels = csv(args.labels or "")
    if not labels and not args.agent:
        raise UsageError("say whose settings: --labels A,B or --agent ID")
    result = client.set_agent_settings(values, labels, args.agent)
    who = ", ".join(
        [f"label {x}" for x in labels] + ([f"agent {args.agent}"] if args.agent else [])
    )
    done(args, result, f"settings of {who} set: the agents apply them at their next check-in")


def _scope_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "scope": r["scope"],
        "settings": ", ".join(f"{k}={v}" for k, v in sorted(r["values"].items())) or "-",
        "by": r.get("updated_by") or "",
    }


def cmd_settings_list(client: Client, args: argparse.Namespace) -> None:
    empty = "no settings: agents use their command lines'"
    listing(args, client.agent_settings(), "scopes", _scope_row, empty)


def cmd_settings_show(client: Client, args: argparse.Namespace) -> None:
    v = client.agent_settings(args.id)
    if as_json(args, v):
        return
    applied = "yes" if v["applied_version"] == v["version"] else f"not yet ({v['applied_version']})"
    print(f"agent {v['agent_id']}: settings version {v['version']}, applied: {applied}")
    for k, val in sorted(v["values"].items()):
        why = v["refused"].get(k)
        print(f"  {k} = {val}" + (f"   REFUSED: {why}" if why else ""))
    if v.get("bounds"):
        print("  bounds: " + ", ".join(f"{k} {b}" for k, b in sorted(v["bounds"].items())))


def _expiry_row(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": e["type"],
        "waits for its agent": f"{e['pending_seconds']:g} s",
        "kept once done": f"{e['kept_seconds']:g} s",
    }


def cmd_command_expiry(client: Client, args: argparse.Namespace) -> None:
    listing(args, client.command_expiry(), "expiry", _expiry_row, "(no rows)")


def register(agents: Any, leaf: Any) -> None:
    """Add ``settings`` and ``command-expiry`` to the ``agents`` group."""
    st = agents.add_parser("settings", help="settings the server gives agents: set, list, show")
    sts = st.add_subparsers(dest="settings_command", metavar="COMMAND", required=True)
    p = leaf(
        sts,
        "set",
        cmd_settings_set,
        "set agents' settings: log-level, ship-level, ship-rate, metrics-every, long-poll, "
        "capture-limit (KEY= removes one); applied without a restart, within each agent's bounds",
    )
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--labels", metavar="A,B", help="every agent with one of these labels")
    p.add_argument("--agent", metavar="ID", help="one agent (its own settings win)")
    leaf(sts, "list", cmd_settings_list, "settings per label and per agent")
    p = leaf(
        sts, "show", cmd_settings_show, "an agent's settings, the version it applied, refusals"
    )
    p.add_argument("id", metavar="ID")
    leaf(
        agents,
        "command-expiry",
        cmd_command_expiry,
        "how long each type of command waits for its agent, and is kept once done",
    )
