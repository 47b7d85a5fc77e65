"""Client-side estimate of provider pressure, per target, and the controls it drives.

State is keyed by target: (endpoint, credential hash, model), the scope a provider throttles
on. For each target:

* **Pacer** — token buckets for requests and tokens. Seeded from rate-limit headers: with
  ``limit`` L, ``remaining`` R and ``reset`` T (time until the bucket is full again) the fill
  rate is ``(L − R) / T`` and the level is ``R``. After a throttle the fill rate follows CUBIC
  (botocore's adaptive mode: C = 0.4, β = 0.7, measured send rate as an EMA over 0.5 s
  buckets, fill ≤ 2 × measured, floor 0.5/s): ``rate = C·(t − t_throttle − K)³ + W_max``,
  ``K = ∛(W_max·(1 − β)/C)``.
* **Concurrency limit** — AIMD on drops (429/529/503/timeouts: ``L ← 0.9·L``) plus Netflix
  Gradient2 on latency per 1 s window (``g = clamp(1.5·long/short, 0.5, 1)``,
  ``L ← 0.8·L + 0.2·(L·g + 4)``); growth stops while the provider reports less than 10 % of
  its request limit remaining, and while fewer than half the slots are in use.
* **Retry budget** — gRPC retry throttling: 10 tokens, −1 per failed attempt, +0.1 per
  success; a retry is allowed only above 5 tokens (≈ retries ≤ 10 % of requests under
  sustained failure, the SRE book's bound).
* **Priority** — waiting calls are admitted ``interactive`` first; ``batch`` calls may use at
  most 75 % of the concurrency limit, so interactive work always has headroom.
* **Pressure** — one number in [0, 1]: the largest of slot utilisation beyond half, recent
  throttles (decaying over 10 s), latency inflation over the no-load baseline, and the
  pacer's wait (1 s = 1). It widens backoff windows and is reported in ``outcome()``.

Every method takes ``now`` (an injected monotonic time) and does no I/O; a per-target lock
makes it safe for threads and tasks alike (no lock is held across a wait).

With ``RESILIENT_LLM_REDIS_URL`` set, :meth:`PressureRegistry.get` returns
``_fleet.FleetPressure`` instead: the same interface, whose pacer (``_admit_wait``/``_take``)
and breaker consult state shared by the fleet through Redis (docs/fleet.md).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from .._fastinit import fast_frozen_init
from .._policy import Priority
from .breaker import Breaker

if TYPE_CHECKING:
    from ..fleet.core import FleetSnapshot

__all__ = [
    "BATCH_SHARE",
    "Admission",
    "ConcurrencyLimit",
    "Cubic",
    "PressureRegistry",
    "PressureSnapshot",
    "RateLimits",
    "RetryBudget",
    "TargetKey",
    "TargetPressure",
    "TokenBucket",
    "pressure_snapshot",
    "registry",
]

#: Share of the concurrency limit ``batch`` calls may hold.
BATCH_SHARE = 0.75
_MIN_RATE = 0.5
#: The fill rate of a bucket whose rate is not known yet: it never makes anyone wait.
UNPACED = 1e9


@dataclass(frozen=True, slots=True)
class TargetKey:
    """What a provider throttles on: the endpoint, the credential (hashed), the model."""

    endpoint: str
    credential: str
    model: str | None

    @classmethod
    def of(cls, endpoint: str, credential: str | None, model: str | None) -> TargetKey:
        digest = hashlib.sha256((credential or "").encode()).hexdigest()[:12]
        return cls(endpoint, digest, model)

    def __str__(self) -> str:
        return f"{self.endpoint}|{self.credential}|{self.model or '-'}"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """One dimension of a provider's rate-limit headers (requests or tokens)."""

    limit: float
    remaining: float
    reset: float  # seconds until the bucket is full again


# --- controllers (pure, injected time) ----------------------------------------------------------


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
            self.rate = max(missing / limits.reset, floor, _MIN_RATE)
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
        base = max(base, _MIN_RATE)
        self.w_max = base
        self.k = ((self.w_max * (1 - self.BETA)) / self.C) ** (1 / 3)
        self.last_throttle = now
        return max(self.BETA * base, _MIN_RATE)

    def rate(self, now: float) -> float | None:
        if self.last_throttle is None:
            return None
        t = now - self.last_throttle
        cubic = self.C * (t - self.k) ** 3 + self.w_max
        ceiling = 2 * self.measured if self.measured > 0 else cubic
        return max(min(cubic, ceiling), _MIN_RATE)


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


