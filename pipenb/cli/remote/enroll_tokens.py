"""``pipenb enroll-tokens create|list|revoke``: the tokens agents enroll with."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pipenb.cli.remote.args import csv, positive
from pipenb.cli.remote.output import as_json, done, listing

if TYPE_CHECKING:
    from pipenb.client import Client


def cmd_tokens_create(client: Client, args: argparse.Namespace) -> None:
    result = client.create_enroll_token(
        csv(args.labels or ""), name=args.name, uses=args.uses, expires_in=args.expires
    )
    if as_json(args, result):
        return
    limits = [f"labels: {', '.join(result['labels']) or 'none'}"]
    limits.append(f"uses: {result['max_uses']}" if result["max_uses"] else "uses: no limit")
    limits.append(f"expires {result['expires_at']}" if result["expires_at"] else "never expires")
    print(f"enrollment token {result['id']} ({'; '.join(limits)}):")
    print(result["token"])
    print("Store it now: it is not shown again (the server keeps only its hash).")
    print(f"On a worker host: pipenb agent --server URL --enroll-key {result['token']}")


def _token_row(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "name": t["name"],
        "state": t["state"],
        "labels": ",".join(t["labels"]),
        "uses": f"{t['uses']}/{t['max_uses']}" if t["max_uses"] else str(t["uses"]),
        "expires_at": t["expires_at"] or "never",
        "created_at": t["created_at"],
    }


def cmd_tokens_list(client: Client, args: argparse.Namespace) -> None:
    empty = "no enrollment tokens yet: pipenb enroll-tokens create"
    listing(args, client.enroll_tokens(), "tokens", _token_row, empty)


def cmd_tokens_revoke(client: Client, args: argparse.Namespace) -> None:
    client.revoke_enroll_token(args.id)
    line = f"revoked enrollment token {args.id} (agents it enrolled keep their keys)"
    done(args, {"revoked": args.id}, line)


def register(sub: Any, leaf: Any) -> None:
    g = sub.add_parser(
        "enroll-tokens", help="tokens agents enroll with (they get its labels): create, list, ..."
    )
    gs = g.add_subparsers(dest="tokens_command", metavar="COMMAND", required=True)
    p = leaf(gs, "create", cmd_tokens_create, "create an enrollment token (shown once)")
    p.add_argument("--labels", metavar="A,B", help="labels every agent it enrolls gets")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 24h (default: never expires)")
    p.add_argument("--uses", type=positive, metavar="N", help="agents it may enroll (default: any)")
    p.add_argument("--name", help="what the token is for")
    leaf(gs, "list", cmd_tokens_list, "list enrollment tokens with their state and uses")
    p = leaf(gs, "revoke", cmd_tokens_revoke, "revoke an enrollment token")
    p.add_argument("id", metavar="ID")
