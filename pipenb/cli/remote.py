"""Management commands that talk to a pipenb server: pipes, agents, deploy, deployments, tap.

Each one is a thin layer over ``pipenb.Client``: parse the arguments, make the call, print a
table or a short line for people (``--json`` prints the server's answer for scripts). Exit codes:
0 done, 1 the server refused or could not be reached, 2 the command line was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from pipenb.cli.options import option
from pipenb.errors import ApiError, UsageError
from pipenb.explain import api_problem_lines, no_match, recent_errors
from pipenb.terminal_tables import format_table

Handler = Callable[[Any, argparse.Namespace], int | None]


# ---------------------------------------------------------------------------- parsing helpers
def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _version(text: str) -> int | str:
    if text == "latest":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a version is a number or 'latest', not {text!r}"
        ) from None
    if v < 1:
        raise argparse.ArgumentTypeError("versions start at 1")
    return v


def _instances(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"instances is 'all' or a number, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("instances must be 1 or more (or 'all')")
    return n


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _params(items: list[str]) -> dict[str, str]:
    """``k=v`` pairs as strings: the server converts them to the types the pipe declares."""
    params: dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise UsageError(f"--param takes NAME=VALUE, got {item!r}")
        params[k.strip()] = v
    return params


# ---------------------------------------------------------------------------- output helpers
def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def _api_error(exc: ApiError) -> None:
    """The message, then every located problem as ``file:line:column: message``."""
    first, *problems = api_problem_lines(exc.message, exc.code, exc.details)
    _err(f"pipenb: {first}")
    for line in problems:
        _err(line)
    fields = [d for d in exc.details if isinstance(d, dict) and "field" in d and "message" in d]
    if len(fields) > 1:
        for d in fields:
            _err(f"  {d['field'] or 'body'}: {d['message']}")


def _remote(fn: Handler) -> Callable[[argparse.Namespace], int]:
    """Make the client, run the command, and turn failures into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        from pipenb.extras import require

        try:
            require("server", f"pipenb {args.command}")
            from pipenb.client import Client

            client = Client(
                args.url,
                args.token,
                ca_file=args.ca_file,
                ca_fingerprint=args.ca_fingerprint,
                cert=args.cert,
                key=args.key,
            )
            return int(fn(client, args) or 0)
        except UsageError as exc:
            _err(f"pipenb: {exc}")
            return 2
        except ApiError as exc:
            _api_error(exc)
            return 1

    run.__doc__ = fn.__doc__
    return run


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


def _events(metrics: dict[str, Any] | None) -> tuple[Any, Any]:
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


# ---------------------------------------------------------------------------- pipes
def cmd_pipes_push(client: Any, args: argparse.Namespace) -> None:
    result = client.push_file(args.file, args.message, tuple(args.table or ()))
    if args.json:
        _print_json(result)
    elif result["created"]:
        print(f"pushed {result['pipe']} version {result['version']}")
    else:
        print(f"{result['pipe']} is unchanged (version {result['version']})")


def cmd_pipes_list(client: Any, args: argparse.Namespace) -> None:
    result = client.pipes()
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "name": p["name"],
            "version": p["latest_version"],
            "versions": p["versions"],
            "deployments": p["deployments"],
            "labels": ",".join(p["labels"]),
            "updated": p["updated_at"],
            "description": p["description"],
        }
        for p in result["pipes"]
    ]
    print(format_table(rows) if rows else "no pipes yet: pipenb pipes push FILE")


def cmd_pipes_show(client: Any, args: argparse.Namespace) -> None:
    result = client.pipe(args.name, args.version)
    if args.json:
        _print_json(result)
        return
    # The text exactly as pushed, so `pipes show X > x.yaml && pipes push x.yaml` is a no-op.
    sys.stdout.write(result.get("yaml") or "")


