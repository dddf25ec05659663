"""``pipenb whoami``, ``pipenb users ...`` and ``pipenb audit``: people, their roles and tokens,
and the trail of what they wrote. Registered by ``cli/remote/__init__.py`` with its common options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pipenb.cli.options import Subparsers
from pipenb.cli.remote.output import as_json, done, listing
from pipenb.errors import UsageError

if TYPE_CHECKING:
    from pipenb.client import Client

ROLES = ("viewer", "editor", "admin")


def _duration(text: str) -> float:
    from pipenb.lang.units import parse_duration

    try:
        seconds = parse_duration(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"a duration like 30d, 12h or 90m, not {text!r}") from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def _since(text: str) -> str:
    """An ISO time as it is, or a duration back from now (``1h``: the last hour)."""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return text
    except ValueError:
        pass
    back = _duration(text)
    return (datetime.now(timezone.utc) - timedelta(seconds=back)).isoformat()


def cmd_whoami(client: Client, args: argparse.Namespace) -> None:
    me = client.whoami()
    done(args, me, f"{me['name']} ({me['role']}, by {me['via']}) at {client.url}")


def _user_row(u: dict[str, Any]) -> dict[str, Any]:
    return {"name": u["name"], "role": u["role"], "tokens": u["tokens"], "since": u["created_at"]}


def cmd_users_list(client: Client, args: argparse.Namespace) -> None:
    empty = "no users yet: pipenb users add NAME --role ROLE"
    listing(args, client.users(), "users", _user_row, empty)


def cmd_users_add(client: Client, args: argparse.Namespace) -> None:
    user = client.add_user(args.name, args.role)
    done(args, user, f"added {user['name']} ({user['role']}); give them a token: "
                     f"pipenb users tokens create {user['name']}")  # fmt: skip


def cmd_users_remove(client: Client, args: argparse.Namespace) -> None:
    client.remove_user(args.name)
    done(args, {"removed": args.name}, f"removed {args.name} and their tokens")


def cmd_tokens_create(client: Client, args: argparse.Namespace) -> None:
    made = client.create_user_token(args.name, args.expires)
    if as_json(args, made):
        return
    until = f", expires {made['expires_at']}" if made.get("expires_at") else ""
    print(f"token {made['token_id']} for {made['user']}{until} (shown once, stored hashed):")
    print(made["token"])


def _token_row(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": t["token_id"],
        "created": t["created_at"],
        "expires": t.get("expires_at") or "",
        "revoked": t.get("revoked_at") or "",
    }


def cmd_tokens_list(client: Client, args: argparse.Namespace) -> None:
    empty = f"{args.name} has no tokens"
    listing(args, client.user_tokens(args.name), "tokens", _token_row, empty)


def cmd_tokens_revoke(client: Client, args: argparse.Namespace) -> None:
    client.revoke_user_token(args.name, args.token_id)
    done(args, {"revoked": args.token_id}, f"revoked token {args.token_id} of {args.name}")


def _audit_row(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": e["time"],
        "user": e["user"],
        "role": e["role"],
        "from": e["address"],
        "request": f"{e['method']} {e['route']}",
        "object": e.get("object") or "",
        "status": e["status"],
    }


def cmd_audit(client: Client, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    result = client.audit(user=args.user, object=args.object, since=args.since, limit=args.limit)
    listing(args, result, "entries", _audit_row, "no writes recorded for that filter")


def register(sub: Subparsers, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    leaf(sub, "whoami", cmd_whoami, "who the token stands for, and their role")

    g = sub.add_parser("users", help="people who use the server, their roles and tokens")
    gs = g.add_subparsers(dest="users_command", metavar="COMMAND", required=True)
    leaf(gs, "list", cmd_users_list, "list users and their roles")
    p = leaf(gs, "add", cmd_users_add, "add a user with a role (admins only)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", required=True, choices=ROLES, help="what they may do")
    p = leaf(gs, "remove", cmd_users_remove, "remove a user and their tokens (admins only)")
    p.add_argument("name", metavar="NAME")
    t = gs.add_parser("tokens", help="a user's API tokens: create, list, revoke")
    ts = t.add_subparsers(dest="tokens_command", metavar="COMMAND", required=True)
    p = leaf(ts, "create", cmd_tokens_create, "create a token for a user (shown once)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--expires", type=_duration, metavar="DURATION", help="e.g. 30d, 12h")
    p = leaf(ts, "list", cmd_tokens_list, "list a user's tokens (never the tokens themselves)")
    p.add_argument("name", metavar="NAME")
    p = leaf(ts, "revoke", cmd_tokens_revoke, "revoke a user's token")
    p.add_argument("name", metavar="NAME")
    p.add_argument("token_id", metavar="TOKEN_ID")

    p = leaf(sub, "audit", cmd_audit, "who wrote what through the API, oldest first")
    p.add_argument("--user", help="only this user's writes")
    p.add_argument("--object", metavar="ID", help="only writes about this pipe or deployment")
    p.add_argument("--since", type=_since, metavar="TIME", help="ISO time, or a duration: 1h")
    p.add_argument("--limit", type=int, default=200, help="the newest N entries (default 200)")
