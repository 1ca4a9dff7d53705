"""Token buckets, one per caller: the arithmetic of the API's rate limit.

Each caller's bucket holds up to `burst` tokens and refills at `rate` tokens a second;
a request takes one token or is refused with the seconds until one is back. A full
bucket is indistinguishable from no bucket, so buckets idle long enough to have refilled
are forgotten: memory follows the number of callers active in the last few seconds.

Why not the `limits` library: it offers fixed, moving and sliding windows, not a token
bucket, so "20/s with a burst of 40" has no direct expression there; its moving window
keeps one timestamp per request, and its memory storage runs an expiry thread. The
bucket below is a few lines of float arithmetic per request.

The state lives in this process: with N control-plane replicas behind a load balancer
a caller spread evenly over them may reach N times the rate. That is the documented
trade-off for a limiter that costs no database round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: how often (in checks) idle buckets are swept; keeps the sweep's cost per request tiny
SWEEP_EVERY = 4096


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """Per-key token buckets of capacity `burst` refilled at `rate` tokens per second.

    Not thread-safe by design: the ASGI middleware calls it from the event loop only.
    `clock` is seconds on any monotonic scale (tests replace it).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (a disabled limiter is no limiter)")
        self.rate = rate
        # A burst below one token would refuse every request.
        self.burst = float(max(burst, 1))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._checks = 0

    def acquire(self, key: str) -> float:
        """Take a token for `key`: 0.0 when granted, else the seconds until one is back."""
        now = self.clock()
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self._forget_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = _Bucket(self.burst - 1.0, now)
            return 0.0
        tokens = min(self.burst, bucket.tokens + (now - bucket.updated_at) * self.rate)
        bucket.updated_at = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self.rate

    def tracked(self) -> int:
        """How many callers currently have a bucket (for tests and diagnostics)."""
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        refill_s = self.burst / self.rate
        idle = [k for k, b in self._buckets.items() if now - b.updated_at >= refill_s]
        for key in idle:
            del self._buckets[key]