def cmd_pipes_versions(client: Any, args: argparse.Namespace) -> None:
    result = client.versions(args.name)
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "version": v["version"],
            "created": v["created_at"],
            "hash": v["hash"][:12],
            "author": v.get("author") or "",
            "message": v["message"],
        }
        for v in result["versions"]
    ]
    print(format_table(rows))


def cmd_pipes_diff(client: Any, args: argparse.Namespace) -> None:
    result = client.diff(args.name, args.v1, args.v2)
    if args.json:
        _print_json(result)
    elif result["diff"]:
        sys.stdout.write(result["diff"])
    else:
        print(f"{args.name}: versions {args.v1} and {args.v2} are identical")


def cmd_pipes_delete(client: Any, args: argparse.Namespace) -> None:
    client.delete_pipe(args.name)
    if args.json:
        _print_json({"deleted": args.name})
    else:
        print(f"deleted pipe {args.name}")


# ---------------------------------------------------------------------------- agents
def cmd_agents_list(client: Any, args: argparse.Namespace) -> None:
    result = client.agents()
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "id": a["id"],
            "name": a["name"],
            "state": a["state"],
            "labels": ",".join(a["labels"]),
            "pipes": a["pipes"],
            "last_seen": a["last_seen"],
            "host": a["attributes"].get("hostname") or a["attributes"].get("host"),
            "version": a["attributes"].get("pipenb") or a["attributes"].get("version"),
        }
        for a in result["agents"]
    ]
    print(format_table(rows) if rows else "no agents yet: pipenb agents add ID")


def cmd_agents_add(client: Any, args: argparse.Namespace) -> None:
    result = client.add_agent(args.id, args.name, _csv(args.labels or ""))
    if args.json:
        _print_json(result)
        return
    labels = ", ".join(result["labels"]) or "none"
    print(f"added agent {result['id']} (labels: {labels})")
    print(f"give it an API key: pipenb agents keys create {result['id']}")


def cmd_agents_label(client: Any, args: argparse.Namespace) -> None:
    result = client.update_agent(args.id, labels=_csv(args.labels))
    if args.json:
        _print_json(result)
    else:
        print(f"agent {result['id']} labels: {', '.join(result['labels']) or 'none'}")


def cmd_agents_remove(client: Any, args: argparse.Namespace) -> None:
    client.remove_agent(args.id)
    if args.json:
        _print_json({"removed": args.id})
    else:
        print(f"removed agent {args.id}")


def cmd_agents_install_command(client: Any, args: argparse.Namespace) -> None:
    line = client.install_command(
        args.enroll_token,
        labels=_csv(args.labels or "") or None,
        name=args.name,
        prefix=args.prefix,
        service=not args.no_service,
        server_url=args.server_url,
        insecure_http=args.insecure_http,
    )
    if args.json:
        _print_json({"command": line})
        return
    print(line)
    if sys.stderr.isatty():
        where = "runs it in the foreground" if args.no_service else "starts pipenb-agent.service"
        _err(f"paste it on a worker host: it installs the agent in {args.prefix} and {where}")


def cmd_keys_create(client: Any, args: argparse.Namespace) -> None:
    result = client.create_key(args.id, expires_in=args.expires)
    if args.json:
        _print_json(result)
        return
    expires = f", expires {result['expires_at']}" if result.get("expires_at") else ""
    print(f"API key {result['key_id']} for agent {result['agent_id']}{expires}:")
    print(result["api_key"])
    print("Store it now: it is not shown again (the server keeps only its hash).")


def cmd_keys_revoke(client: Any, args: argparse.Namespace) -> None:
    client.revoke_key(args.id, args.key_id)
    if args.json:
        _print_json({"revoked": args.key_id, "agent_id": args.id})
    else:
        print(f"revoked key {args.key_id} of agent {args.id}")


