"""The fixtures every test directory shares.

Helpers to import live in the ``support`` package (``from support.waiting import wait_until``);
this file holds fixtures only, so no test imports ``conftest`` as a module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipenb.client import Client

from support.cli import remote_cli
from support.labproc import LabProcess
from support.serverproc import ServerProcess


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    """A private checkpoint directory, so no test reads or writes ~/.local/state."""
    d = tmp_path / "data"
    d.mkdir()
    return str(d)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    """JupyterLab as ``make run`` starts it, with its agent ``local`` online: one per session,
    shared by the notebook, lab and browser tests."""
    proc = LabProcess(tmp_path_factory.mktemp("lab"))
    try:
        yield proc.start()
    finally:
        proc.kill()


# ------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real ``pipenb server`` for the whole test module (SQLite in a temp dir).

    A module chooses its options with a module-level ``SERVER`` dict of ``ServerProcess``
    keyword arguments, e.g. ``SERVER = {"enroll_key": ENROLL_KEY, "poll_interval": 0.3}``.
    """
    options = getattr(request.module, "SERVER", {})
    server = ServerProcess(tmp_path_factory.mktemp("server"), **options)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> Client:
    """``pipenb.Client`` for ``srv``, with the user token."""
    return Client(srv.url, srv.token, timeout=10)


@pytest.fixture
def pnb(srv: ServerProcess, tmp_path: Path) -> Callable[..., tuple[int, str, str]]:
    """``pipenb ARGS`` in a subprocess against ``srv`` (cwd: the test's tmp_path):
    ``pnb(*args, **env) -> (exit code, stdout, stderr)``."""
    return remote_cli(srv.url, srv.token, tmp_path)
