"""A circuit breaker whose open state, failure window and half-open probe are the fleet's.

The fleet trips once (health failures are reported as they happen, successes ride on lease
refills), and the first worker that asks after the break gets the fleet's one probe (a
holder field with an expiry, set atomically in ``lua/probe.lua``); everyone else stays open.
While Redis is unreachable it is the local breaker, unchanged: a ``FleetBreaker`` keeps an
``engine.breaker.Breaker`` as its local state and satisfies the same protocol
(``engine.parts.CircuitBreaker``).
"""

from __future__ import annotations

import math
import threading

from .._clock import RandomSource
from ..engine.breaker import (
    ALONE_WARMUP,
    Breaker,
    BreakerSnapshot,
    BreakerState,
    Thresholds,
    counts_for_health,
)
from ..engine.classify import Failure, FailureClass
from .link import Link, call_budget
from .scripts import FAIL, OPEN, PROBE, RELEASE, RESULT, STATE, BreakerView
from .stats import COUNTERS
from .tuning import BREAKER_CHECK_EVERY, IDLE_TTL, PROBE_HOLD_MOST, PROBE_POLL

__all__ = ["FleetBreaker"]


def _owner() -> int:
    """Who is asking: the current call (drop-in clients) or else the thread."""
    from ..engine.call import current_call

    call = current_call()
    return id(call) if call is not None else threading.get_ident()