# ---------------------------------------------------------------------------- enrollment tokens
def cmd_tokens_create(client: Any, args: argparse.Namespace) -> None:
    result = client.create_enroll_token(
        _csv(args.labels or ""), name=args.name, uses=args.uses, expires_in=args.expires
    )
    if args.json:
        _print_json(result)
        return
    limits = [f"labels: {', '.join(result['labels']) or 'none'}"]
    limits.append(f"uses: {result['max_uses']}" if result["max_uses"] else "uses: no limit")
    limits.append(f"expires {result['expires_at']}" if result["expires_at"] else "never expires")
    print(f"enrollment token {result['id']} ({'; '.join(limits)}):")
    print(result["token"])
    print("Store it now: it is not shown again (the server keeps only its hash).")
    print(f"On a worker host: pipenb agent --server URL --enroll-key {result['token']}")


def cmd_tokens_list(client: Any, args: argparse.Namespace) -> None:
    result = client.enroll_tokens()
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "id": t["id"],
            "name": t["name"],
            "state": t["state"],
            "labels": ",".join(t["labels"]),
            "uses": f"{t['uses']}/{t['max_uses']}" if t["max_uses"] else str(t["uses"]),
            "expires_at": t["expires_at"] or "never",
            "created_at": t["created_at"],
        }
        for t in result["tokens"]
    ]
    print(format_table(rows) if rows else "no enrollment tokens yet: pipenb enroll-tokens create")


def cmd_tokens_revoke(client: Any, args: argparse.Namespace) -> None:
    client.revoke_enroll_token(args.id)
    if args.json:
        _print_json({"revoked": args.id})
    else:
        print(f"revoked enrollment token {args.id} (agents it enrolled keep their keys)")


# ---------------------------------------------------------------------------- deployments
def _newest(client: Any, pipe: str) -> int:
    """The pipe's newest version: what a deploy or upgrade pins when no --version is given."""
    return int(client.pipe(pipe)["version"])


def cmd_deploy(client: Any, args: argparse.Namespace) -> None:
    params = _params(args.param)
    # pinned by default: a later `pipes push` must not go live everywhere by itself
    version = args.version if args.version is not None else _newest(client, args.pipe)
    result = client.deploy(
        args.pipe,
        version=version,
        params=params,
        agents=_csv(args.agents) if args.agents is not None else None,
        labels=_csv(args.labels) if args.labels is not None else None,
        instances=args.instances,
        failover=args.failover,
        name=args.name or args.pipe,
        new=args.new,
    )
    if args.json:
        _print_json(result)
    else:
        print(result["id"])  # alone, so that DEP=$(pipenb deploy PIPE) works
    missing = no_match(result)
    if missing:
        _err(f"warning: {missing}; the deployment stays pending until one does")


def _deployment_rows(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": d["id"],
            "pipe": d["pipe"],
            "version": _version_text(d),
            "state": d["state"],
            "instances": d["instances"],
            "placed": len(d["status"]),
            "target": _target(d),
            "failover": d["failover"],
        }
        for d in deps
    ]


def cmd_deployments_list(client: Any, args: argparse.Namespace) -> None:
    result = client.deployments()
    if args.json:
        _print_json(result)
        return
    rows = _deployment_rows(result["deployments"])
    print(format_table(rows) if rows else "no deployments yet: pipenb deploy PIPE")


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


def cmd_deployments_status(client: Any, args: argparse.Namespace) -> None:
    dep = client.deployment(args.id)
    if args.json:
        _print_json(dep)
        return
    _show_deployment(dep)
    rows = []
    for s in dep["status"]:
        events_in, events_out = _events(s.get("metrics"))
        rows.append(
            {
                "agent": s["agent_id"],
                "agent_state": s["agent_state"],
                "state": s["state"],
                "in_sync": s["in_sync"],
                "events_in": events_in,
                "events_out": events_out,
                "error": s.get("error"),
            }
        )
    print()
    print(format_table(rows) if rows else (no_match(dep) or "no instances"))
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
    def cmd(client: Any, args: argparse.Namespace) -> None:
        dep = call(client, args)
        if args.json:
            _print_json(dep)
        else:
            print(f"{verb} {dep['id']}: {dep['pipe']} version {_version_text(dep)}, {dep['state']}")

    return cmd


