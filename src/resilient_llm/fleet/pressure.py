"""A target whose pacer and breaker are shared by the fleet through Redis.

:func:`fleet_pressure` builds a :class:`FleetPressure` per target when
``RESILIENT_LLM_REDIS_URL`` is set: admissions come from leases of the fleet's GCRA
(``lease.py``, ``lua/acquire.lua``), throttles cut the fleet's rate once, and while Redis is
unreachable the target paces locally at ``1/N`` of the provider's limits. Concurrency limits
and retry budgets stay local (they are about this process's sockets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .._policy import Priority
from ..engine.controllers import MIN_RATE
from ..engine.pressure import RateLimits, TargetKey, TargetPressure
from .breaker import FleetBreaker
from .lease import Dimension, Lease, lease_size
from .link import Link, call_budget, link_for
from .scripts import ACQUIRE, THROTTLE, Grant, fleet_keys
from .stats import COUNTERS, FleetStats, fleet_stats
from .tuning import IDLE_TTL, TAU_UNKNOWN, THROTTLE_COOLDOWN

__all__ = ["FleetPressure", "FleetSnapshot", "fleet_pressure"]


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """A target's fleet view, attached to its ``PressureSnapshot`` as ``fleet``."""

    mode: str  # "fleet" (coordinated through Redis) or "local" (Redis unreachable)
    rate: float | None  # the fleet's paced request rate, calls/s (None: not learned yet)
    tau: float
    active_workers: int
    leased: int
    stats: FleetStats


class _Pool:
    """One priority's lease and what sizes the next one (admissions since the last refill)."""

    __slots__ = ("enqueued", "hint_until", "last_refill", "lease", "rate")

    def __init__(self) -> None:
        self.lease = Lease()
        self.hint_until = -math.inf
        self.enqueued = 0
        self.last_refill: float | None = None
        self.rate = 0.0