# --- per-target state -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this attempt start now?"; ``wait`` is ``None`` when unknown."""

    granted: bool
    wait: float | None = None
    pressure: float = 0.0


fast_frozen_init(Admission)


@dataclass(frozen=True, slots=True)
class PressureSnapshot:
    """A read-only view of one target's state, for dashboards and ``pressure_snapshot()``."""

    target: str
    pressure: float
    concurrency_limit: float
    inflight: int
    waiting: int
    request_rate: float | None
    token_rate: float | None
    retry_tokens: float
    throttles: int
    latency_baseline: float | None
    #: The fleet view (mode, shared rate, lease, counters) when ``RESILIENT_LLM_REDIS_URL`` is set.
    fleet: FleetSnapshot | None = None


class _Waiter:
    """One call waiting for admission; woken when a slot frees (thread- and task-safe)."""

    __slots__ = ("async_event", "cost", "event", "loop_thread", "priority", "seq")

    def __init__(self, priority: Priority, seq: int, cost: float) -> None:
        self.priority = priority
        self.seq = seq
        self.cost = cost
        self.event = threading.Event()
        self.async_event: Any = None
        self.loop_thread: int | None = None

    def wake(self) -> None:
        self.event.set()
        if self.async_event is not None and threading.get_ident() == self.loop_thread:
            self.async_event.set()  # same event loop: wake the task at once

    @property
    def rank(self) -> tuple[int, int]:
        return (0 if self.priority == "interactive" else 1, self.seq)


_seq = itertools.count()