def _upgrade(client: Any, args: argparse.Namespace) -> Any:
    version = args.version
    if version is None:
        version = _newest(client, client.deployment(args.id)["pipe"])
    return client.upgrade(args.id, version)


def _log_line(x: dict[str, Any]) -> str:
    return f"{x['time']} {x['agent_id']} {x['level'].upper()} {x['message']}"


def cmd_deployments_logs(client: Any, args: argparse.Namespace) -> None:
    """The deployment's log lines from its agents; ``--follow`` keeps printing new ones."""
    import time

    logs = client.logs(args.id, agent=args.agent, limit=args.limit)["logs"]
    if args.json and not args.follow:
        _print_json({"logs": logs})
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


def cmd_deployments_metrics(client: Any, args: argparse.Namespace) -> None:
    result = client.metrics(args.id, agent=args.agent, limit=args.limit)
    if args.json:
        _print_json(result)
        return
    rows = []
    for m in result["metrics"]:
        events_in, events_out = _events(m.get("data"))
        data = m.get("data") or {}
        rows.append(
            {
                "time": m["time"],
                "agent": m["agent_id"],
                "events_in": events_in,
                "events_out": events_out,
                "dead_letters": data.get("dead_letters"),
                "uptime_s": data.get("uptime_s"),
            }
        )
    print(format_table(rows) if rows else f"no metrics yet for {args.id}")


def _command(kind: str) -> Handler:
    def cmd(client: Any, args: argparse.Namespace) -> None:
        result = client.command(args.id, kind, agent=args.agent)
        if args.json:
            _print_json(result)
            return
        agents = ", ".join(c["agent_id"] for c in result["commands"])
        print(f"{kind} of {args.id} queued for agent(s) {agents}: they act on their next check-in")

    return cmd


def cmd_settings_set(client: Any, args: argparse.Namespace) -> None:
    values: dict[str, Any] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r}: write KEY=VALUE (KEY= removes the setting)")
        values[key.strip()] = value.strip() or None
    labels = [x.strip() for x in (args.labels or "").split(",") if x.strip()]
    if not labels and not args.agent:
        raise UsageError("say whose settings: --labels A,B or --agent ID")
    result = client.set_agent_settings(values, labels, args.agent)
    if args.json:
        _print_json(result)
        return
    who = ", ".join(
        [f"label {x}" for x in labels] + ([f"agent {args.agent}"] if args.agent else [])
    )
    print(f"settings of {who} set: the agents apply them at their next check-in")


def cmd_settings_list(client: Any, args: argparse.Namespace) -> None:
    result = client.agent_settings()
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "scope": r["scope"],
            "settings": ", ".join(f"{k}={v}" for k, v in sorted(r["values"].items())) or "-",
            "by": r.get("updated_by") or "",
        }
        for r in result["scopes"]
    ]
    print(format_table(rows) if rows else "no settings: agents use their command lines'")


def cmd_settings_show(client: Any, args: argparse.Namespace) -> None:
    v = client.agent_settings(args.id)
    if args.json:
        _print_json(v)
        return
    applied = "yes" if v["applied_version"] == v["version"] else f"not yet ({v['applied_version']})"
    print(f"agent {v['agent_id']}: settings version {v['version']}, applied: {applied}")
    for k, val in sorted(v["values"].items()):
        why = v["refused"].get(k)
        print(f"  {k} = {val}" + (f"   REFUSED: {why}" if why else ""))
    if v.get("bounds"):
        print("  bounds: " + ", ".join(f"{k} {b}" for k, b in sorted(v["bounds"].items())))


