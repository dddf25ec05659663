"""In-memory state of the server process: who is online, who waits in a long poll, and caches.

The check-in handler is the hot path: an agent that has nothing new costs a key lookup, a
presence update and a cached answer, with no database write. Presence is flushed to the
database every few seconds by the background task.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Presence:
    last_seen: float = 0.0  # time.time()
    open_polls: int = 0
    seq: int = -1
    leaving: bool = False
    failed: set[str] = field(default_factory=set)  # deployments whose pipe reported failed

    @property
    def failing(self) -> bool:
        return bool(self.failed)

    dirty: bool = False  # last_seen not yet flushed
    stored: float = 0.0  # the last_seen the database holds


@dataclass
class Live:
    presence: dict[str, Presence] = field(default_factory=lambda: defaultdict(Presence))
    waiters: dict[str, set[asyncio.Future[None]]] = field(default_factory=lambda: defaultdict(set))
    desired_cache: dict[str, Any] = field(default_factory=dict)
    pending_commands: set[str] = field(default_factory=set)  # agents with unacked commands
    #: key_id -> (hash, agent id, expiry as time.time() or None)
    key_cache: dict[str, tuple[str, str, float | None]] = field(default_factory=dict)
    #: key_id -> agent id, for keys of agents removed since the server started: their next
    #: request hears that the agent was removed, not just that the key is unknown
    removed_keys: dict[str, str] = field(default_factory=dict)
    reconcile_due: bool = False  # an agent appeared, came back or left: re-place instances
    #: deleted deployments to tell each agent about (it removes their checkpoint and log)
    gone: dict[str, set[str]] = field(default_factory=dict)
    #: agent id -> how often its desired set was dropped; database work runs on threads
    #: (dbpool.py), so a set computed from rows read before a change must not be cached after it
    generation: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: bumped when keys stop being valid (revoked, agent removed): a key read before must not be
    #: cached after
    keys_epoch: int = 0
    loop: asyncio.AbstractEventLoop | None = None  # the event loop the long polls wait on

    def seen(self, agent_id: str, offline_after: float) -> Presence:
        if not self.is_online(agent_id, offline_after):
            self.reconcile_due = True  # first check-in, or back from offline
        p = self.presence[agent_id]
        p.last_seen = time.time()
        p.dirty = True
        p.leaving = False
        return p

    def is_online(self, agent_id: str, offline_after: float) -> bool:
        p = self.presence.get(agent_id)
        if p is None or p.leaving:
            return False
        return p.open_polls > 0 or time.time() - p.last_seen <= offline_after

    # ------------------------------------------------------------------ long poll
    async def wait(
        self, agent_id: str, timeout: float, closed: asyncio.Future[None] | None = None
    ) -> bool:
        """Wait until ``notify(agent_id)``, ``timeout``, or the client hung up (``closed``).

        True when woken. A held request counts as presence; a hung-up one must stop counting
        at once, or a killed agent would look online until the hold ends (delaying failover).
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[agent_id].add(fut)
        p = self.presence[agent_id]
        p.open_polls += 1
        try:
            waits = {fut} if closed is None else {fut, closed}
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            return fut in done
        finally:
            p.open_polls -= 1
            p.last_seen = time.time()
            p.dirty = True
            self.waiters[agent_id].discard(fut)
            if not self.waiters[agent_id]:
                del self.waiters[agent_id]

    def notify(self, *agent_ids: str) -> None:
        """What these agents should run changed: drop their cached answer and wake them."""
        for agent_id in agent_ids:
            self.generation[agent_id] += 1
            self.desired_cache.pop(agent_id, None)
        self.wake(*agent_ids)

    def cache_desired(self, agent_id: str, generation: int, value: Any) -> None:
        """Keep a desired set computed from rows read at ``generation``, unless it changed since."""
        if self.generation[agent_id] == generation:
            self.desired_cache[agent_id] = value

    def wake(self, *agent_ids: str) -> None:
        """Answer these agents' held check-ins now (from any thread: futures are set on the
        event loop)."""
        loop = self.loop
        if loop is not None and loop.is_running():
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # a worker thread (dbpool.py)
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._wake, agent_ids)
                return
        self._wake(agent_ids)

    def _wake(self, agent_ids: tuple[str, ...]) -> None:
        for agent_id in agent_ids:
            for fut in self.waiters.get(agent_id, ()):
                if not fut.done():
                    fut.set_result(None)