class TargetPressure:
    """Everything resilient-llm estimates about one target; see the module docstring."""

    def __init__(self, key: TargetKey, now: float) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self.cubic = Cubic()
        self.cubic_rate: float | None = None
        self.concurrency = ConcurrencyLimit()
        self.budget = RetryBudget()
        self.inflight = 0
        self.inflight_batch = 0
        self._waiting: list[_Waiter] = []
        self._last_throttle: float | None = None
        self.throttles = 0
        self._remaining_fraction: float | None = None
        self._baseline: float | None = None
        self._recent: float | None = None
        self._last_reserve_retry = -math.inf
        self.breaker = Breaker()
        #: Successes whose rate-limit headers may be skipped (plenty of headroom last time).
        self.headroom_skips = 0
        self.touched = now

    # admission

    def enqueue(self, priority: Priority, cost: float) -> _Waiter:
        waiter = _Waiter(priority, next(_seq), cost)
        with self._lock:
            self._waiting.append(waiter)
            self._waiting.sort(key=lambda w: w.rank)
        return waiter

    def cancel(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            self._wake_head()

    def admit_now(self, priority: Priority, cost: float, now: float) -> float | None:
        """Admit at once when nobody waits, a slot is free and the pacer allows: the pressure
        at admission, else ``None``.

        The common, uncontended case: no waiter object, no queue, one short critical section.
        """
        with self._lock:
            if self._waiting:
                return None
            limit = self.concurrency.limit
            if priority == "interactive":
                if self.inflight >= max(1.0, limit):
                    return None
            elif self.inflight >= limit or self.inflight_batch >= max(1.0, limit * BATCH_SHARE):
                return None
            pacing: float | None = None
            if self._local_pacer and self.cubic_rate is None:
                pacing = self._admit_local(cost, now)
                if pacing is None:
                    return None
            else:
                wait = self._admit_wait(cost, now, priority)
                if wait is None or wait > 0:
                    return None
                self._take(cost, now, priority)
            self.touched = now
            self.inflight += 1
            if priority == "batch":
                self.inflight_batch += 1
            self.cubic.record_send(now)
            self.budget.requests += 1
            return self._pressure(now, pacing)

    def _admit_local(self, cost: float, now: float) -> float | None:
        """``_admit_wait``, ``_take`` and the pacing term of ``_pressure`` in one pass, for the
        local buckets without a CUBIC cap: ``None`` when a bucket is short, else (after the
        debit) the requests bucket's wait for the next call."""
        requests, tokens = self.requests, self.tokens
        need = 1.0
        if requests is not None:
            requests.refill(now)
            if requests.capacity < need:
                need = requests.capacity
            if requests.level < need:
                return None
        if tokens is not None:
            tokens.refill(now)
            debit = cost if cost < tokens.capacity else tokens.capacity
            if debit > 0 and tokens.level < debit:
                return None
            tokens.level -= debit
        if requests is None:
            return 0.0
        requests.level -= need
        return 0.0 if requests.level >= need else (need - requests.level) / max(requests.rate, 1e-9)

    def try_admit(self, waiter: _Waiter, now: float) -> Admission:
        """Admit ``waiter`` if it is first in line and capacity allows; else say how long."""
        with self._lock:
            self.touched = now
            pressure = self._pressure(now)
            if not self._waiting or self._waiting[0] is not waiter:
                return Admission(False, None, pressure)
            limit = self.concurrency.limit
            cap = limit if waiter.priority == "interactive" else max(1.0, limit * BATCH_SHARE)
            in_use = self.inflight if waiter.priority == "interactive" else self.inflight_batch
            if self.inflight >= max(1.0, limit) or in_use >= cap:
                if waiter.priority == "batch" and self.inflight < limit:
                    # Let the next interactive waiter, if any, use the free slot.
                    self._wake_next_interactive()
                return Admission(False, None, pressure)
            wait = self._admit_wait(waiter.cost, now, waiter.priority)
            if wait is None or wait > 0:
                return Admission(False, wait, pressure)
            self._waiting.pop(0)
            self.inflight += 1
            if waiter.priority == "batch":
                self.inflight_batch += 1
            self._take(waiter.cost, now, waiter.priority)
            self.cubic.record_send(now)
            self.budget.requests += 1
            self._wake_head()
            return Admission(True, 0.0, pressure)

    # pacer hooks (lock held): the fleet-backed subclass in ``_fleet`` replaces these

    #: Admission may use the fused local-bucket pass (``_admit_local``) for these hooks.
    _local_pacer = True

    @property
    def paces_tokens(self) -> bool:
        """Does admission read the request's token estimate (a token bucket exists)?"""
        return self.tokens is not None

    def _admit_wait(self, cost: float, now: float, priority: Priority) -> float | None:
        """Seconds until the pacer admits this call; ``None`` = unknown (wait to be woken)."""
        return self._pacer_wait(cost, now)

    def _take(self, cost: float, now: float, priority: Priority) -> None:
        """Debit an admitted call from the pacer."""
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(cost, now)

    def _pacer_wait(self, cost: float, now: float) -> float:
        wait = 0.0
        if self.requests is not None:
            rate = self.requests.rate
            if self.cubic_rate is not None:
                self.requests.rate = min(rate, self.cubic.rate(now) or rate)
            wait = self.requests.wait_for(1, now)
            self.requests.rate = rate
        elif self.cubic_rate is not None:
            rate = self.cubic.rate(now) or self.cubic_rate
            self.requests = TokenBucket(rate, max(rate, 1.0), 0.0, now)
            wait = self.requests.wait_for(1, now)
        if self.tokens is not None and cost > 0:
            wait = max(wait, self.tokens.wait_for(cost, now))
        return wait

    def _wake_head(self) -> None:
        if self._waiting:
            self._waiting[0].wake()

    def _wake_next_interactive(self) -> None:
        for waiter in self._waiting:
            if waiter.priority == "interactive":
                waiter.wake()
                return

    # feedback

    def release(
        self,
        now: float,
        *,
        priority: Priority,
        latency: float | None,
        throttled: bool,
        dropped: bool,
        succeeded: bool,
    ) -> None:
        """An admitted attempt ended: free its slot and learn from how it went."""
        with self._lock:
            self.inflight = max(0, self.inflight - 1)
            if priority == "batch":
                self.inflight_batch = max(0, self.inflight_batch - 1)
            if succeeded:
                self.budget.on_success()
            else:
                self.budget.on_failure()
            if throttled:
                self.throttles += 1
                self._last_throttle = now
                current = self.requests.rate if self.requests is not None else None
                self.cubic_rate = self.cubic.on_throttle(now, current)
            if dropped or throttled:
                self.concurrency.on_drop(now)
            elif latency is not None:
                may_grow = self._remaining_fraction is None or self._remaining_fraction >= 0.1
                self.concurrency.on_sample(latency, now, self.inflight + 1, may_grow)
                self._learn_latency(latency)
            self._wake_head()

    def _learn_latency(self, latency: float) -> None:
        self._recent = latency if self._recent is None else 0.8 * self._recent + 0.2 * latency
        if self._baseline is None or latency < self._baseline:
            self._baseline = latency
        else:  # drift up slowly so the no-load baseline follows real changes
            self._baseline += 0.01 * (latency - self._baseline)

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None, now: float) -> None:
        """Rate-limit headers from any response of this target."""
        with self._lock:
            if requests is not None:
                if self.requests is None:
                    self.requests = TokenBucket(UNPACED, max(requests.limit, 1.0),
                                                requests.remaining, now)
                self.requests.observe(requests, now, floor=self.cubic.measured)
                if requests.limit > 0:
                    self._remaining_fraction = requests.remaining / requests.limit
            if tokens is not None:
                if self.tokens is None:
                    self.tokens = TokenBucket(UNPACED, max(tokens.limit, 1.0),
                                              tokens.remaining, now)
                self.tokens.observe(tokens, now)

    def expected_latency(self) -> float | None:
        """Recent latency of successful attempts (time to first output for streams)."""
        return self._recent

    def record_retry(self, now: float) -> bool:
        """Count one retry if the budget allows it; ``False`` when it does not.

        Beyond the token rule, one retry per second is always allowed (Finagle's reserve), so
        a quiet client that hit a short blip is not left without retries for minutes.
        """
        with self._lock:
            if not self.budget.can_retry():
                if now - self._last_reserve_retry < 1.0:
                    return False
                self._last_reserve_retry = now
            self.budget.retries += 1
            return True

    def time_until_available(self, now: float, cost: float = 0.0) -> float:
        with self._lock:
            return self._pacer_wait(cost, now)

    # reading

    def _pressure(self, now: float, pacing: float | None = None) -> float:
        limit = max(self.concurrency.limit, 1.0)
        utilisation = max(0.0, (self.inflight + len(self._waiting)) / limit - 0.5) * 2
        throttle = 0.0
        if self._last_throttle is not None:
            throttle = max(0.0, 1.0 - (now - self._last_throttle) / 10.0)
        inflation = 0.0
        if self._baseline and self._recent:
            inflation = max(0.0, self._recent / self._baseline - 1.0) / 2
        if pacing is None:
            pacing = self._pacer_wait(0.0, now) if self.requests is not None else 0.0
        return min(1.0, max(utilisation, throttle, inflation, pacing))

    def pressure(self, now: float) -> float:
        with self._lock:
            return self._pressure(now)

    def snapshot(self, now: float) -> PressureSnapshot:
        with self._lock:
            return PressureSnapshot(
                target=str(self.key),
                pressure=round(self._pressure(now), 4),
                concurrency_limit=round(self.concurrency.limit, 2),
                inflight=self.inflight,
                waiting=len(self._waiting),
                request_rate=None if self.requests is None else round(self.requests.rate, 3),
                token_rate=None if self.tokens is None else round(self.tokens.rate, 3),
                retry_tokens=round(self.budget.tokens, 2),
                throttles=self.throttles,
                latency_baseline=self._baseline,
            )


