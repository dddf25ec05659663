"""``pipenb deployments logs|metrics`` and ``pipenb tap``: what running deployments report."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from pipenb.cli.remote.args import positive
from pipenb.cli.remote.output import as_json, err, print_json, table
from pipenb.terminal_tables import format_table

if TYPE_CHECKING:
    from pipenb.client import Client


def events(metrics: dict[str, Any] | None) -> tuple[Any, Any]:
    """Events in and out from an agent's metrics report, whichever shape it has."""
    if not isinstance(metrics, dict):
        return None, None

    def pick(flat: tuple[str, ...], nested: str) -> Any:
        for key in flat:
            if key in metrics:
                return metrics[key]
        inner = metrics.get(nested)
        return inner.get("events") if isinstance(inner, dict) else None

    return (
        pick(("events_in", "input_events", "in"), "input"),
        pick(("events_out", "output_events", "out"), "output"),
    )


def _log_line(x: dict[str, Any]) -> str:
    return f"{x['time']} {x['agent_id']} {x['level'].upper()} {x['message']}"


def cmd_deployments_logs(client: Client, args: argparse.Namespace) -> None:
    """The deployment's log lines from its agents; ``--follow`` keeps printing new ones."""
    import time

    logs = client.logs(args.id, agent=args.agent, limit=args.limit)["logs"]
    if args.json and not args.follow:
        print_json({"logs": logs})
        return
    seen: set[tuple[str, str, str]] = set()

    def show(lines: list[dict[str, Any]]) -> None:
        for x in lines:
            key = (x["time"], x["agent_id"], x["message"])
            if key in seen:  # `since` includes its own time: the last lines come again
                continue
            seen.add(key)
            if args.json:
                sys.stdout.write(orjson.dumps(x).decode() + "\n")
            else:
                print(_log_line(x))
        sys.stdout.flush()

    show(logs)
    if not args.follow:
        if not logs and not args.json:
            print(f"no log lines yet for {args.id}")
        return
    since = logs[-1]["time"] if logs else None
    try:
        while True:
            time.sleep(args.interval)  # polling the server: nothing to synchronise with
            new = client.logs(args.id, agent=args.agent, since=since)["logs"]
            if new:
                since = new[-1]["time"]
                show(new)
    except KeyboardInterrupt:
        return


def _metrics_row(m: dict[str, Any]) -> dict[str, Any]:
    events_in, events_out = events(m.get("data"))
    data = m.get("data") or {}
    return {
        "time": m["time"],
        "agent": m["agent_id"],
        "events_in": events_in,
        "events_out": events_out,
        "dead_letters": data.get("dead_letters"),
        "uptime_s": data.get("uptime_s"),
    }


def cmd_deployments_metrics(client: Client, args: argparse.Namespace) -> None:
    result = client.metrics(args.id, agent=args.agent, limit=args.limit)
    if not as_json(args, result):
        table([_metrics_row(m) for m in result["metrics"]], f"no metrics yet for {args.id}")


def cmd_tap(client: Client, args: argparse.Namespace) -> None:
    if sys.stderr.isatty() and not args.json:
        err(f"waiting up to {args.timeout:g} s for {args.limit} event(s) from the agents...")
    events = client.tap(args.deployment, stage=args.stage, limit=args.limit, timeout=args.timeout)
    if as_json(args, events):
        return
    if events:
        print(format_table([e if isinstance(e, dict) else {"event": e} for e in events]))
    else:
        print("no events captured")


def register_logs_and_metrics(deployments: Any, leaf: Any) -> None:
    """Add ``logs`` and ``metrics`` to the ``deployments`` group."""
    p = leaf(
        deployments, "logs", cmd_deployments_logs, "log lines the agents sent about a deployment"
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--agent", help="only this agent's lines")
    p.add_argument("--limit", type=positive, default=100, help="newest lines (default 100)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )
    p = leaf(deployments, "metrics", cmd_deployments_metrics, "metrics the agents reported")
    p.add_argument("id", metavar="ID")
    p.add_argument("--agent", help="only this agent's points")
    p.add_argument("--limit", type=positive, default=100, help="newest points (default 100)")


def register_tap(sub: Any, leaf: Any) -> None:
    p = leaf(sub, "tap", cmd_tap, "capture the next events at a stage of a running deployment")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p.add_argument("--stage", help="input, output (default), or an action's index or label")
    p.add_argument("--limit", type=positive, default=10, help="events to capture (default 10)")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for them (default 30)"
    )
