"""A throwaway PostgreSQL database per test, on the server ``PIPENB_TEST_POSTGRES_URL`` names
(``scripts/postgres-test.sh`` starts one; ``make test`` does). Without it the PostgreSQL tests
skip with ``PG_SKIP``."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

PG_ENV = "PIPENB_TEST_POSTGRES_URL"
PG_SKIP = (
    f"{PG_ENV} is not set: no PostgreSQL to test against "
    "(run scripts/postgres-test.sh, or `make test`, to start one)"
)


def pg_server_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "pipenb_t_") -> Iterator[str]:
    """A new database with a random name on ``server_url``'s server: its URL, dropped after."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(server_url).set(drivername="postgresql")
    name = f"{prefix}{secrets.token_hex(6)}"
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