def cmd_command_expiry(client: Any, args: argparse.Namespace) -> None:
    result = client.command_expiry()
    if args.json:
        _print_json(result)
        return
    rows = [
        {
            "type": e["type"],
            "waits for its agent": f"{e['pending_seconds']:g} s",
            "kept once done": f"{e['kept_seconds']:g} s",
        }
        for e in result["expiry"]
    ]
    print(format_table(rows))


def cmd_agents_show(client: Any, args: argparse.Namespace) -> None:
    a = client.agent(args.id)
    if args.json:
        _print_json(a)
        return
    print(f"agent {a['id']} ({a['name']}): {a['state']}")
    print(f"  labels: {', '.join(a['labels']) or 'none'}")
    print(f"  last seen: {a['last_seen'] or 'never'}; enrolled: {'yes' if a['enrolled'] else 'no'}")
    print(f"  pipes: {a['pipes']}")
    for k, v in (a.get("attributes") or {}).items():
        shown = orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v
        print(f"  {k}: {shown}")


def cmd_deployments_delete(client: Any, args: argparse.Namespace) -> None:
    client.delete_deployment(args.id)
    if args.json:
        _print_json({"deleted": args.id})
    else:
        print(f"deleted deployment {args.id}")


def cmd_tap(client: Any, args: argparse.Namespace) -> None:
    if sys.stderr.isatty() and not args.json:
        _err(f"waiting up to {args.timeout:g} s for {args.limit} event(s) from the agents...")
    events = client.tap(args.deployment, stage=args.stage, limit=args.limit, timeout=args.timeout)
    if args.json:
        _print_json(events)
    elif events:
        rows = [e if isinstance(e, dict) else {"event": e} for e in events]
        print(format_table(rows))
    else:
        print("no events captured")


