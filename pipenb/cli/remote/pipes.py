"""``pipenb pipes push|list|show|versions|diff|delete``: pipes stored on the server."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pipenb.cli.remote.args import positive
from pipenb.cli.remote.output import as_json, done, listing

if TYPE_CHECKING:
    from pipenb.client import Client


def cmd_pipes_push(client: Client, args: argparse.Namespace) -> None:
    result = client.push_file(args.file, args.message, tuple(args.table or ()))
    if as_json(args, result):
        return
    if result["created"]:
        print(f"pushed {result['pipe']} version {result['version']}")
    else:
        print(f"{result['pipe']} is unchanged (version {result['version']})")


def _pipe_row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": p["name"],
        "version": p["latest_version"],
        "versions": p["versions"],
        "deployments": p["deployments"],
        "labels": ",".join(p["labels"]),
        "updated": p["updated_at"],
        "description": p["description"],
    }


def cmd_pipes_list(client: Client, args: argparse.Namespace) -> None:
    listing(args, client.pipes(), "pipes", _pipe_row, "no pipes yet: pipenb pipes push FILE")


def cmd_pipes_show(client: Client, args: argparse.Namespace) -> None:
    result = client.pipe(args.name, args.version)
    if not as_json(args, result):
        # The text exactly as pushed, so `pipes show X > x.yaml && pipes push x.yaml` is a no-op.
        sys.stdout.write(result.get("yaml") or "")


def _version_row(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": v["version"],
        "created": v["created_at"],
        "hash": v["hash"][:12],
        "author": v.get("author") or "",
        "message": v["message"],
    }


def cmd_pipes_versions(client: Client, args: argparse.Namespace) -> None:
    listing(args, client.versions(args.name), "versions", _version_row, "(no rows)")


def cmd_pipes_diff(client: Client, args: argparse.Namespace) -> None:
    result = client.diff(args.name, args.v1, args.v2)
    if as_json(args, result):
        return
    if result["diff"]:
        sys.stdout.write(result["diff"])
    else:
        print(f"{args.name}: versions {args.v1} and {args.v2} are identical")


def cmd_pipes_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_pipe(args.name)
    done(args, {"deleted": args.name}, f"deleted pipe {args.name}")


def register(sub: Any, leaf: Any) -> None:
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
    p.add_argument("--version", type=positive, metavar="V", help="a version number")
    p = leaf(gs, "versions", cmd_pipes_versions, "list a pipe's versions and their messages")
    p.add_argument("name", metavar="NAME")
    p = leaf(gs, "diff", cmd_pipes_diff, "unified diff between two versions of a pipe")
    p.add_argument("name", metavar="NAME")
    p.add_argument("v1", type=positive, metavar="V1")
    p.add_argument("v2", type=positive, metavar="V2")
    p = leaf(gs, "delete", cmd_pipes_delete, "delete a pipe and all its versions")
    p.add_argument("name", metavar="NAME")
