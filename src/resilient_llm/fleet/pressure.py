"""A target whose pacer and breaker are shared by the fleet through Redis.

:func:`fleet_pressure` builds a :class:`FleetPressure` per target when
``RESILIENT_LLM_REDIS_URL`` is set: admissions come from leases of the fleet's GCRA
(``lease.py``, ``lua/acquire.lua``), throttles cut the fleet's rate once, and while Redis is
unreachable the target paces locally at ``1/N`` of the provider's limits. Concurrency limits
and retry budgets stay local (they are about this process's sockets).

A :class:`FleetPressure` is an ``engine.pressure.TargetPressure`` composed with two parts
of this package: a :class:`LeasePacer` (the ``engine.parts.Pacer`` the leases implement) and
a ``FleetBreaker`` (an ``engine.parts.CircuitBreaker``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from .._policy import Priority
from ..engine.parts import Demand
from ..engine.pressure import RateLimits, TargetKey, TargetPressure
from .breaker import FleetBreaker
from .lease import Dimension, Lease, lease_size
from .link import Link, call_budget, link_for
from .scripts import ACQUIRE, THROTTLE, Grant, fleet_keys
from .stats import COUNTERS, FleetStats, fleet_stats
from .tuning import IDLE_TTL, REFUSAL_MEMORY, TAU_UNKNOWN, THROTTLE_COOLDOWN

__all__ = ["FleetPressure", "FleetSnapshot", "LeasePacer", "fleet_pressure"]

#: The longest wait one empty refill makes the pool hold before asking the fleet again.
_MOST_HINT = 5.0


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


class LeasePacer:
    """Permits from leases of the fleet's rate: the ``engine.parts.Pacer`` of a fleet-backed
    target (see the module docstring).

    The head waiter, when no lease can serve it, refills its priority's lease with one Redis
    round trip (made outside every lock); the permit then comes from the lease. While Redis
    is unreachable the pacer disengages and the target's own buckets pace, at ``1/N`` of the
    provider's limits (``sync`` returns that share).
    """

    def __init__(self, key: TargetKey, link: Link, keys: tuple[str, str, str],
                 breaker: FleetBreaker) -> None:
        self._target = key
        self._link = link
        self._keys = keys
        self._breaker = breaker
        self._lock = threading.Lock()
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
        # 429s this worker got since its last report (the fleet counts attempts as the permits
        # it grants: counted by answers, whose 429s come and are reported sooner than their
        # successes, a large fleet read its early share of 429s as twice the true one), and
        # what the fleet's say
        self._refused = 0
        self._over_share = False
        self._cut_at = -math.inf
        self._acquitted_at = -math.inf
        self._rng = link.rng

    @property
    def paces_tokens(self) -> bool:
        """Always: a lease's size follows the calls' token estimates."""
        return True

    def sync(self) -> float:
        mode = "fleet" if self._link.serving else "local"
        if mode == self._mode:
            return self._local_share
        with self._lock:
            if mode != self._mode:
                self._mode = mode
                if mode == "local":
                    self._drop_leases(hints=True)
                    self._local_share = 1.0 / max(1, self._active)
                else:
                    self._local_share = 1.0
            return self._local_share

    def engaged(self) -> bool:
        return self._mode == "fleet"

    def admits_at_once(self) -> bool:
        # Away from Redis, once it may be tried again the queued path refills (and so probes).
        return not (self._mode == "local" and self._link.usable())

    def drop_leases(self) -> None:
        """Give up the permits held: the next admission refills from the fleet."""
        with self._lock:
            self._drop_leases(hints=False)

    def _drop_leases(self, *, hints: bool) -> None:
        for pool in self._pools.values():
            pool.lease.drop()
            if hints:
                pool.hint_until = -math.inf

    def refill(self, demand: Demand, now: float) -> bool:
        if not (self._mode == "fleet" or self._link.usable()):  # away, and not time to rejoin
            return False
        priority = demand.priority
        with self._lock:
            if self._refilling:
                return False
            pool = self._pools[priority]
            if self._serving_pool(priority, demand.cost, now) is not None:
                return False
            if now < pool.hint_until:
                return False
            if pool.last_refill is not None and now > pool.last_refill:
                current = (pool.enqueued + demand.waiting) / (now - pool.last_refill)
                pool.rate = current if pool.rate == 0 else 0.5 * pool.rate + 0.5 * current
            pool.enqueued = 0
            pool.last_refill = now
            want = lease_size(pool.rate, demand.waiting, self._tau)
            per_call = max(self._avg_cost, demand.cost)
            if demand.token_capacity is not None and per_call > 0:
                per_call = min(per_call, demand.token_capacity)
            left = call_budget()
            ahead = 0.0 if priority == "batch" else min(self._tau, left if left is not None
                                                        else self._tau)
            refused, self._refused = self._refused, 0
            args = self._acquire_args(priority, want, per_call, max(0.0, ahead), now, pool.rate,
                                      refused)
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
                else:  # reported with the next refill
                    self._refused += refused
        if result is not None:
            COUNTERS.add("refills")
            self._breaker.adopt(now + rtt, result.open_left, result.failures)
        return True

    def _acquire_args(self, priority: Priority, want: int, per_call: float, ahead: float,
                      now: float, demand: float, refused: int) -> list[Any]:
        req, tok = self._req, self._tok
        observed = max(req.observed_at, tok.observed_at)
        fresh = observed > 0
        args: list[Any] = [
            self._link.worker, want, f"{per_call:.3f}", "1" if priority == "batch" else "0",
            f"{ahead:.4f}",
            _fmt(req.rate), _fmt(req.capacity), _fmt(tok.rate), _fmt(tok.capacity),
            _fmt(req.remaining if fresh else None), _fmt(tok.remaining if fresh else None),
            _fmt(max(0.0, now - observed) if fresh else None),
            self._breaker.take_successes(),
            self._target.endpoint, self._target.model or "-",
            f"{self._breaker.thresholds.window:g}", int(IDLE_TTL * 1000), f"{demand:.4f}",
            refused,
        ]
        return args

    def _install(self, pool: _Pool, result: Grant, now: float, rtt: float,
                 per_call: float) -> None:
        granted = result.granted
        self._tau = result.tau
        self._breaker.view_ttl = max(2 * result.tau, 1.0)
        self._fleet_rate = result.rate if result.rate > 0 else None
        self._active = max(1, result.active)
        self._learn_refusals(result.refusing, result.since_cut, result.acquitted, now)
        if granted < 1:
            COUNTERS.add("empty_refills")
            # (asked again within a few seconds at most: no single answer keeps the target
            # unadmitted for long, whatever the fleet's state says)
            wait = min(result.wait, _MOST_HINT)
            pool.hint_until = now + rtt + wait * self._rng.uniform(1.0, 1.1)
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

    def wait(self, cost: float, now: float, priority: Priority) -> float | None:
        with self._lock:
            pool = self._serving_pool(priority, cost, now)
            if pool is not None:
                return pool.lease.wait(now, cost)
            own = self._pools[priority]
            if now < own.hint_until:
                return own.hint_until - now
            return None  # a refill is due or under way: wait to be woken

    def backlog(self, queued: int) -> float:
        # Their turn at this worker's share of the fleet's rate.
        with self._lock:
            rate, active = self._fleet_rate, self._active
        return queued * active / rate if rate else 0.0

    def take(self, cost: float, now: float, priority: Priority) -> None:
        with self._lock:
            self._pools[priority].enqueued += 1  # demand, for the next lease's size
            self._avg_cost = cost if self._avg_cost == 0 else 0.8 * self._avg_cost + 0.2 * cost
            if self._mode == "local":
                COUNTERS.add("local_admissions")
                return
            pool = self._serving_pool(priority, cost, now)
            if pool is not None:
                pool.lease.take(now, cost)
        COUNTERS.add("admissions")

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None,
                now: float) -> None:
        changed = False
        with self._lock:
            if requests is not None:
                changed |= self._req.observe(requests, now)
            if tokens is not None:
                changed |= self._tok.observe(tokens, now)
            if changed and self._mode == "fleet":  # unpaced or stale leases: refill now
                self._drop_leases(hints=True)

    def refusing(self, now: float) -> bool:
        # The fleet's share of 429s says what each worker's own few answers cannot.
        return self._mode == "fleet" and (self._over_share
                                          or now < self._cut_at + REFUSAL_MEMORY)

    def acquitted(self, since: float) -> bool:
        # The fleet's trial of its cut found its 429s refused at any rate: a cut made since
        # on the fleet's word stands on nothing.
        with self._lock:
            return self._acquitted_at > since

    def throttled(self, now: float, *, limited: bool, spent: bool = False) -> None:
        # Every 429 reports this worker's 429s (at most one round trip per 0.25 s): the fleet's
        # share of them, not this worker's few answers, says whether they are a limit's.
        if self._mode != "fleet":
            return
        with self._lock:
            self._refused += 1  # reported now or with the next refill
            if not self._rate_shaped():
                return
            if limited:
                self._drop_leases(hints=False)
            if now - self._last_throttle_sent < 0.25:
                return
            self._last_throttle_sent = now
            refused, self._refused = self._refused, 0
        result = self._link.call(THROTTLE, [self._keys[0]],
                                 [f"{THROTTLE_COOLDOWN:g}", int(IDLE_TTL * 1000), refused,
                                  "2" if spent else "1" if limited else "0"])
        with self._lock:
            if result is None:  # reported with the next refill
                self._refused += refused
                return
            self._learn_refusals(result.refusing, result.since_cut, result.acquitted, now)
            if result.cut:
                self._fleet_rate = result.rate
                self._drop_leases(hints=False)
        if result.cut:
            COUNTERS.add("throttles_shared")

    def _learn_refusals(self, over_share: bool, since_cut: float, acquitted: float,
                        now: float) -> None:
        self._over_share = over_share
        if since_cut >= 0:
            self._cut_at = max(self._cut_at, now - since_cut)
        if acquitted >= 0:
            self._acquitted_at = max(self._acquitted_at, now - acquitted)
            if self._acquitted_at >= self._cut_at:  # the cut it remembered was undone
                self._cut_at = -math.inf

    def _rate_shaped(self) -> bool:
        """Does a 429 speak of the send rate (the provider publishes limits)? A bare 429 from
        a provider without limits is a concurrency cap: the local concurrency limit's
        business, not the fleet's rate (as in one process)."""
        return self._req.capacity is not None or self._tok.capacity is not None

    def view(self, now: float) -> FleetSnapshot:
        with self._lock:
            leased = sum(pool.lease.left(now) for pool in self._pools.values())
            return FleetSnapshot(mode=self._mode, rate=self._fleet_rate, tau=self._tau,
                                 active_workers=self._active, leased=leased,
                                 stats=fleet_stats())


class FleetPressure(TargetPressure):
    """A target whose pacer and breaker are shared through Redis (see the module docstring):
    the local state composed with a :class:`LeasePacer` and a :class:`FleetBreaker`."""

    breaker: FleetBreaker

    def __init__(self, key: TargetKey, now: float, link: Link) -> None:
        keys = fleet_keys(key)
        breaker = FleetBreaker(link, keys[1])
        #: The fleet's pacer (also reachable as ``pacer``, typed by its protocol there).
        self.leases = LeasePacer(key, link, keys, breaker)
        super().__init__(key, now, pacer=self.leases, breaker=breaker)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def fleet_pressure(key: TargetKey, now: float, redis_url: str) -> FleetPressure:
    """The fleet-backed state of ``key`` (what ``PressureRegistry.get(..., redis_url=)`` builds)."""
    return FleetPressure(key, now, link_for(redis_url))

