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
    "PRODUCTIVE",
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
#: Recent attempt success share above which retries are not rationed.
PRODUCTIVE = 0.2
#: The longest reset a rate-limit header may set (providers' windows are a minute).
MAX_RESET = 60.0


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
        A reset beyond a minute is read as a minute.
        """
        self.refill(now)
        self.capacity = max(limits.limit, 1.0)
        missing = limits.limit - limits.remaining
        # Limits are windows of a minute: a longer reset (an absurd header, a daily quota
        # the provider will answer with 429s anyway) must not stall a target for hours.
        reset = min(limits.reset, MAX_RESET)
        if reset > 0 and missing >= max(2.0, 0.5 * limits.limit):
            self.rate = max(missing / reset, floor, MIN_RATE)
        self.level = min(limits.remaining, self.capacity)


@dataclass(slots=True)
class Cubic:
    """CUBIC send-rate control after 429s (botocore adaptive retry mode), recovering with time:
    ``rate = C·(t − K)³ + W_max`` with no cap from the measured rate, forgotten at 2·W_max."""

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
        """The allowed send rate, growing with time since the last throttle; ``None`` when
        no throttle is remembered.

        Unlike botocore, the rate is not capped by twice the measured send rate: the pacer
        itself holds the measured rate down, so such a cap could never be climbed.
        """
        if self.last_throttle is None:
            return None
        t = now - self.last_throttle
        return max(self.C * (t - self.k) ** 3 + self.w_max, MIN_RATE)

    def expired(self, now: float) -> bool:
        """The throttle is forgotten once the rate has grown to twice where it was cut."""
        if self.last_throttle is None:
            return True
        t = now - self.last_throttle
        if t >= self.k and self.C * (t - self.k) ** 3 >= self.w_max:
            self.last_throttle = None
            return True
        return False


@dataclass(slots=True)
class ConcurrencyLimit:
    """AIMD on drops, slow start per success, Gradient2 on latency once per window."""

    limit: float = 20.0
    minimum: float = 1.0
    maximum: float = 1024.0
    window: float = 1.0
    min_samples: int = 10
    #: Seconds without drops (and with steady latency) after which slow start resumes.
    calm: float = 5.0
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
        """A successful attempt's latency: slow start per success, Gradient2 per window.

        In slow start (before the first drop, or after ``calm`` seconds without one and with
        latency holding) each success while at least half the slots are used adds a slot, as
        TCP's window grows per ACK: the limit doubles per round trip, so it never holds calls
        in the client for long while the provider shows no pressure. After it, a success adds
        ``1/limit`` (one slot per round trip, congestion avoidance).
        """
        if self._window_start is None:
            self._window_start = now
        if may_grow and inflight * 2 >= self.limit:
            # Slow start: a slot per success; after it, one per round trip (TCP's window).
            step = 1.0 if not self._dropped else 1.0 / self.limit
            self.limit = min(self.maximum, self.limit + step)
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
            self._cut_since = now
        elif self._cut_since is None or now - self._cut_since >= self.calm:
            self._dropped = False  # no drop and steady latency for a while: probe again
        if saturated and not self._dropped:
            return  # slow start grows per success (above)
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

    #: Share of recent attempts that succeeded (EMA over about 20 attempts; 0 until seen).
    success_rate: float = 0.0

    def on_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)
        self.success_rate += 0.05 * (1.0 - self.success_rate)

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)
        self.success_rate -= 0.05 * self.success_rate

    def can_retry(self) -> bool:
        """Above half the tokens; or while retries are productive (≥ 20 % of recent attempts
        succeed), since admission already bounds the load they add: refusing them then makes
        a partial failure worse for the caller than the official SDK's two retries."""
        return self.tokens > self.max_tokens / 2 or self.success_rate >= PRODUCTIVE
