"""In-memory state of the server process: who is online, who waits in a long poll, and caches.

The check-in handler is the hot path: an agent that has nothing new costs a key lookup, a
presence update and a cached answer, with no database write. Presence is flushed to the
database every few seconds by the background task.

With several processes on one PostgreSQL (coordination.py), what changes here and matters to
the other processes is also ``publish``-ed on the bus (bus.py), and the agents held by the other
processes are known from the last-seen times they write (``remote_seen``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


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
    #: tells the other server processes (bus.py): kind, agent ids, anything else (JSON)
    publish: Callable[..., None] = field(default=lambda kind, ids=(), extra=None: None)
    #: agent -> last check-in as the database has it, written by every process (coordination.py)
    remote_seen: dict[str, float] = field(default_factory=dict)
    remote_failing: set[str] = field(default_factory=set)  # agents with a failed pipe, ditto
    left: dict[str, float] = field(default_factory=dict)  # agent -> when it said it was leaving
    #: how much later than ``offline_after`` a time read from the database counts as offline:
    #: the writer rewrites it only every so often, and the reader reads it every second
    remote_slack: float = 0.0
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
            self.publish("place")  # the process that runs placement may be another
        p = self.presence[agent_id]
        p.last_seen = time.time()
        p.dirty = True
        p.leaving = False
        return p

    def is_online(self, agent_id: str, offline_after: float) -> bool:
        p = self.presence.get(agent_id)
        if (
            p is not None
            and not p.leaving
            and (p.open_polls > 0 or time.time() - p.last_seen <= offline_after)
        ):
            return True
        seen = self.remote_seen.get(agent_id)  # checked in with another process
        if seen is None or seen <= self.left.get(agent_id, 0.0):
            return False
        return time.time() - seen <= offline_after + self.remote_slack

    def is_failing(self, agent_id: str) -> bool:
        """A pipe of this agent failed: as its last check-in here said, or, when it checked in
        with another process since, as the database says."""
        p = self.presence.get(agent_id)
        if p is not None and p.last_seen >= self.remote_seen.get(agent_id, 0.0):
            return p.failing
        return agent_id in self.remote_failing

    def last_seen_of(self, agent_id: str) -> float:
        p = self.presence.get(agent_id)
        return max(p.last_seen if p is not None else 0.0, self.remote_seen.get(agent_id, 0.0))

    def known_agents(self) -> Iterable[str]:
        """Agents seen by this process or, as the database says, by another."""
        return set(self.presence) | set(self.remote_seen)

    # ------------------------------------------------------------------ changes others hear of
    def leave(self, agent_id: str) -> None:
        """The agent said it is leaving (it stops): offline now, and its instances move."""
        self.presence[agent_id].leaving = True
        self.left[agent_id] = time.time()
        self.reconcile_due = True  # hand its failover instances over now
        self.publish("leave", [agent_id], self.left[agent_id])

    def commands_for(self, *agent_ids: str) -> None:
        """Commands wait for these agents: hand them over at their next (or held) check-in."""
        self.pending_commands.update(agent_ids)
        self.wake(*agent_ids)
        self.publish("commands", agent_ids)

    def key_revoked(self, key_id: str, agent_id: str) -> None:
        """Forget the key, and answer the held check-in (it re-checks its key when woken)."""
        self.keys_epoch += 1  # a key read before this (on a worker thread) is not cached after
        self.key_cache.pop(key_id, None)
        self.wake(agent_id)
        self.publish("key", [agent_id], key_id)

    def agent_removed(self, agent_id: str, key_ids: list[str], publish: bool = True) -> None:
        """Its keys are refused as the keys of a removed agent from now on."""
        for key_id in key_ids:  # so that its next request hears why it is refused
            self.removed_keys[key_id] = agent_id
        self.keys_epoch += 1
        self.key_cache = {k: v for k, v in snapshot(self.key_cache).items() if v[1] != agent_id}
        self.presence.pop(agent_id, None)
        self.remote_seen.pop(agent_id, None)
        self.notify(agent_id, publish=False)
        if publish:
            self.publish("removed", [agent_id], key_ids)

    def tell_gone(self, agent_ids: Iterable[str], dep_id: str, publish: bool = True) -> None:
        """A deployment these agents ran was deleted: their next answer says so."""
        agents = list(agent_ids)
        for agent_id in agents:
            self.gone.setdefault(agent_id, set()).add(dep_id)
        self.notify(*agents, publish=False)
        if publish and agents:
            self.publish("gone", agents, dep_id)

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
            if not p.leaving:  # a hold the agent's goodbye ended is no sign of life: it left
                p.last_seen = time.time()
                p.dirty = True
            self.waiters[agent_id].discard(fut)
            if not self.waiters[agent_id]:
                del self.waiters[agent_id]

    def notify(self, *agent_ids: str, publish: bool = True) -> None:
        """What these agents should run changed: drop their cached answer and wake them, here
        and in the other server processes."""
        for agent_id in agent_ids:
            self.generation[agent_id] += 1
            self.desired_cache.pop(agent_id, None)
        self.wake(*agent_ids)
        if publish and agent_ids:
            self.publish("notify", agent_ids)

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


def snapshot(d: dict[K, V]) -> dict[K, V]:
    """A copy of a dict the event loop changes, for a worker thread to walk. ``dict.copy`` runs
    no Python code and allocates nothing per item, so no other thread runs while it copies.
    ``list(d.items())`` does not do: each item's tuple may set off a garbage collection, whose
    callbacks and finalizers run Python code, and the event loop may then add an agent
    mid-copy ("dictionary changed size during iteration", seen in the presence flush with
    10,000 agents)."""
    return d.copy()
