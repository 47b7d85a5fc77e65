"""Leases and what sizes them: pure arithmetic, no Redis, no clock of its own.

A worker takes permits from the fleet's GCRA in leases (``lua/acquire.lua`` grants them);
:class:`Lease` places them on the local clock, :func:`lease_size` says how many to ask for,
and :class:`Dimension` learns a provider's refill rate from its rate-limit headers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..engine.controllers import RateLimits
from .tuning import EVIDENCE_LEAST, MAX_LEASE

__all__ = ["Dimension", "Lease", "header_evidence", "learned_rate", "lease_size"]


@dataclass(slots=True)
class Lease:
    """Permits leased from the fleet: ``granted`` of them, permit ``j`` usable from
    ``start + j·spacing`` and void after ``void_start + j·void_spacing + tau``.

    Both are placed on the local clock as if the server's ``now`` were the instant the
    request left: a permit may then be used up to one round trip (well under a millisecond
    on a LAN) before its slot, far inside ``BUDGET``'s 10 % margin, and it voids early rather
    than late. ``tokens`` is
    what the lease allows in the token dimension (``inf`` when tokens are not paced).
    """

    granted: int = 0
    used: int = 0
    start: float = 0.0
    void_start: float = 0.0
    spacing: float = 0.0
    void_spacing: float = 0.0
    tau: float = 0.0
    tokens: float = 0.0
    per_call: float = 0.0

    def _next(self, now: float) -> int | None:
        i = self.used
        if self.void_spacing > 0:
            first_valid = math.ceil((now - self.tau - self.void_start) / self.void_spacing - 1e-9)
            i = max(i, first_valid)
        elif now > self.void_start + self.tau:
            return None
        return i if i < self.granted else None

    def left(self, now: float) -> int:
        i = self._next(now)
        return 0 if i is None else self.granted - i

    def wait(self, now: float, cost: float) -> float | None:
        """Seconds until the next permit may be used, or ``None`` when the lease cannot serve."""
        i = self._next(now)
        if i is None:
            return None
        if self.per_call > 0:
            self.tokens = min(self.tokens, (self.granted - i) * self.per_call)
        if self.tokens + 1e-9 < cost:
            return None
        return max(0.0, self.start + i * self.spacing - now)

    def take(self, now: float, cost: float) -> None:
        i = self._next(now)
        self.used = (i if i is not None else self.used) + 1
        self.tokens -= cost

    def drop(self) -> None:
        self.granted = self.used = 0
        self.tokens = 0.0


def lease_size(demand: float, waiting: int, tau: float) -> int:
    """Permits to ask for: what this worker will use within one validity window.

    ``k = max(waiting, ⌈d·τ⌉, 1)`` capped at ``MAX_LEASE``; the script caps it again at the
    fair share ``⌊r·τ/N⌋``. A worker doing ``d`` calls per second then pays ``1/(d·τ)`` round
    trips per call (0.11 at 10 calls/s and τ = 0.9 s).
    """
    return int(min(MAX_LEASE, max(1, waiting, math.ceil(demand * tau - 1e-9))))


def header_evidence(limits: RateLimits) -> tuple[float, float] | None:
    """What one header set says about the refill rate: ``(missing units, seconds to refill)``.

    Headers round ``remaining`` down to a whole unit while ``reset`` measures the true gap, so
    the missing count is read as ``L − R − 0.5`` (the middle of what it may be). Skipped
    with fewer than 2 units (and 5 % of the limit) missing, from an empty bucket (a rejected
    request's reset may mean "until the next unit", not "until full"), and for resets under
    5 ms (millisecond rounding dominates).
    """
    missing = limits.limit - limits.remaining
    if limits.remaining <= 0 or limits.reset < 0.005 or missing < max(2.0, 0.05 * limits.limit):
        return None
    return missing - 0.5, limits.reset


def learned_rate(limits: RateLimits) -> float | None:
    """The refill rate one header set implies (see :func:`header_evidence`)."""
    evidence = header_evidence(limits)
    return None if evidence is None else evidence[0] / evidence[1]


class Dimension:
    """What this worker learned about one dimension from headers.

    The rate pools the last 16 header sets: ``Σ missing / Σ reset``. A single nearly full
    bucket (4 missing of 40) can be off by an eighth through rounding; pooled, each set
    weighs by how much it says and the rounding errors average out.

    Until the pooled sets say ``EVIDENCE_LEAST`` units were missing, the rate is the most they
    allow (``Σ (L − R) / Σ reset``), not their middle. A fresh bucket drained by a burst has
    whole levels, so each set's middle reading is half a unit short: one set of 2 missing read
    30/s of a 40/s limit. Reported to the fleet, that rate paced it at 29/s, the bucket then
    stayed nearly full, no set said enough to correct it, and the fleet kept three quarters
    of its limit for the rest of the run (1 run in 8). A rate read too high is corrected: the
    fleet drains the bucket, and the sets that follow say more.
    """

    __slots__ = ("capacity", "evidence", "observed_at", "remaining")

    def __init__(self) -> None:
        self.evidence: deque[tuple[float, float]] = deque(maxlen=16)
        self.capacity: float | None = None
        self.remaining: float | None = None
        self.observed_at = 0.0

    def observe(self, limits: RateLimits, now: float) -> bool:
        """Record ``limits``; True when the learned rate moved by more than 20 %."""
        before = self.rate
        evidence = header_evidence(limits)
        if evidence is not None:
            self.evidence.append(evidence)
        self.capacity = max(limits.limit, 1.0)
        self.remaining = limits.remaining
        self.observed_at = now
        after = self.rate
        return after is not None and (before is None or abs(after - before) > 0.2 * before)

    @property
    def rate(self) -> float | None:
        evidence = self.evidence
        if not evidence:
            return None
        missing = sum(m for m, _ in evidence)  # (each set's m is L − R − ½)
        most = missing + 0.5 * len(evidence)
        if most < EVIDENCE_LEAST:
            missing = most
        return missing / sum(r for _, r in evidence)
