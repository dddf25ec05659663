"""Secret deployment parameters: sealed at rest with a key the server keeps, masked in answers.

A pipe declares ``params: {token: {secret: true}}``; the value given at deploy time is stored as
``{"$secret": "<Fernet token>"}`` in the deployment's params, so the database (and its backups)
never hold it in clear. The API shows it as ``***``; only the desired set handed to an agent whose
instance needs it carries the clear value (over the agents' TLS link).

The key is a Fernet key in a file of mode 0600: by default ``secret.key`` beside the SQLite
database; with PostgreSQL the operator names it (``--secret-key-file``), and every server process
of one fleet must be given the same file. A server with no key refuses secret values with a
message that says how to give one, rather than storing them in clear.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipenb.errors import ApiError

MASK = "***"
SEALED = "$secret"


def default_key_file(db_url: str) -> str | None:
    """``secret.key`` beside a SQLite file; None for other databases (the operator chooses)."""
    if not db_url.startswith("sqlite"):
        return None
    path = db_url.split("///", 1)[-1]
    if not path or path == ":memory:":
        return None
    return str(Path(path).absolute().with_name("secret.key"))


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


class SecretBox:
    """Seals and opens parameter values with one Fernet key, made on first use."""

    def __init__(self, key_file: str | None):
        self.key_file = key_file
        self._fernet: Any = None

    def _key(self) -> Any:
        if self._fernet is None:
            if not self.key_file:
                raise ApiError(
                    400,
                    "no_secret_key",
                    "this server has no key for secret parameters: start it with "
                    "--secret-key-file FILE (the same file for every server process of a fleet)",
                )
            from cryptography.fernet import Fernet

            self._fernet = Fernet(_load_or_make(Path(self.key_file)))
        return self._fernet

    def seal(self, value: Any) -> dict[str, str]:
        import orjson

        return {SEALED: self._key().encrypt(orjson.dumps(value)).decode()}

    def open(self, value: Any) -> Any:
        if not is_sealed(value):
            return value
        import orjson
        from cryptography.fernet import InvalidToken

        try:
            return orjson.loads(self._key().decrypt(value[SEALED].encode()))
        except InvalidToken:
            raise ApiError(
                500,
                "secret_key_mismatch",
                "a secret parameter cannot be opened with this server's key file "
                f"({self.key_file}): was the key replaced?",
            ) from None

    # ------------------------------------------------------------------ whole params dicts
    def seal_params(
        self, params: dict[str, Any], secret: set[str], previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Params as stored: the names in ``secret`` sealed, the others in clear.

        A value equal to the one ``previous`` (the stored params) sealed keeps its old sealed
        form: Fernet tokens differ on every call, and the stored form feeds the hash that tells
        an agent to restart a pipe, so an unchanged secret must not restart it."""
        previous = previous or {}
        out = {}
        for k, v in params.items():
            if k not in secret:
                out[k] = self.open(v)  # a param that stopped being secret in a newer version
            elif is_sealed(v):
                out[k] = v
            elif is_sealed(previous.get(k)) and self.open(previous[k]) == v:
                out[k] = previous[k]
            else:
                out[k] = self.seal(v)
        return out

    def open_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The clear values, for the agent that runs the instance."""
        return {k: self.open(v) for k, v in (params or {}).items()}


def mask_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """What the API shows: sealed values as ``***``."""
    return {k: MASK if is_sealed(v) else v for k, v in (params or {}).items()}


def _load_or_make(path: Path) -> bytes:
    """Read the key, or make one (mode 0600, in a directory only its owner can enter)."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    # written whole to a private temporary file, then linked into place: a second process that
    # starts at the same moment either links first (and we read its key) or reads ours whole
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return key
