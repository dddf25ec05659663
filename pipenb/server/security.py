"""Secrets: agent API keys and enrollment keys are random, shown once and stored hashed.

Keys carry 256 bits of randomness, so a single SHA-256 is a sound hash (slow password hashes
exist for guessable secrets). Comparisons use ``hmac.compare_digest``: constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "pnb"
ENROLL_PREFIX = "pnbe"


def new_id(prefix: str, nbytes: int = 6) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def new_api_key() -> tuple[str, str]:
    """``(key_id, api_key)``; the key is ``pnb_<key_id>_<secret>``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def split_api_key(api_key: str, prefix: str = PREFIX) -> tuple[str, str] | None:
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def new_enroll_token() -> tuple[str, str]:
    """``(token_id, token)``; the token is ``pnbe_<token_id>_<secret>``: its id finds the row,
    its secret is compared with the stored hash."""
    token_id = secrets.token_hex(6)
    return token_id, f"{ENROLL_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def split_enroll_token(token: str) -> tuple[str, str] | None:
    return split_api_key(token, ENROLL_PREFIX)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(given: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(given), stored_hash)


def same_token(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def new_token() -> str:
    return secrets.token_urlsafe(24)