class FleetPressure(TargetPressure):
    """A target whose pacer and breaker are shared through Redis (see the module docstring).

    Admission: the head waiter, when its lease cannot serve it, refills the lease with one
    Redis round trip made outside the state lock; the permit then comes from the lease.
    Everything local (concurrency limit, retry budget, priority queue) is inherited. While
    Redis is unreachable, pacing is the inherited local pacer over ``1/N`` of the headers.
    """

    def __init__(self, key: TargetKey, now: float, link: Link) -> None:
        super().__init__(key, now)
        self._link = link
        self._keys = fleet_keys(key)
        self.breaker: FleetBreaker = FleetBreaker(link, self._keys[1])
        self._pools: dict[Priority, _Pool] = {"interactive": _Pool(), "batch": _Pool()}
        self._refilling = False
        self._avg_cost = 0.0
        self._req = Dimension()
        self._tok = Dimension()
        self._fleet_rate: float | None = None
        self._tau = TAU_UNKNOWN
        self._active = 1
        self._mode = "fleet"
        self._local_share = 1.0
        self._last_throttle_sent = -math.inf
        self._rng = link.rng

    # admission

    _local_pacer = False  # leases, not the local buckets, pace admissions

    @property
    def paces_tokens(self) -> bool:
        """Always: a lease's size follows the calls' token estimates."""
        return True

    def admit_now(self, priority: Priority, cost: float, now: float) -> float | None:
        self._sync_mode()
        if self._mode == "local" and self._link.usable():
            return None  # time to try Redis again: the queued path refills (and so probes)
        return super().admit_now(priority, cost, now)

    def try_admit(self, waiter: Any, now: float) -> Any:
        self._sync_mode()
        if self._mode == "fleet" or self._link.usable():  # in fleet mode, or time to rejoin
            self._maybe_refill(waiter, now)
            self._sync_mode()
        return super().try_admit(waiter, now)

    def _sync_mode(self) -> None:
        mode = "fleet" if self._link.up else "local"
        if mode == self._mode:
            return
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            if mode == "local":
                for pool in self._pools.values():
                    pool.lease.drop()
                    pool.hint_until = -math.inf
                self._local_share = 1.0 / max(1, self._active)
                self._scale_local(self._local_share)
            else:
                self._scale_local(1.0 / self._local_share)
                self._local_share = 1.0

    def _scale_local(self, factor: float) -> None:
        """Scale the local buckets: to this worker's share when Redis goes, back when it returns.

        Without Redis each worker may use ``1/N`` of the provider's buckets (``N`` the last
        known number of active workers), so the fleet stays within the limit while apart.
        """
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.rate = max(bucket.rate * factor, MIN_RATE)
                bucket.capacity = max(bucket.capacity * factor, 1.0)
                bucket.level = min(max(bucket.level, 0.0), bucket.capacity)

    def _maybe_refill(self, waiter: Any, now: float) -> None:
        priority: Priority = waiter.priority
        with self._lock:
            if self._refilling or not self._waiting or self._waiting[0] is not waiter:
                return
            limit = self.concurrency.limit
            if self.inflight >= max(1.0, limit) or (
                priority == "batch" and self.inflight_batch >= max(1.0, limit * 0.75)
            ):
                return
            pool = self._pools[priority]
            if self._serving_pool(priority, waiter.cost, now) is not None:
                return
            if now < pool.hint_until:
                return
            waiting = sum(1 for w in self._waiting if w.priority == priority)
            if pool.last_refill is not None and now > pool.last_refill:
                current = (pool.enqueued + waiting) / (now - pool.last_refill)
                pool.rate = current if pool.rate == 0 else 0.5 * pool.rate + 0.5 * current
            pool.enqueued = 0
            pool.last_refill = now
            want = lease_size(pool.rate, waiting, self._tau)
            per_call = max(self._avg_cost, waiter.cost)
            if self.tokens is not None and per_call > 0:
                per_call = min(per_call, self.tokens.capacity)
            left = call_budget()
            ahead = 0.0 if priority == "batch" else min(self._tau, left if left is not None
                                                        else self._tau)
            args = self._acquire_args(priority, want, per_call, max(0.0, ahead), now, pool.rate)
            self._refilling = True
        sent = self._link.now()
        result: Grant | None = None
        try:
            result = self._link.call(ACQUIRE, list(self._keys), args)
        finally:
            rtt = self._link.now() - sent
            with self._lock:
                self._refilling = False
                if result is not None:
                    self._install(pool, result, now, rtt, per_call)
                self._wake_head()
        if result is None:
            self._sync_mode()
        else:
            COUNTERS.add("refills")
            self.breaker.adopt(now + rtt, result.open_left, result.failures)

    def _acquire_args(self, priority: Priority, want: int, per_call: float, ahead: float,
                      now: float, demand: float) -> list[Any]:
        req, tok = self._req, self._tok
        observed = max(req.observed_at, tok.observed_at)
        fresh = observed > 0
        args: list[Any] = [
            self._link.worker, want, f"{per_call:.3f}", "1" if priority == "batch" else "0",
            f"{ahead:.4f}",
            _fmt(req.rate), _fmt(req.capacity), _fmt(tok.rate), _fmt(tok.capacity),
            _fmt(req.remaining if fresh else None), _fmt(tok.remaining if fresh else None),
            _fmt(max(0.0, now - observed) if fresh else None),
            self.breaker.take_successes(),
            self.key.endpoint, self.key.model or "-",
            f"{self.breaker.window:g}", int(IDLE_TTL * 1000), f"{demand:.4f}",
        ]
        return args

    def _install(self, pool: _Pool, result: Grant, now: float, rtt: float,
                 per_call: float) -> None:
        granted = result.granted
        self._tau = result.tau
        self.breaker.view_ttl = max(2 * result.tau, 1.0)
        self._fleet_rate = result.rate if result.rate > 0 else None
        self._active = max(1, result.active)
        if granted < 1:
            COUNTERS.add("empty_refills")
            pool.hint_until = now + rtt + result.wait * self._rng.uniform(1.0, 1.1)
            return
        pool.hint_until = -math.inf
        tokens = granted * per_call if result.tokens_paced else math.inf
        pool.lease = Lease(granted=granted, start=now + result.first,
                           void_start=now + result.void_first, spacing=result.spacing,
                           void_spacing=result.void_spacing, tau=result.tau, tokens=tokens,
                           per_call=per_call if math.isfinite(tokens) else 0.0)

    def _serving_pool(self, priority: Priority, cost: float, now: float) -> _Pool | None:
        """The pool whose lease can serve a call of ``priority`` (interactive may use batch's)."""
        order: tuple[Priority, ...] = (
            ("interactive", "batch") if priority == "interactive" else ("batch",)
        )
        for name in order:
            pool = self._pools[name]
            if pool.lease.wait(now, cost) is not None:
                return pool
        return None

    def _admit_wait(self, cost: float, now: float, priority: Priority) -> float | None:
        if self._mode == "local":
            return super()._admit_wait(cost, now, priority)
        pool = self._serving_pool(priority, cost, now)
        if pool is not None:
            return pool.lease.wait(now, cost)
        own = self._pools[priority]
        if now < own.hint_until:
            return own.hint_until - now
        return None  # a refill is due or under way: wait to be woken

    def _take(self, cost: float, now: float, priority: Priority) -> None:
        super()._take(cost, now, priority)  # the local buckets keep learning for a fallback
        self._pools[priority].enqueued += 1  # demand, for the next lease's size
        self._avg_cost = cost if self._avg_cost == 0 else 0.8 * self._avg_cost + 0.2 * cost
        if self._mode == "local":
            COUNTERS.add("local_admissions")
            return
        pool = self._serving_pool(priority, cost, now)
        if pool is not None:
            pool.lease.take(now, cost)
        COUNTERS.add("admissions")

    def _pacer_wait(self, cost: float, now: float) -> float:
        if self._mode == "local":
            return super()._pacer_wait(cost, now)
        wait = self._admit_wait(cost, now, "interactive")
        if wait is not None:
            return wait
        # No permit at hand and no hint yet: a call queued behind others waits for them, at
        # this worker's share of the fleet's rate (what a fallback decision needs to know).
        if self._waiting and self._fleet_rate:
            return len(self._waiting) * self._active / self._fleet_rate
        return 0.0

    # feedback

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None, now: float) -> None:
        changed = False
        with self._lock:
            if requests is not None:
                changed |= self._req.observe(requests, now)
            if tokens is not None:
                changed |= self._tok.observe(tokens, now)
            if changed and self._mode == "fleet":
                for pool in self._pools.values():  # unpaced or stale leases: refill now
                    pool.lease.drop()
                    pool.hint_until = -math.inf
        if self._mode == "local":
            requests = _share_of(requests, self._local_share)
            tokens = _share_of(tokens, self._local_share)
        super().observe(requests, tokens, now)

    def release(
        self,
        now: float,
        *,
        priority: Priority,
        latency: float | None,
        throttled: bool,
        dropped: bool,
        succeeded: bool,
        retry_after: float | None = None,
        patience: float | None = None,
    ) -> None:
        super().release(now, priority=priority, latency=latency, throttled=throttled,
                        dropped=dropped, succeeded=succeeded, retry_after=retry_after,
                        patience=patience)
        if not throttled or self._mode != "fleet" or not self._rate_shaped(retry_after):
            return
        with self._lock:
            for pool in self._pools.values():
                pool.lease.drop()
            if now - self._last_throttle_sent < 0.25:
                return
            self._last_throttle_sent = now
        result = self._link.call(THROTTLE, [self._keys[0]],
                                 [f"{THROTTLE_COOLDOWN:g}", int(IDLE_TTL * 1000)])
        if result is not None and result.cut:
            COUNTERS.add("throttles_shared")
            with self._lock:
                self._fleet_rate = result.rate

    def _rate_shaped(self, retry_after: float | None) -> bool:
        """Does a 429 speak of the send rate (it carried a ``Retry-After``, or the provider
        publishes limits)? A bare 429 from a provider without limits is a concurrency cap:
        the local concurrency limit's business, not the fleet's rate (as in one process)."""
        return retry_after is not None or self._req.capacity is not None \
            or self._tok.capacity is not None

    def snapshot(self, now: float) -> Any:
        base = super().snapshot(now)
        with self._lock:
            leased = sum(pool.lease.left(now) for pool in self._pools.values())
            fleet = FleetSnapshot(mode=self._mode, rate=self._fleet_rate, tau=self._tau,
                                  active_workers=self._active, leased=leased,
                                  stats=fleet_stats())
        from dataclasses import replace

        return replace(base, fleet=fleet)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _share_of(limits: RateLimits | None, share: float) -> RateLimits | None:
    if limits is None:
        return None
    return RateLimits(limits.limit * share, limits.remaining * share, limits.reset)


def fleet_pressure(key: TargetKey, now: float, redis_url: str) -> FleetPressure:
    """The fleet-backed state of ``key`` (what ``PressureRegistry.get(..., redis_url=)`` builds)."""
    return FleetPressure(key, now, link_for(redis_url))

