"""Client-side estimate of provider pressure, per target, and the controls it drives.

State is keyed by target: (endpoint, credential hash, model), the scope a provider throttles
on. For each target:

* **Pacer** — token buckets for requests and tokens, seeded from rate-limit headers (limit
  L, remaining R, reset T read as at most a minute: fill rate ``(L − R) / T``, level R). A
  429 drains the requests bucket until its ``Retry-After`` (on trial, its burst, unless the
  headers say it is spent) and the fill rate follows CUBIC (botocore's: C = 0.4, β = 0.7,
  floor 0.5/s; ``rate = C·(t − t_429 − K)³ + W_max``, ``K = ∛(W_max·(1 − β)/C)``), one cut
  per overshoot, growing with time and forgotten at 2·W_max; meanwhile the bucket holds at
  most ``BURST_SECONDS`` of the rate. A 429 does this only as a rate limit's answer
  (``engine.refusals``: headers that say a limit is spent, a confident share over a quarter
  that grows with the send rate, or the fleet's share; a cut whose trial shows the share
  refused at any rate is undone). A 429 with a ``Retry-After`` or a header bucket behind it
  takes no concurrency slot but as a limit's, nor on trial.
* **Concurrency limit** — none until the provider pushes back (a 429, an overload answer, a
  timeout not cut short by the caller's deadline; not a 503, the breaker's) with more in
  flight than it served lately and, before any limit, more than four (a rate limit's 429
  counts at any load); then AIMD (one ×0.9 cut per second; for an overload answer never above
  what the provider held, for a rate-shaped 429 a slot less per further drop), slow start
  back, Gradient2 on latency per 1 s window, no limit again after 30 s calm, and no growth
  while under 10 % of the request limit remains.
* **Retry budget** — gRPC retry throttling: 10 tokens, −1 per failed attempt, +0.1 per
  success; a retry is allowed above 5 tokens, while anything recent succeeded, or before the
  first success; one retry per second in reserve.
* **Priority** — waiting calls are admitted ``interactive`` first; while interactive calls
  are about (one admitted in the last 30 s), ``batch`` calls may use at most 75 % of the
  concurrency limit, so interactive work always has headroom.
* **Pressure** — one number in [0, 1]: the largest of slot utilisation beyond half, recent
  429s (decaying over 10 s), latency inflation (0 up to twice a robust baseline plus 50 ms,
  1 at twice that), and the pacer's wait (1 s = 1). It widens backoff windows and is
  reported in ``outcome()``.

Every method takes ``now`` (an injected monotonic time) and does no I/O; a per-target lock
makes it safe for threads and tasks alike (no lock is held across a wait).

With ``RESILIENT_LLM_REDIS_URL`` set, the registry (``engine.registry``) builds the target's
state with the factory the drivers pass (``resilient_llm.fleet.fleet_pressure``): the same state,
composed with a pacer and a breaker that consult state shared by the fleet through Redis
(the protocols of ``engine.parts``; docs/fleet.md). This module never imports the fleet.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from .._policy import Priority
from .breaker import Breaker
from .controllers import (
    UNPACED,
    ConcurrencyLimit,
    Cubic,
    RateLimits,
    RetryBudget,
    TokenBucket,
    estimate_tokens,
)
from .parts import CircuitBreaker, Demand, Pacer, SharedView
from .refusals import RefusalShare
from .target import Admission, PressureSnapshot, TargetKey
from .waiter import Waiter

__all__ = [
    "BATCH_SHARE", "INTERACTIVE_MEMORY", "Admission", "ConcurrencyLimit", "Cubic",
    "PressureSnapshot", "RateLimits", "RetryBudget", "SharedView", "TargetKey", "TargetPressure",
    "TokenBucket", "estimate_tokens",
]

#: Share of the concurrency limit ``batch`` calls may hold while interactive work is about.
BATCH_SHARE = 0.75
#: Seconds an interactive admission keeps the headroom reserved for interactive work.
INTERACTIVE_MEMORY = 30.0
#: Seconds after a 429 that cut the send rate or the limit without growth of the limit.
_GROWTH_PAUSE = 2.0
#: A 429 slows the send rate only when another came within this many seconds: one alone is a blip.
_BLIP_WINDOW = 10.0
#: Latency above the baseline that is never read as pressure (seconds).
_LATENCY_FLOOR = 0.05
#: While a 429 is remembered, the burst a header-learned bucket allows: this many seconds of
#: the allowed rate (providers may enforce a per-minute limit over windows this short).
BURST_SECONDS = 0.1
#: An attempt in flight longer than this many times the target's normal latency (and at
#: least ``_STALE_MIN`` seconds) no longer holds a concurrency slot.
_STALE_FACTOR = 1.0
_STALE_MIN = 1.0


class TargetPressure:
    """Everything resilient-llm estimates about one target; see the module docstring."""

    def __init__(self, key: TargetKey, now: float, *, pacer: Pacer | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self.key = key
        #: Permits from elsewhere (a fleet's leases); ``None``: the own buckets pace alone.
        self.pacer = pacer
        #: The share of the provider's limits the own buckets stand for (``Pacer.sync``).
        self._share = 1.0
        self._lock = threading.Lock()
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self.cubic = Cubic()
        self.cubic_rate: float | None = None
        self.concurrency = ConcurrencyLimit()
        self.budget = RetryBudget()
        self.inflight = 0
        self.inflight_batch = 0
        #: When an interactive call was last admitted (the batch share applies for a while).
        self._interactive_at = -math.inf
        #: Admission times of the attempts in flight, oldest first (released first in, first
        #: out: an approximation that only ever counts fewer of them as stale).
        self._admitted_at: deque[float] = deque()
        self._last_success = -math.inf
        #: The last stretch in which nothing succeeded for longer than ``_stale_after``.
        self._silence: tuple[float, float] | None = None
        self._waiting: list[Waiter] = []
        self._last_throttle: float | None = None
        #: The latest 429 that cut the send rate or the concurrency limit.
        self._pushed_back = -math.inf
        #: Until when the target asked (``Retry-After`` on a refusal) not to be sent to: a
        #: fallback refusing for longer than moving takes is not somewhere to go. Forgotten
        #: once a request sent after that refusal is accepted.
        self.refusing_until = -math.inf
        self._refused_at = -math.inf
        self.throttles = 0
        self.refusals = RefusalShare()
        #: The latest rate-limit headers said a limit is spent (read by the next release).
        self._spent = False
        self._remaining_fraction: float | None = None
        self._baseline: float | None = None
        self._recent: float | None = None
        self._last_reserve_retry = -math.inf
        self.breaker: CircuitBreaker = Breaker() if breaker is None else breaker
        #: The requests bucket was made by CUBIC (no headers): it goes when the throttle does.
        self._cubic_bucket = False
        #: The fill rate the rate-limit headers describe (``UNPACED`` until learnt).
        self._header_rate = UNPACED
        #: Successes whose rate-limit headers may be skipped (plenty of headroom last time).
        self.headroom_skips = 0
        self.touched = now

    # admission

    def enqueue(self, priority: Priority, cost: float, since: float = math.inf) -> Waiter:
        waiter = Waiter(priority, cost, since)
        with self._lock:
            self._waiting.append(waiter)
            self._waiting.sort(key=lambda w: w.rank)
        return waiter

    def first_in_line(self, waiter: Waiter) -> bool:
        """Whether ``waiter`` is the one the next free slot goes to."""
        with self._lock:
            return bool(self._waiting) and self._waiting[0] is waiter

    def cancel(self, waiter: Waiter) -> None:
        with self._lock:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            self._wake_head()

    def admit_now(self, priority: Priority, cost: float, now: float) -> float | None:
        """Admit at once when nobody waits, a slot is free and the pacer allows: the pressure
        at admission, else ``None``.

        The common, uncontended case: no waiter object, no queue, one short critical section.
        """
        pacer = self.pacer
        if pacer is not None:
            self._follow_share(pacer)
            if not pacer.admits_at_once():
                return None
        with self._lock:
            if self._waiting:
                return None
            limit = self.concurrency.limit
            if self.inflight >= limit:  # (unlimited: never) are some slots held by lost ones?
                holding = self._holding(now)
                if priority == "interactive":
                    if holding >= max(1.0, limit):
                        return None
                elif holding >= limit or self.inflight_batch >= self._batch_cap(limit, now):
                    return None
            elif priority == "batch" and self.inflight_batch >= self._batch_cap(limit, now):
                return None
            pacing: float | None = None
            if pacer is None and self.cubic_rate is None:
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
            self._admitted_at.append(now)
            if priority == "batch":
                self.inflight_batch += 1
            else:
                self._interactive_at = now
            self.cubic.record_send(now)
            self.refusals.sent(now)
            self.budget.requests += 1
            return self._pressure(now, pacing)

    def _batch_cap(self, limit: float, now: float) -> float:
        """Slots ``batch`` calls may hold (lock held): ``BATCH_SHARE`` of the limit while an
        interactive call was admitted within ``INTERACTIVE_MEMORY`` seconds, else all of it.
        A batch job alone holding a quarter of the slots back for nobody took a round trip
        more than the official client to drain a flood the provider had room for."""
        if now - self._interactive_at <= INTERACTIVE_MEMORY:
            return max(1.0, limit * BATCH_SHARE)
        return limit

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

    def try_admit(self, waiter: Waiter, now: float) -> Admission:
        """Admit ``waiter`` if it is first in line and capacity allows; else say how long."""
        pacer = self.pacer
        if pacer is not None:
            self._follow_share(pacer)
            demand = self._demand(waiter, now)
            if demand is not None and pacer.refill(demand, now):
                with self._lock:
                    self._wake_head()
            self._follow_share(pacer)
        with self._lock:
            self.touched = now
            pressure = self._pressure(now)
            if not self._waiting or self._waiting[0] is not waiter:
                return Admission(False, None, pressure, self._turn_in(waiter, now))
            limit = self.concurrency.limit
            cap = limit if waiter.priority == "interactive" else self._batch_cap(limit, now)
            holding = self._holding(now) if self.inflight >= limit else self.inflight
            in_use = holding if waiter.priority == "interactive" else self.inflight_batch
            if holding >= max(1.0, limit) or in_use >= cap:
                if waiter.priority == "batch" and holding < limit:
                    # Let the next interactive waiter, if any, use the free slot.
                    self._wake_next_interactive()
                return Admission(False, None, pressure)
            wait = self._admit_wait(waiter.cost, now, waiter.priority)
            if wait is None or wait > 0:
                return Admission(False, wait, pressure)
            self._waiting.pop(0)
            self.inflight += 1
            self._admitted_at.append(now)
            if waiter.priority == "batch":
                self.inflight_batch += 1
            else:
                self._interactive_at = now
            self._take(waiter.cost, now, waiter.priority)
            self.cubic.record_send(now)
            self.refusals.sent(now)
            self.budget.requests += 1
            self._wake_head()
            return Admission(True, 0.0, pressure)

    # pacing (lock held): the own buckets, or the pacer while it is engaged

    @property
    def paces_tokens(self) -> bool:
        """Does admission read the request's token estimate (a token bucket or the pacer)?"""
        return self.tokens is not None or (self.pacer is not None and self.pacer.paces_tokens)

    def _demand(self, waiter: Waiter, now: float) -> Demand | None:
        """What the pacer may refill for: ``waiter`` heads the queue and a slot is free."""
        with self._lock:
            if not self._waiting or self._waiting[0] is not waiter:
                return None
            limit = self.concurrency.limit
            if self.inflight >= max(1.0, limit) or (
                waiter.priority == "batch"
                and self.inflight_batch >= self._batch_cap(limit, now)
            ):
                return None
            waiting = sum(1 for w in self._waiting if w.priority == waiter.priority)
            capacity = None if self.tokens is None else self.tokens.capacity
            return Demand(waiter.priority, waiter.cost, waiting, capacity)

    def _follow_share(self, pacer: Pacer) -> None:
        """Scale the own buckets to the share of the provider's limits they stand for now."""
        with self._lock:
            share = pacer.sync()
            if share == self._share:
                return
            factor, self._share = share / self._share, share
            for bucket in (self.requests, self.tokens):
                if bucket is not None:
                    bucket.scale(factor)

    def _admit_wait(self, cost: float, now: float, priority: Priority) -> float | None:
        """Seconds until the pacer admits this call; ``None`` = unknown (wait to be woken)."""
        pacer = self.pacer
        if pacer is not None and pacer.engaged():
            return pacer.wait(cost, now, priority)
        return self._pacer_wait(cost, now)

    def _take(self, cost: float, now: float, priority: Priority) -> None:
        """Debit an admitted call from the buckets (which keep learning while a pacer is
        engaged, for when it is not) and tell the pacer."""
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(cost, now)
        if self.pacer is not None:
            self.pacer.take(cost, now, priority)

    def _pacer_wait(self, cost: float, now: float) -> float:
        pacer = self.pacer
        if pacer is not None and pacer.engaged():
            wait = pacer.wait(cost, now, "interactive")
            if wait is None:  # no permit at hand: behind the calls already queued for one
                return pacer.backlog(len(self._waiting)) if self._waiting else 0.0
            return wait
        self._follow_cubic(now)
        wait = 0.0 if self.requests is None else self.requests.wait_for(1, now)
        if self.tokens is not None and cost > 0:
            wait = max(wait, self.tokens.wait_for(cost, now))
        return wait

    def _turn_in(self, waiter: Waiter, now: float) -> float | None:
        """The soonest the pace admits ``waiter`` after those ahead of it (lock held)."""
        try:
            ahead, pacer, bucket = self._waiting.index(waiter), self.pacer, self.requests
        except ValueError:  # it left the queue
            return None
        if pacer is not None and pacer.engaged():
            return pacer.backlog(ahead)
        if bucket is None:
            return None
        bucket.refill(now)
        return max(0.0, (ahead + 1 - bucket.level) / bucket.rate)

    def _follow_cubic(self, now: float) -> None:
        """Set the requests bucket's rate to what CUBIC allows now (lock held).

        While a 429 is remembered the bucket fills at ``min(header rate, CUBIC rate)``, a rate
        that grows with time and not with what the pacer let through, and holds at most
        ``BURST_SECONDS`` of it; without headers CUBIC has a bucket of its own. Once the rate
        has grown to twice where it was cut, the throttle is forgotten.
        """
        if self.cubic_rate is None:
            return
        bucket = self.requests
        if self.cubic.expired(now):  # recovered with time: the throttle is forgotten
            self._forget_cubic(now)
            return
        rate = self._cubic_now(now, self.cubic_rate)
        if bucket is None:
            burst = max(1.0, rate * BURST_SECONDS)
            self.requests = TokenBucket(rate, burst, burst, now)  # starts full
            self._cubic_bucket = True
            return
        bucket.refill(now)  # what accrued so far, at the rate that held so far
        bucket.rate = rate if self._cubic_bucket else min(self._header_rate, rate)
        self._clamp_burst(now)

    def silent(self, started: float, now: float) -> bool:
        """Was the target answering nobody when an attempt sent at ``started`` was made
        (nothing succeeded for longer than an attempt may normally take, at least a second)?
        Its timeout then says the target was down, which is the breaker's business, not
        that it holds fewer requests at once."""
        with self._lock:
            if now - self._last_success > self._stale_after():
                return True
            silence = self._silence
            return silence is not None and silence[0] < started < silence[1]

    def _stale_after(self) -> float:
        """Seconds after which an attempt is presumed lost (lock held)."""
        normal = self._normal()
        return math.inf if normal is None else max(_STALE_MIN, _STALE_FACTOR * normal)

    def _holding(self, now: float) -> int:
        """Attempts in flight that still hold a slot (lock held).

        One in flight for more than twice the target's normal latency (at least a second)
        says nothing of how busy the target is now: after a silent outage, attempts hung
        during it would otherwise hold every slot for the rest of their timeouts and keep
        the first requests after the recovery waiting.
        """
        if self._baseline is None:
            return self.inflight
        cutoff = now - self._stale_after()
        stale = 0
        for admitted in self._admitted_at:
            if admitted > cutoff:
                break
            stale += 1
        return self.inflight - stale

    def _wake_head(self) -> None:
        if self._waiting:
            self._waiting[0].wake()

    def _wake_next_interactive(self) -> None:
        for waiter in self._waiting:
            if waiter.priority == "interactive":
                waiter.wake()
                return

    # feedback

    def _free_slot(self, priority: Priority) -> None:
        """One attempt of ``priority`` is no longer in flight (lock held)."""
        self.inflight = max(0, self.inflight - 1)
        if self._admitted_at:
            self._admitted_at.popleft()
        if priority == "batch":
            self.inflight_batch = max(0, self.inflight_batch - 1)

    def withdraw(self, priority: Priority) -> None:
        """An admitted attempt will not be sent after all: free its slot, learn nothing."""
        with self._lock:
            self._free_slot(priority)
            self._wake_head()

    def release(self, now: float, *, priority: Priority, latency: float | None,
                throttled: bool, dropped: bool, succeeded: bool,
                retry_after: float | None = None, patience: float | None = None,
                sent_with: int | None = None, sent_at: float | None = None) -> None:
        """An admitted attempt ended: free its slot and learn from how it went.

        ``sent_with``, ``sent_at``: attempts in flight (this one included) when it was sent,
        and when; ``patience``:
        the call's deadline budget (a throttle never paces slower than two requests per it).
        A 429 (``throttled``) slows the send rate (CUBIC) when rate-shaped (a ``Retry-After``,
        or published rate limits; a bare 429 without them only cuts the concurrency limit)
        and drains the header-learned bucket until its ``Retry-After`` (on trial, its burst):
        the provider's answer beats its headers. Each only while 429s are a limit's.
        """
        with self._lock:
            self._free_slot(priority)
            (self.budget.on_success if succeeded else self.budget.on_failure)()
            if retry_after is not None and latency is None:
                self.refusing_until = max(self.refusing_until, now + retry_after)
                self._refused_at = now
            elif latency is not None and now - latency >= self._refused_at:
                self.refusing_until = -math.inf
            if latency is not None:
                if now - self._last_success > self._stale_after() > 0:
                    self._silence = (self._last_success, now)
                self._last_success = now
                self.cubic.record_accept(now)
            previous = self._last_throttle
            # A 429 to a grown limit probing with all it allows in flight (more than one) met
            # the provider's edge: the limit answers it (below). Cutting the send rate too
            # paced warm bursts at 40 slots at 0.8x what they serve. Other 429s slow the rate.
            probe = throttled and self.concurrency.binds(self.inflight + 1, now)
            if throttled:
                self.throttles += 1
                self._last_throttle = now
            if throttled or latency is not None:  # (by when it was sent: see refusals)
                self.refusals.record(throttled, sent_at)
            # No cut before a send rate is measured (one 0.5 s bucket), for one 429 alone (a
            # burst after it ran out of time), or with nothing accepted since the last (a
            # throttle episode refuses every rate: callers waited ~2 s after it ended).
            repeated = self.cubic_rate is not None or (
                previous is not None and now - previous <= _BLIP_WINDOW)
            accepted = previous is None or self._last_success > previous
            rate_shaped = throttled and (
                retry_after is not None
                or (self.requests is not None and not self._cubic_bucket)
                or self.cubic_rate is not None)
            spent, self._spent = self._spent, False  # (a fleet's share: the pacer's)
            acquitted = self.refusals.acquitted(now)
            cut = self.refusals.last_cut  # (the fleet's trial may undo a cut on its word)
            if cut > -math.inf and self.pacer is not None and self.pacer.acquitted(cut):
                self.refusals.acquit(now)
                acquitted = True
            if acquitted and self.cubic_rate is not None:
                self._forget_cubic(now)  # refused at any rate: undo the rate's cut, and
                self.concurrency.forgive_rate_cuts()  # the slots cut as a rate limit's
            said = spent or (self.pacer is not None and self.pacer.refusing(now))
            engaged = throttled and (said or self.cubic_rate is not None
                                     or self.refusals.limited(now, self.cubic.sent_lately))
            if rate_shaped and not probe and repeated and accepted and engaged \
                    and self.cubic.measured > 0 and not self.refusals.trying:
                current = self.requests.rate if self.requests is not None else None
                self.cubic_rate = self.cubic.on_throttle(now, current, patience)
                self._follow_cubic(now)
                self._pushed_back = now
                if self.refusals.on_rate_cut(now, self.cubic.sent_lately,
                                             self.cubic.accepted_lately, shown=said):
                    self.concurrency.forgive_rate_cuts()  # on trial: 429s take no slots
            if engaged and self.requests is not None and not self._cubic_bucket:
                # A 429 is ground truth, headers a hint: no burst while the throttle is known (a
                # minute's limit may be enforced in shorter windows), and no request before the
                # provider said (at most half the call's deadline; on trial, the burst only).
                bucket = self.requests
                bucket.refill(now)
                rate = min(bucket.rate, self._cubic_now(now, bucket.rate))
                if rate < UNPACED:
                    hold = 0.0 if self.refusals.trying and not spent else min(
                        retry_after or 0.0, (patience or math.inf) / 2)
                    bucket.level = min(bucket.level, 1.0 - rate * hold)
                self._clamp_burst(now)
            # A 429 may be a rate limit or a concurrency cap: it slows the rate (above) and is
            # a drop; with a Retry-After or a header bucket behind it, as a limit's answer or,
            # when 429s are over a quarter of the answers, a cap's; not on trial (30 % refused
            # at random cut five slots to one: calls queued out of their 2 s deadline).
            limits = rate_shaped and engaged and not self.refusals.trying
            often = not self.refusals.trying and self.refusals.often()
            if dropped or (throttled and (limits or often or not rate_shaped)):
                if self.concurrency.on_drop(now, self.inflight + 1, sent_with,
                                            rate_shaped=limits) and throttled:
                    self._pushed_back = now
            elif latency is not None:
                if sent_with is not None:
                    self.concurrency.on_served(now, sent_with)
                # No growth while the provider says its limit is nearly spent, or just pushed
                # back with a 429 that cut the rate or the limit (one that cut nothing says
                # nothing of the kind: random 429s every 0.2 s held a limit of four for 30 s).
                may_grow = (self._remaining_fraction is None
                            or self._remaining_fraction >= 0.1) and (
                    now - self._pushed_back >= _GROWTH_PAUSE)
                self.concurrency.on_sample(latency, now, self.inflight + 1, may_grow)
                self._learn_latency(latency)
            self._wake_head()
        if throttled and self.pacer is not None:
            self.pacer.throttled(now, limited=engaged, spent=spent)

    def _cubic_now(self, now: float, otherwise: float) -> float:
        """CUBIC's rate (``otherwise`` with no cut), held at the cut while tried (lock held)."""
        if self.cubic_rate is None or self.refusals.holding:
            return otherwise if self.cubic_rate is None else self.cubic_rate
        return self.cubic.rate(now) or self.cubic_rate

    def _forget_cubic(self, now: float) -> None:  # (lock held)
        """No throttle is remembered: the rate the headers allow, if any."""
        self.cubic_rate, self.cubic.last_throttle = None, None
        if self._cubic_bucket:
            self.requests, self._cubic_bucket = None, False
        elif self.requests is not None:
            self.requests.refill(now)
            self.requests.rate = self._header_rate

    def _clamp_burst(self, now: float) -> None:
        """While a 429 is remembered, the header-learned requests bucket holds at most
        ``BURST_SECONDS`` of the allowed rate (lock held)."""
        bucket = self.requests
        if bucket is None or self.cubic_rate is None:
            return
        rate = self._cubic_now(now, self.cubic_rate)
        bucket.capacity = min(bucket.capacity, max(1.0, rate * BURST_SECONDS))
        bucket.level = min(bucket.level, bucket.capacity)

    def _learn_latency(self, latency: float) -> None:
        """Recent latency (EMA 0.2) against a robust baseline: an EMA that falls fast (0.2) and
        rises slowly (0.05), so one lucky fast answer does not make every later one look slow."""
        self._recent = latency if self._recent is None else 0.8 * self._recent + 0.2 * latency
        if self._baseline is None:
            self._baseline = latency
        else:
            weight = 0.2 if latency < self._baseline else 0.05
            self._baseline += weight * (latency - self._baseline)

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None, now: float, *,
                patience: float | None = None, cost: float = 0.0) -> None:
        """Rate-limit headers from any response of this target (scaled to the own buckets'
        share while a fleet's backend is away). They alone never make a request of ``cost``
        tokens wait longer than half ``patience``, the deadline of the call that saw them."""
        most = None if patience is None else patience / 2
        if self.pacer is not None:
            self.pacer.observe(requests, tokens, now)
            if self._share != 1.0:
                requests = None if requests is None else requests.scaled(self._share)
                tokens = None if tokens is None else tokens.scaled(self._share)
        with self._lock:
            if requests is not None:
                if self.requests is None:
                    self.requests = TokenBucket(UNPACED, max(requests.limit, 1.0),
                                                requests.remaining, now)
                self.requests.refill(now)
                # The headers speak of their own rate, not of the one CUBIC set (and a bucket
                # CUBIC made becomes theirs: the provider publishes limits after all).
                self.requests.rate, self._cubic_bucket = self._header_rate, False
                level = self.requests.level
                self.requests.observe(requests, now, floor=self.cubic.measured, most=most)
                self._header_rate = self.requests.rate
                if self.cubic_rate is not None:  # (remembered 429s: "plenty left" adds none)
                    self.requests.level = min(self.requests.level, level)
                self._follow_cubic(now)
                if requests.limit > 0:
                    self._remaining_fraction = requests.remaining / requests.limit
            self._spent = (requests is not None and requests.remaining < 1) or (
                tokens is not None and tokens.remaining < max(1.0, cost))
            if tokens is not None:
                if self.tokens is None:
                    self.tokens = TokenBucket(UNPACED, max(tokens.limit, 1.0),
                                              tokens.remaining, now)
                self.tokens.observe(tokens, now, most=most, need=cost)

    def slots_full(self) -> bool:
        """Is the concurrency limit engaged, with every slot taken?"""
        with self._lock:
            return self.inflight >= self.concurrency.limit

    def normal_latency(self) -> float | None:
        """The longest answer time that is not read as pressure (twice the baseline plus
        50 ms); ``None`` before the first success."""
        with self._lock:
            return self._normal()

    def _normal(self) -> float | None:
        """``normal_latency`` with the lock held."""
        return None if self._baseline is None else 2 * self._baseline + _LATENCY_FLOOR

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

    def _pressure(self, now: float, pacing: float | None = None, *,
                  throttle_recency: bool = True) -> float:
        limit = max(self.concurrency.limit, 1.0)
        utilisation = max(0.0, (self.inflight + len(self._waiting)) / limit - 0.5) * 2
        throttle = 0.0
        if self._last_throttle is not None and throttle_recency:
            throttle = max(0.0, 1.0 - (now - self._last_throttle) / 10.0)
        inflation, normal = 0.0, self._normal()
        if normal is not None and self._recent is not None:
            # Jitter on sub-millisecond answers is not load (the absolute 50 ms of ``normal``)
            inflation = max(0.0, self._recent - normal) / normal
        if pacing is None:
            pacing = self._pacer_wait(0.0, now) if self.requests is not None else 0.0
        return min(1.0, max(utilisation, throttle, inflation, pacing))

    def pressure(self, now: float, *, throttle_recency: bool = True) -> float:
        """0 (calm) to 1: the highest of utilisation, throttle recency (1 right after a 429,
        0 ten seconds later), latency inflation and pacing. Without ``throttle_recency``:
        what the target shows besides its last 429 (a first retry's backoff is not widened
        by the very throttle it answers)."""
        with self._lock:
            return self._pressure(now, throttle_recency=throttle_recency)

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
                fleet=None if self.pacer is None else self.pacer.view(now),
            )