class FleetBreaker:
    """A circuit breaker whose open state, failure window and half-open probe are the fleet's.

    * ``allow``: closed → no Redis while the fleet view is fresh (lease refills refresh it;
      it is re-read when older than ``view_ttl`` = max(2τ, 1 s), or every
      ``BREAKER_CHECK_EVERY`` while the fleet reports failures); open → no; half-open → ask
      Redis for the fleet's one probe (granted to one worker; the others stay open, asking
      again every ``PROBE_POLL`` or when the new break ends). A caller with nowhere else to go
      passes while the target served anyone in the fleet within the window, or, served by
      nobody yet, for the fleet's first ``ALONE_WARMUP`` answers.
    * ``record``: a health failure is reported at once (the fleet trips when its window
      crosses the thresholds); the local window's own trip is published; successes are
      counted and sent with the next lease refill. The probe's outcome closes or reopens
      the fleet's circuit.
    While Redis is unreachable it is the local breaker, unchanged.
    """

    def __init__(self, link: Link, key: str, *, thresholds: Thresholds | None = None) -> None:
        # Callers with nowhere else to go probe a target that looks down from each process
        # that saw it serve, as a lone client's do: after an outage longer than the window,
        # the fleet's half-open probe alone came seconds after the target's return (4 workers
        # with Redis served 0.39 of capacity through a 40 s outage where apart they served
        # 0.42). A target no one in the fleet saw serve is tried for the fleet's first
        # ALONE_WARMUP answers (``_passes_alone``), then left to the fleet-wide probe.
        self._local = Breaker(thresholds=thresholds, probes_unserved=False)
        self._lock = threading.Lock()
        self._link = link
        self._key = key
        self._fleet_probe: int | None = None  # owner holding the fleet probe
        self._probe_owner: int | None = None  # owner holding the local probe right
        self._probe_since = 0.0
        self._probe_hold = 0.0
        self._fleet_failures = 0.0
        self._view_at = -math.inf
        #: When a worker of the fleet last reported a success (as the latest view said).
        self._fleet_served_at = -math.inf
        #: Answers the workers ever reported (as the latest view said; ``None``: not read).
        self._fleet_answers: int | None = None
        self._checking = False
        self._successes = 0
        #: How old the fleet view may be before ``allow`` re-reads it (set to the lease
        #: validity by the pressure state, so busy workers never pay for it: refills refresh it).
        self.view_ttl = 1.0

    @property
    def thresholds(self) -> Thresholds:
        """The local breaker's: the fleet's rules and the local ones read the same values."""
        return self._local.thresholds

    @property
    def transitions(self) -> int:
        """State changes seen by this process."""
        return self._local.transitions

    def state(self, now: float) -> BreakerState:
        return self._local.state(now)

    def snapshot(self, now: float) -> BreakerSnapshot:
        return self._local.snapshot(now)

    def next_chance(self, now: float) -> float:
        """Seconds until :meth:`allow` may let a caller through: the local view's (the fleet's
        break as last seen, or one probe interval while another worker probes)."""
        return self._local.next_chance(now)

    def take_successes(self) -> int:
        with self._lock:
            count, self._successes = self._successes, 0
        return count

    def _open_for(self, now: float, seconds: float) -> None:
        """Adopt an open circuit (lock held)."""
        if self._local.hold_open(now, seconds):
            self._probe_owner = None

    def adopt(self, now: float, open_left: float, failures: float) -> None:
        """The fleet's breaker as a lease refill saw it."""
        with self._lock:
            self._fleet_failures = failures
            self._view_at = now
            if open_left > 0 and self._fleet_probe is None:
                self._open_for(now, open_left)

    def allow(self, now: float, *, alone: bool = False, rng: RandomSource | None = None) -> bool:
        if not self._link.usable():
            return self._local.allow(now, alone=alone, rng=rng)
        with self._lock:
            state = self._local.state(now)
            if state == "open":
                if self._local.allow(now, alone=alone, rng=rng):
                    return True
                if not alone:
                    return False
                if self._passes_alone(now):
                    return True
                if self._checking or now - self._view_at < BREAKER_CHECK_EVERY:
                    return False
                self._checking = True  # no success of its own: did the fleet see one?
            elif state == "closed":
                age = now - self._view_at
                stale = age >= self.view_ttl or (self._fleet_failures > 0
                                                 and age >= BREAKER_CHECK_EVERY)
                if not stale or self._checking:
                    return True
                self._checking = True
            else:
                if alone and self._passes_alone(now):
                    return True  # (as through an open circuit: see _passes_alone)
                if self._local.probe_out and now - self._probe_since < self._probe_hold:
                    return False
                self._local.claim_probe()
                self._probe_owner = _owner()
                self._probe_since = now
                self._probe_hold = self._hold()
        if state == "open":
            self._check(now)
            return self._passes_alone(now)
        if state == "closed":
            return self._check(now) or (alone and self._passes_alone(now))
        return self._ask_probe(now)

    def _passes_alone(self, now: float) -> bool:
        """May a caller with nowhere else to go pass the fleet's open circuit? While the
        target served anyone lately (``_served_lately``), or while it never served anyone and
        the fleet has had fewer than ``ALONE_WARMUP`` answers (as Redis last said; unread, it
        is asked first), as a lone client's breaker tries a target it never saw serve: half
        the requests failing fast, the workers' pooled 503s tripped the fleet's circuit
        before any success was back, and four workers with Redis served 93.42 % of the calls
        against 93.43 % apart."""
        answers = self._fleet_answers
        return self._served_lately(now) or (
            answers is not None and answers < ALONE_WARMUP
            and self._fleet_served_at == -math.inf and not self._local.served_ever)

    def _served_lately(self, now: float) -> bool:
        """Was the target serving anyone, here or elsewhere in the fleet, within the window?
        A caller with nowhere else to go is then let through the fleet's open circuit, as a
        lone client's breaker lets it through its own: a partial failure is tried as the
        official SDK would try it. Refusing it (a worker with no success of its own yet, or
        another worker holding the half-open probe) left four workers with Redis serving 81 %
        of the calls with half the requests failing, where the same workers apart served
        94 %. A target nobody was served by is down once the fleet saw enough answers
        (``_passes_alone``): the fleet's probe tests it."""
        return self._local.served_lately(now) or (
            now - self._fleet_served_at <= self.thresholds.window)

    def _adopt_served(self, now: float, view: BreakerView) -> None:
        """The fleet's successes and answers as ``view`` reports them (lock held)."""
        if view.served_ago is not None and view.served_ago >= 0:
            self._fleet_served_at = max(self._fleet_served_at, now - view.served_ago)
        if view.answers is not None:
            self._fleet_answers = max(self._fleet_answers or 0, view.answers)

    def _check(self, now: float) -> bool:
        result = self._link.call(STATE, [self._key], [f"{self.thresholds.window:g}"])
        with self._lock:
            self._checking = False
            if result is not None:
                self._view_at = now
                self._fleet_failures = result.failures or 0.0
                self._adopt_served(now, result)
                if result.open_left > 0:
                    self._open_for(now, result.open_left)
            return self._local.state(now) == "closed"

    def _hold(self) -> float:
        """How long a probe may stay out before someone else may probe."""
        left = call_budget()
        most = min(left if left is not None else PROBE_HOLD_MOST, PROBE_HOLD_MOST)
        return max(self.thresholds.break_for, most) + 1.0

    def _ask_probe(self, now: float) -> bool:
        result = self._link.call(PROBE, [self._key], [self._link.worker,
                                                      f"{self._probe_hold:.3f}",
                                                      f"{PROBE_POLL:g}"])
        with self._lock:
            if result is None:
                return True  # Redis unreachable: the local probe right decides
            verdict, seconds = result
            if verdict == "probe":
                COUNTERS.add("probes")
                self._fleet_probe = self._probe_owner
                return True
            self._probe_owner = None
            if verdict == "closed":
                self._local.close()
                return True
            # open (a new break) or held (another worker probes): stay open locally
            self._local.stay_open(now, seconds)
            return False

    def cancel_probe(self) -> None:
        owner = _owner()
        with self._lock:
            holder = self._fleet_probe if self._fleet_probe is not None else self._probe_owner
            if (self._link.up and self._local.probe_out and holder is not None
                    and holder != owner):
                return  # another call's probe: not ours to give back
            fleet = self._fleet_probe is not None
            self._fleet_probe = None
            self._probe_owner = None
        self._local.cancel_probe()
        if fleet:
            self._link.call(RELEASE, [self._key], [self._link.worker])

    def record(self, now: float, failure: Failure | None, rng: RandomSource) -> None:
        if not self._link.usable():
            self._local.record(now, failure, rng)
            return
        owner = _owner()
        with self._lock:
            probing = self._fleet_probe is not None and self._fleet_probe == owner
            # (the local probe right, when Redis could not be asked for the fleet's)
            claimed = probing or self._probe_owner == owner
            before = self._local.state(now)
        if failure is not None and failure.kind is FailureClass.RATE_LIMITED:
            if probing:
                self.cancel_probe()  # says nothing about health: let the next caller probe
            return
        healthy = not counts_for_health(failure)
        # A caller with nowhere else to go, let through while another worker probes, neither
        # closes nor trips the circuit here: only the fleet's probe does (a success of such a
        # caller closed it locally, and its colleagues' next failure re-opened the fleet's
        # circuit over the probe's success).
        self._local.record(now, failure, rng, probe=claimed)
        with self._lock:
            after = self._local.state(now)
            open_left = self._local.open_left(now)
            if probing:
                self._fleet_probe = None
                self._probe_owner = None
        if probing:
            self._link.call(RESULT, [self._key], [self._link.worker, "1" if healthy else "0",
                                                  f"{max(open_left, 0.001):.3f}"])
            return
        if healthy:
            with self._lock:
                self._successes += 1
            return
        if before == "closed" and after == "open":
            result = self._link.call(OPEN, [self._key], [
                self._link.worker, f"{open_left:.3f}", int(IDLE_TTL * 1000),
                f"{self.thresholds.window:g}",
            ])
        else:
            open_for = self.thresholds.break_for * rng.uniform(1.0, 1.5)
            result = self._link.call(FAIL, [self._key], [
                self._link.worker, f"{self.thresholds.window:g}", self.thresholds.min_calls,
                f"{self.thresholds.failure_ratio:g}", f"{open_for:.3f}", self.take_successes(),
                int(IDLE_TTL * 1000),
            ])
        if result is None:
            return
        with self._lock:
            self._view_at = now
            if result.failures is not None:
                self._fleet_failures = result.failures
            self._adopt_served(now, result)
            if result.open_left > 0 and self._fleet_probe is None:
                self._open_for(now, result.open_left)
