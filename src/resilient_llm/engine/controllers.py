"""The controllers behind a target's pressure state: pure arithmetic on injected time.

* :class:`TokenBucket` — the pacer's buckets, seeded from rate-limit headers.
* :class:`Cubic` — the send rate after 429s (botocore's adaptive mode), recovering with time.
* :class:`ConcurrencyLimit` — AIMD on drops, slow start per success, :class:`Gradient2` on
  latency.
* :class:`RetryBudget` — gRPC retry throttling.

None of them locks, sleeps or reads a clock; ``engine.pressure`` composes them per target,
with ``engine.refusals`` (whether a target's 429s are a rate limit's answers).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "MIN_RATE",
    "PRODUCTIVE",
    "UNPACED",
    "ConcurrencyLimit",
    "Cubic",
    "EventRate",
    "Gradient2",
    "RateLimits",
    "RetryBudget",
    "TokenBucket",
    "estimate_tokens",
]

#: The lowest send rate any controller sets (requests per second).
MIN_RATE = 0.5
#: The fill rate of a bucket whose rate is not known yet: it never makes anyone wait.
UNPACED = 1e9
#: Recent attempt success share (an EMA over about 20 attempts) above which retries are not
#: rationed: about one success in the last 20–60 attempts.
PRODUCTIVE = 0.01
#: The longest reset a rate-limit header may set (providers' windows are a minute).
MAX_RESET = 60.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """One dimension of a provider's rate-limit headers (requests or tokens)."""

    limit: float
    remaining: float
    reset: float  # seconds until the bucket is full again

    def scaled(self, share: float) -> RateLimits:
        """The part of these limits that ``share`` of a fleet may use."""
        return RateLimits(self.limit * share, self.remaining * share, self.reset)


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

    def scale(self, factor: float) -> None:
        """Stand for ``factor`` times the limits it stood for (a fleet's share changed)."""
        self.rate = max(self.rate * factor, MIN_RATE)
        self.capacity = max(self.capacity * factor, 1.0)
        self.level = min(max(self.level, 0.0), self.capacity)

    def observe(self, limits: RateLimits, now: float, *, floor: float = 0.0,
                most: float | None = None, need: float = 1.0) -> None:
        """Re-seed from headers: the provider's view of the bucket wins, in both directions.

        The fill rate is learnt once at least half the bucket is in use — before that the
        estimate (L − R)/T rests on a token or two and a limiter that is not a token bucket
        (a concurrency cap) would make it absurdly low — and never below ``floor``, the send
        rate the provider has been accepting. Until a rate is learnt the bucket does not pace.
        A reset beyond a minute is read as a minute.

        ``most``: the longest these headers alone may make a request of ``need`` tokens wait
        (half the deadline of the call that saw them); the rate is raised to fit. A tiny
        limit spent "for a minute" (or for 99999999h) would otherwise keep the target
        unadmitted for longer than that call could wait, and nothing admitted means no fresh
        header to correct it.
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
        short = min(need, self.capacity) - self.level
        if most is not None and most > 0 and short > 0:
            self.rate = max(self.rate, short / most)


@dataclass(slots=True)
class EventRate:
    """How often something happens: an EMA (0.8) of counts per 0.5 s bucket, botocore's
    measured send rate. A type because :class:`Cubic` measures two (sends and accepts)."""

    rate: float = 0.0
    _bucket: float | None = None
    _count: int = 0
    #: The last closed half-seconds, (start, events): what :meth:`peak` looks back on.
    _closed: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def record(self, now: float) -> None:
        """One event at ``now``; the rate moves when a new bucket starts."""
        start = math.floor(now * 2) / 2
        if self._bucket is not None and start <= self._bucket:
            if start >= self._bucket - 0.5:  # (a clock a little behind: the same half-second)
                self._count += 1
            else:  # a clock that stepped back (a state that outlived its clock): start over
                self._closed.clear()
                self._bucket, self._count = start, 1
            return
        if self._bucket is not None:
            self.rate = 0.8 * (self._count / max(start - self._bucket, 0.5)) + 0.2 * self.rate
            self._closed.append((self._bucket, self._count))
        self._bucket, self._count = start, 1

    def mean(self, within: float) -> float:
        """Events per second over the closed half-seconds of the last ``within`` seconds
        before the current one (:attr:`rate` before one closed)."""
        if self._bucket is None:
            return 0.0
        counts = [(start, count) for start, count in self._closed
                  if self._bucket - within <= start < self._bucket]
        if not counts:
            return self.rate
        return sum(count for _, count in counts) / (self._bucket - counts[0][0])

    def peak(self, now: float, within: float) -> float:
        """The most events in one half-second that began within ``within`` seconds before
        ``now``, per second (0: none): a burst's own rate, whatever came (or did not) before
        or after it, unlike :attr:`rate`."""
        best = 0
        if self._bucket is not None and now - self._bucket <= within:
            best = self._count
        for start, count in self._closed:
            if count > best and now - start <= within:
                best = count
        return best * 2.0


@dataclass(slots=True)
class Cubic:
    """CUBIC send-rate control after 429s (botocore adaptive retry mode), recovering with time:
    ``rate = C·(t − K)³ + W_max`` with no cap from the measured rate, forgotten at 2·W_max."""

    C: float = 0.4
    BETA: float = 0.7
    COOLDOWN = 1.0
    w_max: float = 0.0
    k: float = 0.0
    last_throttle: float | None = None
    #: Seconds the highest accepted rate is remembered as the provider's demonstrated capacity
    #: (a quota that shrank since is found by the cuts that follow, one a second).
    PEAK_HOLD = 30.0
    #: The lowest rate: ``MIN_RATE``, or two requests per deadline of the calls throttled.
    floor: float = MIN_RATE
    _sent: EventRate = field(default_factory=EventRate)
    _accepted: EventRate = field(default_factory=EventRate)

    @property
    def measured(self) -> float:
        """The measured send rate (requests per second)."""
        return self._sent.rate

    @property
    def accepted(self) -> float:
        """The measured rate of requests the provider accepted (answered without a 429).
        After an overshoot it is what the provider let through, the better ``W_max`` (the
        send rate then counts every rejected request too)."""
        return self._accepted.rate

    @property
    def sent_lately(self) -> float:
        """Requests sent per second over the last two seconds."""
        return self._sent.mean(2.0)

    @property
    def accepted_lately(self) -> float:
        """Requests accepted per second over the last two seconds."""
        return self._accepted.mean(2.0)

    def record_send(self, now: float) -> None:
        self._sent.record(now)

    def record_accept(self, now: float) -> None:
        self._accepted.record(now)

    def demonstrated(self, now: float) -> float:
        """The most the provider accepted in one half-second within the last ``PEAK_HOLD``
        seconds, per second (0: nothing accepted).

        The rate a throttle cuts from. The measured rates are averages over time, idle time
        included, and move only when a half-second ends: after a pause, a burst's first 429
        would cut from a rate diluted by the pause (a tenth of what the provider had just
        served), and CUBIC takes many seconds to climb back: warm bursts against a 20-slot
        provider took 2-7x their ideal time, and with a 2 s deadline some ran out of it.
        """
        return self._accepted.peak(now, self.PEAK_HOLD)

    def on_throttle(self, now: float, current_rate: float | None,
                    patience: float | None = None) -> float:
        """Cut the rate for a 429; the 429s of one overshoot (within ``COOLDOWN`` seconds of
        the cut) are one signal and cut once: cut per 429, a burst of twenty in flight would
        take the rate to a thousandth of what the provider allows."""
        if patience is not None and patience > 0:
            # One throttle may not hold the target longer than half the deadline of the call
            # that saw it (the other half is the attempt's): the rate never falls below two
            # requests per such deadline.
            self.floor = max(MIN_RATE, 2.0 / patience)
        if self.last_throttle is not None and now - self.last_throttle < self.COOLDOWN:
            return max(self.BETA * self.w_max, self.floor)
        seen = self.demonstrated(now) or self.measured
        base = seen if current_rate is None else min(seen, current_rate)
        base = max(base, self.floor)
        self.w_max = base
        self.k = ((self.w_max * (1 - self.BETA)) / self.C) ** (1 / 3)
        self.last_throttle = now
        return max(self.BETA * base, self.floor)

    def rate(self, now: float) -> float | None:
        """The allowed send rate, growing with time since the last throttle; ``None`` when
        no throttle is remembered.

        Unlike botocore, the rate is not capped by twice the measured send rate: the pacer
        itself holds the measured rate down, so such a cap could never be climbed.
        """
        if self.last_throttle is None:
            return None
        t = now - self.last_throttle
        return max(self.C * (t - self.k) ** 3 + self.w_max, self.floor)

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
class Gradient2:
    """Netflix's Gradient2 latency signal: the ratio of a slow EMA of window-average RTTs
    (the "long" RTT) to the latest window's average, clamped to [0.5, 1]. Below 1, latency
    is rising: the provider is queueing what it is sent."""

    #: Samples a window needs before it counts (besides lasting ``window`` seconds).
    min_samples: int = 10
    long_rtt: float | None = None
    _samples: list[float] = field(default_factory=list)
    _window_start: float | None = None

    def sample(self, rtt: float, now: float, window: float) -> float | None:
        """Add one RTT; the gradient when this sample closes a window, else ``None``."""
        if self._window_start is None:
            self._window_start = now
        self._samples.append(rtt)
        if now - self._window_start < window or len(self._samples) < self.min_samples:
            return None
        short = max(sum(self._samples) / len(self._samples), 1e-6)  # a zero RTT is a clock artefact
        self._samples.clear()
        self._window_start = now
        if self.long_rtt is None:
            self.long_rtt = short
        else:  # a slow EMA of the window averages: Gradient2's "long" RTT
            self.long_rtt = 0.9 * self.long_rtt + 0.1 * short
            if self.long_rtt / short > 2:
                self.long_rtt *= 0.95
        return max(0.5, min(1.0, 1.5 * self.long_rtt / short))

    def restart(self) -> None:
        """Drop the open window (the limit it measured against was just replaced)."""
        self._samples.clear()
        self._window_start = None


@dataclass(slots=True)
class ConcurrencyLimit:
    """No limit until the provider pushes back; then AIMD on drops, slow start per success,
    Gradient2 on latency once per window; unlimited again after ``release_after`` calm seconds.

    ``limit`` is ``inf`` while nothing has asked for fewer requests at once: a limit guessed
    before any pushback could only hold calls in the client that the provider would serve.
    """

    limit: float = math.inf
    minimum: float = 1.0
    maximum: float = 1024.0
    #: Seconds of one cut (the drops within count once) and of one latency window.
    window: float = 1.0
    #: Seconds without drops (and with steady latency) after which slow start resumes.
    calm: float = 5.0
    #: Seconds without drops after which the limit is lifted altogether.
    release_after: float = 30.0
    latency: Gradient2 = field(default_factory=Gradient2)
    _dropped: bool = False
    _cut_since: float | None = None
    _cut_base: float = 0.0
    #: The limit before the latest cut (what the overshoot it answers was allowed).
    _before_cut: float = math.inf
    #: The limit grew since the latest cut (it is probing for more slots), and had grown
    #: before the latest cut (the overshoot that cut answers was such a probe).
    _grew: bool = False
    _grew_before_cut: bool = False
    #: When the latest drop started a cut (Gradient2's latency cuts move ``_cut_since`` too).
    _drop_cut_at: float | None = None
    _cut_drops: int = 0
    _last_drop: float | None = None
    _threshold: float = 0.0
    #: The first drop since the provider last accepted a request sent after a drop, and the
    #: limit then: a refusal that is an episode (see ``_end_refusal``) gives that limit back.
    _refused_since: float | None = None
    _before_refusal: float = math.inf
    #: The limit before the first drop read as a rate limit's since the last verdict on them
    #: (``None``: none since): :meth:`forgive_rate_cuts` gives it back.
    _before_rate_cuts: float | None = None
    #: The most requests in flight (counted as each was sent) with which one was served, in
    #: the stretch of ``SERVED_HOLD`` seconds from ``_served_since`` and in the one before
    #: (from ``_before_since``); each counts for ``2 × SERVED_HOLD`` seconds from its start.
    _served: int = 0
    _served_before: int = 0
    _served_since: float = -math.inf
    _before_since: float = -math.inf
    SERVED_HOLD = 10.0
    #: The fewest requests at once a first cut starts from.
    FEW = 4.0

    def on_drop(self, now: float = 0.0, inflight: int | None = None,
                sent_with: int | None = None, *, rate_shaped: bool = False) -> bool:
        """A drop (a 429, an overload answer, a timeout) with ``inflight`` requests out, of a
        request sent with ``sent_with`` in flight (itself included).

        A drop of a request sent with no more in flight than one the provider served lately
        (:meth:`served`) is no evidence of a limit on how many at once, and changes nothing,
        unless it is ``rate_shaped`` (a rate limit's 429: see ``engine.refusals``): fewer
        at once is then how the pacer's rate is held too (a quantized limit with a fallback,
        four workers: 5 % more attempts met 429s without it). Before any limit, nor does a
        drop sent with ``FEW`` or fewer in flight. ``True`` when the drop counted.

        One multiplicative cut (× 0.9) per window, and no more than the provider held: fewer
        than ``sent_with`` for a drop that is not ``rate_shaped`` (an overload answer, a bare
        429, a timeout), else one slot less per further drop in that window (the drops of one
        overshoot are one signal). Twenty rejections of a first wave of 40 leave 20; a burst
        of 400 of which 380 are rejected leaves 20 (not 360, not 400 · 0.9³⁸⁰).
        The first drop sets the limit from ``inflight`` (default: the limit), the evidence of
        what the provider was asked to hold; a drop of the only request in flight says nothing
        about how many at once the provider takes, and engages no limit.
        """
        if not rate_shaped and sent_with is not None and sent_with <= self.served(now):
            # The provider just served a request sent with as many in flight: this refusal
            # is not about how many at once (a pool overloaded by others, Anthropic's 529s,
            # a quota a neighbour spends), and a limit cut for it only starves the caller:
            # 30 % of requests refused at random, 20 calls/s of 0.2 s, a 2 s deadline, took
            # the limit to one and served 72 % of the calls; the official client, 92 %.
            return False
        if math.isinf(self.limit) and sent_with is not None and sent_with <= self.FEW:
            # Nor, before any limit, does one sent with a few in flight: a first limit is four
            # at least, so it would say nothing the limit could hold. At 50 calls/s of 0.2 s,
            # a chance refusal of the second request engaged four slots for ten in flight
            # before the first answer came back, and calls queued out of their 2 s deadline.
            return False
        sent = self.limit if inflight is None else float(inflight)
        if sent <= self.minimum and math.isinf(self.limit):
            # One request in flight cannot have been too many at once: the provider is short
            # of capacity for everyone's work, which the breaker and the backoff answer. A
            # limit of one would hold the calls this client makes next: after one transient
            # 529 to a lone call, a burst of 20 waited for slots the official SDK never waits
            # for, and most of it ran out of time.
            return False
        if self._refused_since is None:
            self._refused_since, self._before_refusal = now, self.limit
        if rate_shaped and self._before_rate_cuts is None:
            self._before_rate_cuts = self.limit
        if math.isinf(self.limit):
            # Nor do two or three, before anything was served: a first cut starts from four at
            # least (from so few, a chance refusal, 30 % refused at random, took the limit to
            # one while the caller sent four at once on average: its calls queued out of time).
            sent = max(sent, self.FEW)
            self.limit = min(self.maximum, max(self.minimum, sent))
            self._cut_since = None
            self.latency.restart()
        if not self._dropped:
            # The start of an episode: after it, slow start climbs back to half of where the
            # limit stood (TCP's ssthresh), so a provider that recovers is used again at once.
            self._threshold = self.limit
        self._dropped = True
        self._last_drop = now
        if self._cut_since is None or now - self._cut_since >= self.window:
            self._cut_since = self._drop_cut_at = now
            self._before_cut, self._grew_before_cut, self._grew = self.limit, self._grew, False
            self._cut_base = max(self.minimum, min(self.limit, sent))
            self._cut_drops = 0
            self.limit = max(self.minimum, self._cut_base * 0.9)
        self._cut_drops += 1
        if sent_with is None or rate_shaped:
            self.limit = max(self.minimum, min(self.limit, self._cut_base - self._cut_drops))
        else:
            # An overload answer to a request sent with ``sent_with`` in flight: the provider
            # holds fewer (four at least, as above). Counting a slot less per drop instead read
            # a brownout's refusals (latency x 10: twice the requests in flight for a while)
            # as twice the excess, and left a limit of 8 on a provider of 20 slots. (Not for a
            # rate-shaped 429: a rate limit holds no number at once, and each process of a
            # fleet counts only its own requests.)
            held = max(float(sent_with - 1), self.FEW)
            self.limit = max(self.minimum, min(self.limit, held))
        return True

    def forgive_rate_cuts(self) -> None:
        """The 429s read as a rate limit's were refused at any rate (``engine.refusals``): the
        slots their drops took come back. Kept, 30 % refused at random at 50 calls/s took the
        limit from five to one and a half; it stayed there after the rate's cut was undone,
        and for a second the calls queued out of their 2 s deadline."""
        before, self._before_rate_cuts = self._before_rate_cuts, None
        if before is not None and before > self.limit:
            self.limit = before

    def binds(self, inflight: float, now: float) -> bool:
        """Is a drop with ``inflight`` requests out the limit's own probe for more slots
        meeting the provider's edge? The limit had grown since its last cut, and ``inflight``
        is about what it allows (0.9 of it, as it stood before the cut of an overshoot still
        being answered). One request at once probes nothing; nor does a limit that a drop
        just engaged."""
        if math.isinf(self.limit) or inflight <= self.minimum:
            return False
        limit, grew = self.limit, self._grew
        if self._drop_cut_at is not None and now - self._drop_cut_at < self.window:
            limit, grew = max(limit, self._before_cut), self._grew_before_cut
        return grew and inflight >= 0.9 * limit

    def _end_refusal(self, sent: float) -> None:
        """A request sent at ``sent``, after the provider began refusing, was accepted.

        When the provider had refused for longer than a window, right up to this request, it
        was an episode (a throttle, a storm, an outage of errors) that refused every number of
        requests at once, not a measure of how many it takes: its drops had cut the limit to
        one, and slow start, paused after each 429, left callers waiting seconds after it
        ended. The limit it had before comes back at once (the official client just sends).
        A first engagement (no limit before) gives nothing back.
        """
        began, before, last = self._refused_since, self._before_refusal, self._last_drop
        self._refused_since = None
        if began is None or last is None or math.isinf(before):
            return
        if last - began > self.window and last >= sent - self.window and before > self.limit:
            self.limit = before

    def served(self, now: float) -> int:
        """The most requests in flight with which one sent lately (in the last 10–20 s) was
        served; 0 when none was."""
        hold = 2 * self.SERVED_HOLD
        best = self._served if now - self._served_since <= hold else 0
        if now - self._before_since <= hold:
            best = max(best, self._served_before)
        return best

    def on_served(self, now: float, sent_with: int) -> None:
        """A request sent with ``sent_with`` in flight (itself included) was served."""
        if now - self._served_since > self.SERVED_HOLD:  # a new stretch; the last one stays
            self._served_before, self._before_since = self._served, self._served_since
            self._served, self._served_since = sent_with, now
        elif sent_with > self._served:
            self._served = sent_with

    def on_sample(self, rtt: float, now: float, inflight: int, may_grow: bool) -> None:
        """A successful attempt's latency: slow start per success, Gradient2 per window.

        In slow start (before the first drop, or after ``calm`` seconds without one and with
        latency holding) each success while at least half the slots are used adds a slot, as
        TCP's window grows per ACK: the limit doubles per round trip, so it never holds calls
        in the client for long while the provider shows no pressure. After it, a success adds
        ``1/limit`` (one slot per round trip, congestion avoidance).
        """
        if self._refused_since is not None and now - rtt >= self._refused_since:
            self._end_refusal(sent=now - rtt)
        if math.isinf(self.limit):
            return  # unlimited: nothing is held, nothing to adjust
        if self._last_drop is not None and now - self._last_drop >= self.release_after \
                and not self._dropped:
            self.limit = math.inf  # long calm since the last pushback: lift the limit
            self._grew = self._grew_before_cut = False
            return
        if may_grow and inflight * 2 >= self.limit:
            # Slow start: a slot per success; after it, one per round trip (TCP's window).
            step = 1.0 if not self._dropped or self.limit < self._threshold else 1.0 / self.limit
            self._grew = self._grew or self.limit < self.maximum
            self.limit = min(self.maximum, self.limit + step)
        gradient = self.latency.sample(rtt, now, self.window)
        if gradient is None:
            return
        saturated = may_grow and inflight * 2 >= self.limit
        if gradient < 1.0:
            self._dropped = True  # latency is rising: slow start is over
            self._cut_since = now
        elif self._cut_since is None or now - self._cut_since >= self.calm:
            self._dropped = False  # no drop and steady latency for a while: probe again
        if saturated and not self._dropped:
            return  # slow start grows per success (above)
        grown = self.limit * gradient + (4 if saturated else 0)
        before, self.limit = self.limit, max(self.minimum,
                                             min(self.maximum, 0.8 * self.limit + 0.2 * grown))
        self._grew = self._grew or self.limit > before


@dataclass(slots=True)
class RetryBudget:
    """gRPC-style retry throttling: retries only while more than half the tokens remain."""

    max_tokens: float = 10.0
    ratio: float = 0.1
    #: Starts full (``max_tokens``).
    tokens: float = field(init=False)
    requests: int = 0
    retries: int = 0

    #: Share of recent attempts that succeeded (EMA over about 20 attempts; 0 until seen).
    success_rate: float = 0.0
    #: Attempts seen. Until the first success, or ``WARMUP`` attempts, the success rate says
    #: too little to ration anything: failures are often answered faster than successes, so
    #: a new target's first answers are failures even when most of its answers succeed.
    seen: int = 0
    succeeded_once: bool = False

    WARMUP = 50

    def __post_init__(self) -> None:
        self.tokens = self.max_tokens

    def on_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)
        self.success_rate += 0.05 * (1.0 - self.success_rate)
        self.seen += 1
        self.succeeded_once = True

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)
        self.success_rate -= 0.05 * self.success_rate
        self.seen += 1

    def can_retry(self) -> bool:
        """Above half the tokens; or while retries are productive (anything recent succeeded),
        since admission already bounds the load they add: refusing them then makes a partial
        failure worse for the caller than the official SDK's two retries (at 80 % failures,
        those still complete half the calls). Spent on a target where nothing succeeds."""
        return (self.tokens > self.max_tokens / 2 or self.success_rate >= PRODUCTIVE
                or (not self.succeeded_once and self.seen < self.WARMUP))


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