# ---------------------------------------------------------------------------- the parser
def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    option(common, "--url", help="the pipenb server, as printed by `pipenb server`")
    option(common, "--token", help="the user token for the server")
    option(common, "--ca-file", help="trust only the CA in this PEM file for an https:// server")
    option(
        common,
        "--ca-fingerprint",
        help="trust the server's CA if its SHA-256 fingerprint is this (as `pipenb server` prints it)",
    )
    option(
        common, "--cert", help="a client certificate (PEM) for a server that requires mutual TLS"
    )
    option(common, "--key", help="the private key of --cert (PEM), if not in the --cert file")
    common.add_argument("--json", action="store_true", help="print the server's answer as JSON")

    def leaf(group: Any, name: str, fn: Handler, help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=_remote(fn))
        return p

    def version_option(p: argparse.ArgumentParser, what: str, pinned: bool = False) -> None:
        p.add_argument(
            "--version",
            type=_version,
            default=None if pinned else "latest",
            metavar="V",
            help=f"{what} (default: " + ("the newest, pinned)" if pinned else "latest)"),
        )

    # pipes
    g = sub.add_parser("pipes", help="pipes stored on the server: push, list, show, versions, ...")
    gs = g.add_subparsers(dest="pipes_command", metavar="COMMAND", required=True)
    p = leaf(gs, "push", cmd_pipes_push, "validate a pipe file and store it as a new version")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-m", "--message", default="", help="what changed in this version")
    p.add_argument(
        "--table",
        action="append",
        metavar="FILE",
        help="a lookup table file to send with the pipe (named in it by its file name); "
        "repeat for several",
    )
    leaf(gs, "list", cmd_pipes_list, "list the pipes with their newest version")
    p = leaf(gs, "show", cmd_pipes_show, "print a version of a pipe (default: the newest)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", type=_positive, metavar="V", help="a version number")
    p = leaf(gs, "versions", cmd_pipes_versions, "list a pipe's versions and their messages")
    p.add_argument("name", metavar="NAME")
    p = leaf(gs, "diff", cmd_pipes_diff, "unified diff between two versions of a pipe")
    p.add_argument("name", metavar="NAME")
    p.add_argument("v1", type=_positive, metavar="V1")
    p.add_argument("v2", type=_positive, metavar="V2")
    p = leaf(gs, "delete", cmd_pipes_delete, "delete a pipe and all its versions")
    p.add_argument("name", metavar="NAME")

    # agents
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
    st = gs.add_parser("settings", help="settings the server gives agents: set, list, show")
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
        gs,
        "command-expiry",
        cmd_command_expiry,
        "how long each type of command waits for its agent, and is kept once done",
    )
    k = gs.add_parser("keys", help="an agent's API keys: create, revoke")
    ks = k.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    p = leaf(ks, "create", cmd_keys_create, "create an API key for an agent (shown once)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 90d (default: never expires)")
    p = leaf(ks, "revoke", cmd_keys_revoke, "revoke an agent's API key")
    p.add_argument("id", metavar="ID")
    p.add_argument("key_id", metavar="KEY_ID")

    # enrollment tokens
    g = sub.add_parser(
        "enroll-tokens", help="tokens agents enroll with (they get its labels): create, list, ..."
    )
    gs = g.add_subparsers(dest="tokens_command", metavar="COMMAND", required=True)
    p = leaf(gs, "create", cmd_tokens_create, "create an enrollment token (shown once)")
    p.add_argument("--labels", metavar="A,B", help="labels every agent it enrolls gets")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 24h (default: never expires)")
    p.add_argument(
        "--uses", type=_positive, metavar="N", help="agents it may enroll (default: any)"
    )
    p.add_argument("--name", help="what the token is for")
    leaf(gs, "list", cmd_tokens_list, "list enrollment tokens with their state and uses")
    p = leaf(gs, "revoke", cmd_tokens_revoke, "revoke an enrollment token")
    p.add_argument("id", metavar="ID")

    # people: whoami, users, audit
    from pipenb.cli import people

    people.register(sub, leaf)

    # deploy
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
        type=_instances,
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

    # deployments
    g = sub.add_parser("deployments", help="deployments: list, status, start, stop, upgrade, ...")
    gs = g.add_subparsers(dest="deployments_command", metavar="COMMAND", required=True)
    leaf(gs, "list", cmd_deployments_list, "list deployments and their state")
    p = leaf(gs, "status", cmd_deployments_status, "a deployment and the state of each instance")
    p.add_argument("id", metavar="ID")
    p = leaf(
        gs,
        "start",
        _deployment_action("started", lambda c, a: c.start(a.id)),
        "start a stopped deployment",
    )
    p.add_argument("id", metavar="ID")
    p = leaf(
        gs,
        "stop",
        _deployment_action("stopped", lambda c, a: c.stop(a.id)),
        "stop a deployment (it is kept and can be started again)",
    )
    p.add_argument("id", metavar="ID")
    p = leaf(
        gs,
        "upgrade",
        _deployment_action("upgraded", _upgrade),
        "move a deployment to another pipe version",
    )
    p.add_argument("id", metavar="ID")
    version_option(p, "the version to run; 'latest' follows new pushes", pinned=True)
    p = leaf(gs, "delete", cmd_deployments_delete, "delete a deployment (its agents stop it)")
    p.add_argument("id", metavar="ID")
    p = leaf(gs, "logs", cmd_deployments_logs, "log lines the agents sent about a deployment")
    p.add_argument("id", metavar="ID")
    p.add_argument("--agent", help="only this agent's lines")
    p.add_argument("--limit", type=_positive, default=100, help="newest lines (default 100)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )
    p = leaf(gs, "metrics", cmd_deployments_metrics, "metrics the agents reported")
    p.add_argument("id", metavar="ID")
    p.add_argument("--agent", help="only this agent's points")
    p.add_argument("--limit", type=_positive, default=100, help="newest points (default 100)")
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

    # tap
    p = leaf(sub, "tap", cmd_tap, "capture the next events at a stage of a running deployment")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p.add_argument("--stage", help="input, output (default), or an action's index or label")
    p.add_argument("--limit", type=_positive, default=10, help="events to capture (default 10)")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for them (default 30)"
    )
