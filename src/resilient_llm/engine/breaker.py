"""Circuit breakers per target: stop sending to a target that is down, probe it, come back.

Closed → open when, over the last ``window`` seconds, at least ``min_calls`` attempts were
seen and the failure ratio is ≥ ``failure_ratio``. Open for ``break_for · U(1, 1.5)`` seconds
(jittered, so a fleet does not probe in one wave), then half-open: exactly one probe is let
through; its success closes the circuit, its failure opens it again. Defaults follow Polly's
anchor scaled to LLM traffic: 50 % over 30 s with at least 5 attempts, 5 s breaks. A caller
with no fallback is not refused by an open circuit while the target answered within the window
(a partial failure is still tried as the official SDK would try it); a target that looks down
gets one such caller every quarter second, as a probe.

Only failures that say something about the target's health count: overload, 5xx, timeouts,
connection faults and stream faults. 4xx answers and 429 (the caller's own quota, paced by
the pressure controller) do not.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from .._clock import RandomSource
from .classify import Failure, FailureClass

__all__ = [
    "ALONE_PROBE_EVERY", "ALONE_WARMUP", "Breaker", "BreakerSnapshot", "BreakerState",
    "Thresholds", "counts_for_health",
]

BreakerState = Literal["closed", "open", "half_open"]
#: While a circuit is open and nothing in its window succeeded, one caller without a fallback
#: per this many seconds is let through as a probe. A target that came back serves callers
#: that wait for it within this time: 8 closed-loop callers through a 3 s outage of 503s
#: (loopback) were served 6, 17, 48 calls in the half-seconds after it at 1 s, 27, 71, 74 at
#: 0.25 s, the official client 36, 64, 68 (which sends every call to the down target: about
#: 20 a second there, against 4).
ALONE_PROBE_EVERY = 0.25
#: Attempts a target that never succeeded still gets from callers without a fallback: its
#: first answers are often its fast failures, and a target failing 90 % of requests would
#: otherwise wait ten probes (ten seconds) for the success that lets such callers through.
ALONE_WARMUP = 50

_HEALTH = frozenset({
    FailureClass.OVERLOADED, FailureClass.SERVER_ERROR, FailureClass.TIMEOUT,
    FailureClass.CONNECT_ERROR, FailureClass.CONNECTION_RESET,
    FailureClass.FIRST_TOKEN_TIMEOUT, FailureClass.STREAM_STALL, FailureClass.STREAM_CUT,
    FailureClass.STREAM_MALFORMED, FailureClass.STREAM_INCOMPLETE,
})


def counts_for_health(failure: Failure | None) -> bool:
    """True when ``failure`` is evidence about the target's health."""
    return failure is not None and failure.kind in _HEALTH


