"""Slowing down guessing: failed attempts per client address, refused with 429 past a budget.

In memory and per process: each process counts on its own, and a restart forgets (an
attacker gets one budget per process, which still turns millions of guesses into dozens).
Only failures count, so staff who type the secret right are never slowed unless their
address failed too often (then even the right secret waits: the check refuses before it
compares, or guessing could go on). Used by the admin API's bearer check and meant for the
admin console's sign-in form, keyed by `address_key`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def address_key(host: str) -> str:
    """The key for a client address: an IPv6 client counts as its /64 network, which one
    subscriber usually holds whole (else each of its addresses would get a budget)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """A token bucket of failures per key: `burst` failures at once, then one per `refill_seconds`.

    `retry_after(key)` says how long a key must wait (0 when it may try); `failed(key)` spends
    one token. At most `max_keys` addresses are remembered, the least recently seen dropped
    first, so a flood of addresses cannot grow memory without bound.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        refill_seconds: float = 6.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.updated) / self.refill_seconds
        )
        bucket.updated = now
        self._buckets.move_to_end(key)
        if bucket.tokens >= self.burst:  # fully refilled: nothing left to remember
            del self._buckets[key]
            return None
        return bucket

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` may try again; 0 if it may try now."""
        bucket = self._bucket(key)
        if bucket is None or bucket.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - bucket.tokens) * self.refill_seconds))

    def failed(self, key: str) -> None:
        bucket = self._bucket(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=self._clock())
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        bucket.tokens = max(0.0, bucket.tokens - 1)