class PressureRegistry:
    """All targets' state in one process: bounded (least recently used targets are dropped)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._targets: LRUCache[TargetKey | tuple[TargetKey, str], TargetPressure] = LRUCache(
            maxsize=maxsize)
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: TargetKey, now: float, *, redis_url: str | None = None) -> TargetPressure:
        """The state of ``key``; with ``redis_url`` (the fleet setting) it is fleet-backed.

        Fleet-backed state (``_fleet.FleetPressure``) has the same interface; ``redis`` is
        imported only when the first one is built.
        """
        slot: TargetKey | tuple[TargetKey, str] = key if redis_url is None else (key, redis_url)
        with self._lock:
            state = self._targets.get(slot)
            if state is None:
                if redis_url is None:
                    state = TargetPressure(key, now)
                else:
                    from ..fleet.core import fleet_pressure

                    state = fleet_pressure(key, now, redis_url)
                self._targets[slot] = state
            return state

    def __len__(self) -> int:
        with self._lock:
            return len(self._targets)

    def snapshots(self, now: float) -> list[PressureSnapshot]:
        with self._lock:
            states = list(self._targets.values())
        return [state.snapshot(now) for state in states]

    def clear(self) -> None:
        """Forget every target (tests, reconfiguration); cached lookups notice by generation."""
        with self._lock:
            self._targets.clear()
            self.generation += 1


registry = PressureRegistry()


def pressure_snapshot() -> list[PressureSnapshot]:
    """A read-only snapshot of every target's pressure state in this process (for dashboards)."""
    import time

    return registry.snapshots(time.monotonic())


def estimate_tokens(body: bytes) -> float:
    """Tokens a request will count against a token limit: prompt size plus ``max_tokens``.

    Four bytes of JSON per token is the providers' own rule of thumb for English; the output
    allowance is counted up front, as OpenAI's limiter does.
    """
    prompt = len(body) / 4.0
    allowance = 0
    if b"max_" in body:
        for match in _ALLOWANCE.finditer(body):
            allowance = max(allowance, int(match.group(1)))
    return prompt + allowance


_ALLOWANCE = re.compile(rb'"max_(?:completion_|output_)?tokens"\s*:\s*(\d{1,9})')


__all__ += ["estimate_tokens"]
