"""The presence flush walks the agents' presence on a database thread while the event loop adds
agents to it. With 10,000 agents meeting two processes it failed with "dictionary changed size
during iteration": copying the items made a tuple per agent, a tuple can set off a garbage
collection, and a collection runs Python code (callbacks, finalizers), during which the other
thread ran. Here a collection callback hands the GIL over on purpose, so that the race, rare
in the wild, happens on every run of the old code."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipenb.server.control_plane import ControlPlane
from pipenb.server.settings import ServerSettings


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        ServerSettings(
            db_url=f"sqlite:///{tmp_path / 'store.db'}", secret_key_file=str(tmp_path / "key")
        )
    )
    try:
        yield plane
    finally:
        plane.db.shutdown()
        plane.engine.dispose()


def test_the_presence_flush_survives_an_agent_arriving_during_a_collection(
    cp: ControlPlane,
) -> None:
    """Whenever a garbage collection runs on the flush's thread, the "event loop" (another
    thread) adds an agent before the collection ends: what a collection's callbacks and
    finalizers let happen in the wild, made to happen every time."""
    live, flush = cp.live, cp.presence_flush
    for i in range(5000):
        live.seen(f"a{i:05d}", 60)
    flushing = threading.get_ident()
    added: list[str] = []

    def arrive_meanwhile(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.get_ident() == flushing:
            agent_id = f"new{len(added):05d}"
            t = threading.Thread(target=live.seen, args=(agent_id, 60))
            t.start()
            t.join()
            added.append(agent_id)

    old = gc.get_threshold()
    gc.set_threshold(100)  # collections come often, as under load
    gc.callbacks.append(arrive_meanwhile)
    try:
        flush.flush(force=True)  # raised "dictionary changed size during iteration" before
    finally:
        gc.callbacks.remove(arrive_meanwhile)
        gc.set_threshold(*old)
    assert added, "no collection ran during the flush: the test proves nothing"
    assert not any(live.presence[f"a{i:05d}"].dirty for i in range(5000))
