"""Token buckets: one for the whole server, and one per client address in a bounded table.

Enrollment uses both: failed attempts spend the bucket of the address they came from, so a
flood of wrong keys from one host slows that host only; a valid token used from anywhere else
still enrolls at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def available(self, now: float | None = None) -> bool:
        self._refill(time.monotonic() if now is None else now)
        return self.tokens >= 1

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one."""
        if not self.available(now):
            return False
        self.tokens -= 1
        return True

    def spend(self, now: float | None = None) -> None:
        """Spend one token, going below zero if need be (a penalty that lasts)."""
        self._refill(time.monotonic() if now is None else now)
        self.tokens = max(self.tokens - 1, -self.burst)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class BucketsByAddress:
    """A bucket per client address; at most ``max_addresses`` are remembered.

    Buckets that refilled completely are forgotten (they hold no information); when the table is
    still full, the least recently used address is dropped, so a spray of addresses costs a
    bounded amount of memory.
    """

    def __init__(self, rate: float, burst: float, max_addresses: int = 65536):
        self.rate = rate
        self.burst = burst
        self.max = max_addresses
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allows(self, address: str) -> bool:
        bucket = self.buckets.get(address)
        return bucket is None or bucket.available()

    def spend(self, address: str) -> None:
        bucket = self.buckets.get(address)
        if bucket is None:
            self._make_room()
            bucket = self.buckets[address] = TokenBucket(self.rate, self.burst)
        else:
            self.buckets.move_to_end(address)
        bucket.spend()

    def _make_room(self) -> None:
        if len(self.buckets) < self.max:
            return
        now = time.monotonic()
        for address in [a for a, b in self.buckets.items() if b.full(now)]:
            del self.buckets[address]
        while len(self.buckets) >= self.max:
            self.buckets.popitem(last=False)
