"""The parts a target's state is composed of, as protocols: its circuit breaker and its pacer.

A target's state (``engine.pressure.TargetPressure``) owns the local controls: the token
buckets the provider's headers describe, CUBIC after a 429, the concurrency limit, the retry
budget and the waiting queue. Two parts may be swapped by whoever builds the state, so that a
fleet can share them through Redis without the engine knowing the fleet:

* :class:`CircuitBreaker`: what the plan asks before and after an attempt. ``engine.breaker.
  Breaker`` is the local one; ``fleet.FleetBreaker`` shares the open state and the half-open
  probe of a fleet (and is the local one while Redis is away).
* :class:`Pacer`: where admissions get their permits besides the target's own buckets.
  Without one, the buckets pace alone; ``fleet.pressure.LeasePacer`` hands out permits from
  leases of the fleet's rate, and while Redis is away says how much of the provider's limits
  the local buckets stand for.

The state calls these methods and nothing else of its parts; the parts never reach into the
state (what a pacer needs of the queue comes as a :class:`Demand`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._clock import RandomSource
from .._policy import Priority
from .breaker import BreakerSnapshot, BreakerState, Thresholds
from .classify import Failure
from .controllers import RateLimits

__all__ = ["CircuitBreaker", "Demand", "Pacer", "SharedView"]


class CircuitBreaker(Protocol):
    """A target's circuit, as the plan uses it (``engine.breaker.Breaker`` documents the rules)."""

    @property
    def thresholds(self) -> Thresholds:
        """When it opens and for how long (``engine.breaker`` documents them); tuned in place."""
        ...

    @property
    def transitions(self) -> int:
        """State changes so far: the plan reports a change when this moved during an attempt."""
        ...

    def allow(self, now: float, *, alone: bool = False, rng: RandomSource | None = None) -> bool:
        """May an attempt go to the target now (``alone``: the caller has no fallback)?"""
        ...

    def next_chance(self, now: float) -> float:
        """Seconds until :meth:`allow` may let a caller with no fallback through (0: now)."""
        ...

    def cancel_probe(self) -> None:
        """The attempt :meth:`allow` let through will not be sent."""
        ...

    def record(self, now: float, failure: Failure | None, rng: RandomSource) -> None:
        """The outcome of an attempt :meth:`allow` let through (``None``: it succeeded)."""
        ...

    def state(self, now: float) -> BreakerState:
        """Closed, open or half-open, now."""
        ...

    def snapshot(self, now: float) -> BreakerSnapshot:
        """A read-only view, for errors and dashboards."""
        ...


class SharedView(Protocol):
    """What a target shared by a fleet adds to its snapshot (``fleet.FleetSnapshot``)."""

    @property
    def mode(self) -> str:
        """``fleet`` while coordinated, ``local`` while the coordination backend is away."""
        ...

    @property
    def rate(self) -> float | None:
        """The fleet's paced request rate, calls/s (``None``: not learned yet)."""
        ...

    @property
    def active_workers(self) -> int:
        """Workers sharing the target."""
        ...

    @property
    def leased(self) -> int:
        """Permits this worker holds."""
        ...


@dataclass(frozen=True, slots=True)
class Demand:
    """The head of a target's queue, which a free slot could admit: what a pacer sizes its
    next permits by."""

    priority: Priority
    #: The head call's token estimate.
    cost: float
    #: Calls of the same priority waiting, the head included.
    waiting: int
    #: The provider's token bucket size, when its headers published one.
    token_capacity: float | None


class Pacer(Protocol):
    """Where a target's admissions get their permits besides its own token buckets.

    The state calls :meth:`wait`, :meth:`take`, :meth:`refusing` and :meth:`acquitted` with
    its lock held and every other method without it; a pacer must not call back into the
    state.
    """

    @property
    def paces_tokens(self) -> bool:
        """Does admission need the calls' token estimates even without a token bucket?"""
        ...

    def sync(self) -> float:
        """Follow the coordination backend (up or away). Returns the share of the provider's
        limits the target's own buckets stand for: 1.0, or ``1/N`` while apart from ``N``
        workers. The state rescales its buckets when the share changes."""
        ...

    def engaged(self) -> bool:
        """Do permits come from this pacer now? ``False``: the target's own buckets pace."""
        ...

    def admits_at_once(self) -> bool:
        """May the uncontended path admit without queueing? ``False`` while the queued path
        must run first (it is time to reach the backend again)."""
        ...

    def refill(self, demand: Demand, now: float) -> bool:
        """Get permits for the head of the queue when none are at hand (may do I/O, bounded).
        ``True`` when a round trip was made: the state then wakes the head."""
        ...

    def wait(self, cost: float, now: float, priority: Priority) -> float | None:
        """Seconds until a permit is at hand; ``None``: unknown (wait to be woken)."""
        ...

    def backlog(self, queued: int) -> float:
        """Seconds until ``queued`` calls already waiting have their permits, when
        :meth:`wait` does not know (what a call deciding on a fallback waits behind them)."""
        ...

    def take(self, cost: float, now: float, priority: Priority) -> None:
        """An admission was made (also while not :meth:`engaged`: demand is counted)."""
        ...

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None,
                now: float) -> None:
        """Rate-limit headers from a response of the target."""
        ...

    def refusing(self, now: float) -> bool:
        """Are 429s a rate limit's answers for everyone this pacer paces (what
        ``refusals.RefusalShare`` says of one process, said of all of them)?"""
        ...

    def throttled(self, now: float, *, limited: bool, spent: bool = False) -> None:
        """An attempt of this process got a 429 (counted towards :meth:`refusing`);
        ``limited``: the state reads it as a rate limit's answer (its own evidence, or
        :meth:`refusing`); ``spent``: the provider's headers said the limit is spent."""
        ...

    def acquitted(self, since: float) -> bool:
        """Did everyone's 429s, since ``since``, prove refused at any rate (a cut made on
        :meth:`refusing`'s word is to be undone)?"""
        ...

    def view(self, now: float) -> SharedView | None:
        """What the pacer adds to the target's snapshot."""
        ...
