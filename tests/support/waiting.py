"""Synchronisation is always by polling a condition with a deadline (``wait_until`` and
``async_wait_until``), never by sleeping a fixed time and hoping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import requests

import pipenb


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "a condition",
    info: Callable[[], Any] | None = None,
    interval: float = 0.01,
    error: type[Exception] = AssertionError,
) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds, with
    ``info()`` (the state worth seeing) in the message, as ``error`` (process helpers raise
    RuntimeError: a process that never came up is not a failed assertion). ``pred`` may raise
    to give up early (a process that exited will never answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{info()}" if info is not None else ""
            raise error(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)  # poll


def answers(url: str, **get: Any) -> bool:
    """Does ``url`` answer 2xx now? (``get``: requests options, e.g. verify, cert)"""
    try:
        return requests.get(url, timeout=2, **get).ok
    except requests.ConnectionError:
        return False


def wait_until_up(
    proc: Any, url: str, what: str, log: Callable[[], str], timeout: float, **get: Any
) -> None:
    """Until the process ``proc`` answers ``url`` (its health check); RuntimeError with its log
    when it exits first or does not answer within ``timeout`` seconds."""

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log()}")
        return answers(url, **get)

    wait_until(up, timeout, f"{what} to answer {url}", log, interval=0.05, error=RuntimeError)


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
