"""The controllers behind a target's pressure state: pure arithmetic on injected time.

* :class:`TokenBucket` — the pacer's buckets, seeded from rate-limit headers.
* :class:`Cubic` — the send rate after 429s (botocore's adaptive mode), recovering with time.
* :class:`ConcurrencyLimit` — AIMD on drops, slow start per success, Gradient2 on latency.
* :class:`RetryBudget` — gRPC retry throttling.

None of them locks, sleeps or reads a clock; ``engine.pressure`` composes them per target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "MIN_RATE",
    "UNPACED",
    "ConcurrencyLimit",
    "Cubic",
    "RateLimits",
    "RetryBudget",
    "TokenBucket",
]

#: The lowest send rate any controller sets (requests per second).
MIN_RATE = 0.5
#: The fill rate of a bucket whose rate is not known yet: it never makes anyone wait.
UNPACED = 1e9


@dataclass(frozen=True, slots=True)
class RateLimits:
    """One dimension of a provider's rate-limit headers (requests or tokens)."""

    limit: float
    remaining: float
    reset: float  # seconds until the bucket is full again


@dataclass(slots=True)
class TokenBucket:
    """A continuous token bucket; ``rate`` tokens per second up to ``capacity``."""

    rate: float
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are available (0 when they are now)."""
        self.refill(now)
        cost = min(cost, self.capacity)
        if self.level >= cost:
            return 0.0
        return (cost - self.level) / max(self.rate, 1e-9)

    def take(self, cost: float, now: float) -> None:
        self.refill(now)
        self.level -= min(cost, self.capacity)

    def observe(self, limits: RateLimits, now: float, *, floor: float = 0.0) -> None:
        """Re-seed from headers: the provider's view of the bucket wins, in both directions.

        The fill rate is learnt once at least half the bucket is in use — before that the
        estimate (L − R)/T rests on a token or two and a limiter that is not a token bucket
        (a concurrency cap) would make it absurdly low — and never below ``floor``, the send
        rate the provider has been accepting. Until a rate is learnt the bucket does not pace.
        """
        self.refill(now)
        self.capacity = max(limits.limit, 1.0)
        missing = limits.limit - limits.remaining
        if limits.reset > 0 and missing >= max(2.0, 0.5 * limits.limit):
            self.rate = max(missing / limits.reset, floor, MIN_RATE)
        self.level = min(limits.remaining, self.capacity)


@dataclass(slots=True)
class Cubic:
    """CUBIC send-rate control after throttles (botocore adaptive retry mode)."""

    C: float = 0.4
    BETA: float = 0.7
    w_max: float = 0.0
    k: float = 0.0
    last_throttle: float | None = None
    measured: float = 0.0
    _bucket: float = 0.0
    _count: int = 0

    def record_send(self, now: float) -> None:
        """Measured send rate: EMA (0.8) of counts per 0.5 s bucket."""
        bucket = math.floor(now * 2) / 2
        if bucket == self._bucket:
            self._count += 1
            return
        if self._bucket:
            current = self._count / max(bucket - self._bucket, 0.5)
            self.measured = 0.8 * current + 0.2 * self.measured
        self._bucket, self._count = bucket, 1

    def on_throttle(self, now: float, current_rate: float | None) -> float:
        base = self.measured if current_rate is None else min(self.measured, current_rate)
        base = max(base, MIN_RATE)
        self.w_max = base
        self.k = ((self.w_max * (1 - self.BETA)) / self.C) ** (1 / 3)
        self.last_throttle = now
        return max(self.BETA * base, MIN_RATE)

    def rate(self, now: float) -> float | None:
        if self.last_throttle is None:
            return None
        t = now - self.last_throttle
        cubic = self.C * (t - self.k) ** 3 + self.w_max
        ceiling = 2 * self.measured if self.measured > 0 else cubic
        return max(min(cubic, ceiling), MIN_RATE)


@dataclass(slots=True)
class ConcurrencyLimit:
    """AIMD on drops plus Gradient2 on latency, evaluated once per window."""

    limit: float = 20.0
    minimum: float = 1.0
    maximum: float = 200.0
    window: float = 1.0
    min_samples: int = 10
    long_rtt: float | None = None
    _samples: list[float] = field(default_factory=list)
    _window_start: float | None = None
    _dropped: bool = False
    _cut_since: float | None = None
    _cut_floor: float = 0.0

    def on_drop(self, now: float = 0.0) -> None:
        """Multiplicative decrease (× 0.9 per drop), but at most halving within one window.

        A burst of throttles answering one overshoot is one signal: without the floor, the 20
        rejections of a first wave would cut the limit to an eighth of what the provider holds.
        """
        self._dropped = True
        if self._cut_since is None or now - self._cut_since >= self.window:
            self._cut_since = now
            self._cut_floor = self.limit * 0.5
        self.limit = max(self.minimum, self._cut_floor, self.limit * 0.9)

    def on_sample(self, rtt: float, now: float, inflight: int, may_grow: bool) -> None:
        if self._window_start is None:
            self._window_start = now
        self._samples.append(rtt)
        if now - self._window_start < self.window or len(self._samples) < self.min_samples:
            return
        short = max(sum(self._samples) / len(self._samples), 1e-6)  # a zero RTT is a clock artefact
        self._samples.clear()
        self._window_start = now
        if self.long_rtt is None:
            self.long_rtt = short
        else:  # a slow EMA of the window averages: Gradient2's "long" RTT
            self.long_rtt = 0.9 * self.long_rtt + 0.1 * short
            if self.long_rtt / short > 2:
                self.long_rtt *= 0.95
        gradient = max(0.5, min(1.0, 1.5 * self.long_rtt / short))
        saturated = may_grow and inflight * 2 >= self.limit
        if gradient < 1.0:
            self._dropped = True  # latency is rising: slow start is over
        if saturated and not self._dropped:
            # Slow start: until the first drop, double per window while the slots are used
            # and latency holds, so a large quota is reached in seconds, not minutes.
            self.limit = min(self.maximum, self.limit * 2)
            return
        grown = self.limit * gradient + (4 if saturated else 0)
        self.limit = max(self.minimum, min(self.maximum, 0.8 * self.limit + 0.2 * grown))


@dataclass(slots=True)
class RetryBudget:
    """gRPC-style retry throttling: retries only while more than half the tokens remain."""

    max_tokens: float = 10.0
    ratio: float = 0.1
    tokens: float = 10.0
    requests: int = 0
    retries: int = 0

    def on_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def can_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2
