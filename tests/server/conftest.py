"""Fixtures the server tests share: a fresh PostgreSQL database per test (when
``PIPENB_TEST_POSTGRES_URL`` names a server: ``scripts/postgres-test.sh`` starts one, and
``make test`` does), and ``db_url``, which runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import postgres


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url = postgres.pg_server_url()
    if not url:
        pytest.skip(postgres.PG_SKIP)
    return url


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database with a random name, dropped after the test."""
    pytest.importorskip("psycopg")
    with postgres.fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test once on a SQLite file, once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))