@dataclass(slots=True)
class Thresholds:
    """When a circuit opens and for how long (the module docstring gives the rules).

    A value of its own because two breakers may share one: a fleet's breaker and the local
    one it keeps read the same thresholds, and tuning them (``breaker.thresholds.break_for =
    ...``) tunes both.
    """

    #: Seconds of attempts the failure ratio is measured over.
    window: float = 30.0
    #: Attempts the window needs before it may open the circuit.
    min_calls: int = 5
    failure_ratio: float = 0.5
    #: Seconds an open circuit waits, times U(1, 1.5), before its half-open probe.
    break_for: float = 5.0


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A read-only view of one breaker."""

    state: BreakerState
    failures: int
    calls: int
    open_until: float | None
    #: Health failures in a row, up to the latest attempt (0: it succeeded).
    streak: int = 0


class Breaker:
    """One target's circuit; every method takes ``now`` and does no I/O.

    It satisfies ``engine.parts.CircuitBreaker``. A breaker shared by a fleet
    (``fleet.FleetBreaker``) keeps one of these as its local state and moves it with the
    methods under "coordination" below, as the fleet's view arrives.
    """

    def __init__(self, *, thresholds: Thresholds | None = None,
                 probes_unserved: bool = True) -> None:
        #: Callers without a fallback probe a target that looks down, one per
        #: ``ALONE_PROBE_EVERY``; with ``probes_unserved``, a target this breaker never saw
        #: serve too (its first ``ALONE_WARMUP`` answers, then probes). A fleet's local
        #: breaker does not: a target nobody served is tried for the fleet's first
        #: ``ALONE_WARMUP`` answers, then left to the fleet-wide probe (``FleetBreaker``).
        self.probes_unserved = probes_unserved
        self.thresholds = Thresholds() if thresholds is None else thresholds
        self._events: deque[tuple[float, bool]] = deque(maxlen=1024)
        self._state: BreakerState = "closed"
        self._open_until = 0.0
        self._probe_out = False
        self._alone_probe_at = -float("inf")
        self._last_success = -float("inf")
        self._recorded = 0
        self._lock = threading.Lock()
        self.transitions = 0

    def state(self, now: float) -> BreakerState:
        with self._lock:
            return self._current(now)

    def _current(self, now: float) -> BreakerState:
        if self._state == "open" and now >= self._open_until:
            self._state = "half_open"
            self._probe_out = False
            self.transitions += 1
        return self._state

    def allow(self, now: float, *, alone: bool = False, rng: RandomSource | None = None) -> bool:
        """May an attempt go to this target now? In half-open, only the first caller may.

        ``alone``: the caller has nowhere else to go (no fallback). Refusing it is right only
        when the target is down: while an attempt succeeded within the window, the call is
        let through. (Rejecting in proportion to the failures, as client-side adaptive throttling
        does, fails calls the official SDK would have completed: with 80 % of answers failing,
        its three attempts still succeed for half the calls. The load such callers add stays
        bounded by the concurrency limit and the retry budget.)
        """
        with self._lock:
            state = self._current(now)
            if state == "closed":
                return True
            if state == "half_open" and not self._probe_out:
                self._probe_out = True
                return True
            return alone and self._admit_alone(now)

    def _admit_alone(self, now: float) -> bool:
        """A caller with no fallback, through an open circuit (lock held): let through while
        the target answered within the window (a partial failure); else it looks down, and one
        such caller every ``ALONE_PROBE_EVERY`` goes as a probe (the official SDK would send
        them all), so a target that came back serves again at once, not only after the break. A
        target that never succeeded is tried for its first ``ALONE_WARMUP`` answers. A
        fleet's breaker probes only a target it saw serve, lets such a caller through while
        the fleet was served lately, and tries a target nobody served for the fleet's first
        ``ALONE_WARMUP`` answers (then it is the fleet-wide half-open probe's:
        ``FleetBreaker``)."""
        if self._served(now):
            return True
        if not self._probing():
            return False
        if self._last_success == -float("inf") and self._recorded < ALONE_WARMUP:
            return True  # never succeeded yet: too few answers to call it down
        if now - self._alone_probe_at >= ALONE_PROBE_EVERY:
            self._alone_probe_at = now
            return True
        return False

    def cancel_probe(self) -> None:
        """The probe that :meth:`allow` let through was never sent: let another caller probe."""
        with self._lock:
            self._probe_out = False

    def record(self, now: float, failure: Failure | None, rng: RandomSource, *,
               probe: bool = True) -> None:
        """The outcome of an attempt that :meth:`allow` let through.

        ``probe=False``: the attempt was not the half-open probe (a fleet's caller with
        nowhere else to go let through while another worker probes): in half-open it is
        counted as if the circuit were open, and neither closes nor trips it."""
        healthy = not counts_for_health(failure)
        if failure is not None and healthy and failure.kind is not FailureClass.RATE_LIMITED:
            healthy = True  # a 4xx answer proves the target is up
        elif failure is not None and failure.kind is FailureClass.RATE_LIMITED:
            if probe:
                with self._lock:  # says nothing about health; a rate-limited probe may retry
                    self._probe_out = False
            return
        with self._lock:
            self._recorded += 1
            if healthy:
                self._last_success = now
            state = self._current(now)
            if state == "half_open" and probe:
                self._probe_out = False
                if healthy:
                    self._state = "closed"
                    self._events.clear()
                else:
                    self._trip(now, rng)
                self.transitions += 1
                return
            self._events.append((now, healthy))
            thresholds = self.thresholds
            while self._events and self._events[0][0] < now - thresholds.window:
                self._events.popleft()
            if state == "closed" and not healthy:
                calls = len(self._events)
                failures = sum(1 for _, ok in self._events if not ok)
                if calls >= thresholds.min_calls and failures >= thresholds.failure_ratio * calls:
                    self._trip(now, rng)
                    self.transitions += 1

    def _trip(self, now: float, rng: RandomSource) -> None:
        self._alone_probe_at = now  # the first probe without a fallback comes one interval on
        self._state = "open"
        self._open_until = now + self.thresholds.break_for * rng.uniform(1.0, 1.5)

    def snapshot(self, now: float) -> BreakerSnapshot:
        with self._lock:
            state = self._current(now)
            streak = 0
            for _, ok in reversed(self._events):
                if ok:
                    break
                streak += 1
            return BreakerSnapshot(
                state=state,
                failures=sum(1 for _, ok in self._events if not ok),
                calls=len(self._events),
                open_until=self._open_until if state == "open" else None,
                streak=streak,
            )

    # coordination: a fleet's view of the circuit, applied to the local state

    def served_lately(self, now: float) -> bool:
        """Did the target answer a request within the window (seen from here)? A caller with
        nowhere else to go is then let through an open circuit: a partial failure."""
        with self._lock:
            return self._served(now)

    def _served(self, now: float) -> bool:
        """``served_lately`` with the lock held."""
        return now - self._last_success <= self.thresholds.window

    @property
    def served_ever(self) -> bool:
        """Did the target ever answer a request (seen from here)?"""
        return self._last_success != -float("inf")

    @property
    def probe_out(self) -> bool:
        """Is the half-open probe right taken?"""
        return self._probe_out

    def claim_probe(self) -> None:
        """Take the half-open probe right, whoever held it (a fleet's probe hold expired)."""
        with self._lock:
            self._probe_out = True

    def hold_open(self, now: float, seconds: float) -> bool:
        """The fleet's circuit is open for ``seconds``: be open at least that long (a change
        when it was not open). ``False`` when it already was, for longer."""
        until = now + seconds
        with self._lock:
            if self._state == "open" and until <= self._open_until:
                return False
            if self._state != "open":
                self.transitions += 1
            self._state = "open"
            self._open_until = until
            self._probe_out = False
            return True

    def stay_open(self, now: float, seconds: float) -> None:
        """Someone else holds the fleet's probe, or a new break began: stay open ``seconds``
        (not a change seen here)."""
        with self._lock:
            self._state = "open"
            self._open_until = now + seconds
            self._probe_out = False

    def close(self) -> None:
        """The fleet's probe succeeded: closed, with an empty window."""
        with self._lock:
            self._state = "closed"
            self._events.clear()
            self._probe_out = False
            self.transitions += 1

    def next_chance(self, now: float) -> float:
        """Seconds until :meth:`allow` may let a caller with nowhere else to go through
        (``alone``): 0 when it may now; else the next such probe, or the end of the
        break, or (a half-open probe out) one probe interval."""
        with self._lock:
            state = self._current(now)
            if state == "closed" or (state == "half_open" and not self._probe_out):
                return 0.0
            wait = max(0.0, self._open_until - now) if state == "open" else ALONE_PROBE_EVERY
            if self._probing():
                wait = min(wait, max(0.0, ALONE_PROBE_EVERY - (now - self._alone_probe_at)))
            return wait

    def _probing(self) -> bool:
        """Do callers with nowhere else to go probe this target now (lock held)?"""
        return self.probes_unserved or self._last_success != -float("inf")

    def open_left(self, now: float) -> float:
        """Seconds the circuit stays open (0 unless it is open)."""
        with self._lock:
            return max(0.0, self._open_until - now) if self._state == "open" else 0.0
