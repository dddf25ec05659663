"""The collector a server process serves with (server/run.py): what was alive when serving began
is frozen out of the collections, and young collections are spaced out, so that full passes over
a large fleet's objects stay rare (measured in bench/README.md, not timed here)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pipenb.server.run import GC_YOUNG_THRESHOLD, collector_for_serving


@pytest.fixture
def collector() -> Iterator[None]:
    """This test process's collector as it was, afterwards."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_serving_freezes_what_lives_and_spaces_young_collections(collector: None) -> None:
    middle, old = gc.get_threshold()[1:]
    alive = [{"agent": i} for i in range(1000)]
    collector_for_serving()
    assert gc.get_freeze_count() >= len(alive)  # out of every collection from now on
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
    assert gc.isenabled()  # spaced out, never off: cycles are still collected
    assert alive
