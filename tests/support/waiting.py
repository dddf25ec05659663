"""Synchronisation is always by polling a condition with a deadline (``wait_until`` and
``async_wait_until``), never by sleeping a fixed time and hoping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pipenb


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "a condition",
    info: Callable[[], Any] | None = None,
    interval: float = 0.01,
) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds, with
    ``info()`` (the state worth seeing) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{info()}" if info is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)  # poll


async def async_wait_until(
    pred: Callable[[], Any], timeout: float = 20.0, what: str = "a condition"
) -> Any:
    """``wait_until`` for code running inside the event loop (lets the engine work meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # poll


async def stop_engine(engine: pipenb.Engine, task: asyncio.Task, timeout: float = 20.0) -> Any:
    """Ask a running engine to stop and wait (with a deadline) until ``run()`` returned."""
    engine.stop()
    return await asyncio.wait_for(task, timeout)
