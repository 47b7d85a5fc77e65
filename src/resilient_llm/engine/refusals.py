"""Are a target's 429s a rate limit's answers, or a share refused at any rate?

A rate limit refuses the excess of a caller above it; a provider may also refuse a share of
requests whatever the rate (a quota a neighbour spends, a pool others overload), and a bare
429 cannot say which. Paced as a limit's, such 429s starve the caller; retried as a share,
a limit's are amplified. This module decides, from counts and rates only (no clock, no I/O).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .controllers import Cubic

__all__ = ["RefusalShare", "over_share"]


@dataclass(slots=True)
class RefusalShare:
    """Are a target's 429s a rate limit's answers, or a share it refuses whatever the rate?

    A rate limit refuses the excess of a caller above it; a provider may also refuse a share
    of requests at any rate (a quota a neighbour spends, a pool others overload), and a bare
    429 cannot say which. Read as a rate limit, each 429 of 10 % refused at random cut the
    send rate and the concurrency limit: 34 % of 20 calls/s with a 2 s deadline were served,
    where the official client, retrying the refused ones, served 99 %. So without headers that
    say the limit is spent, 429s are a rate limit's answers when they are, with confidence,
    more than ``SHARE`` of the recent answers (:func:`over_share` over counts that decay by
    ``WEIGHT`` per answer, about 330 answers), and for ``MEMORY`` seconds after one cut the
    send rate (a limit met again after its throttle is forgotten is answered at its first
    429s). A burst met by a limit shows it at its ``LEAST``-th answer; 20 % refused at random
    almost never does (the share's bound stays near 0.2 over about 330 answers), where an
    average over 100 crossed a quarter by chance (87 % of 20 calls/s served against the
    official client's 96 %). A caller half again above a rate limit is refused a third of
    the time.

    A provider may refuse more than a quarter at any rate: 30 % of 50 calls/s refused with
    ``Retry-After: 1`` and a 2 s deadline, cut after cut took the rate to a crawl, and 38 % of
    the calls were served against the official client's 91 %. So a cut made on the share alone, by a
    sender fast enough to send ``TRIAL_SENDS`` attempts within ``TRIAL_TIME`` seconds, is
    tried: no further cut until that many more were sent, and meanwhile its 429s count
    against the concurrency limit only as a cap's. A limit that accepted ``a`` requests a
    second lately refuses about ``1 − a / r`` of attempts sent at ``r`` after the cut; a share
    refused at any rate stays ``1 − a / s``, as at the send rate ``s`` before the cut. Once
    the two predictions are three standard errors apart, a share nearer the second undoes the
    cut (:meth:`acquitted`) and, for ``MEMORY`` seconds, 429s are a limit's only with
    confidence ``MARGIN`` above the share found refused at any rate; a share within a third
    of the way from the first confirms the limit (no trial for ``RETRIAL`` seconds). Anything
    else, or a cut that did not slow the sends below ``TRIAL_DROP`` of ``s`` within a
    second, says nothing, and the next cut is tried with the rate held where it was cut
    (:attr:`holding`). Cuts the headers or the fleet called a limit's are not tried.
    """

    WEIGHT = 0.003
    SHARE = 0.25
    Z = 2.0
    #: Answers (decayed) before a share speaks at all: a run of early 429s is chance as often.
    LEAST = 30.0
    MEMORY = 60.0
    TRIAL_SENDS = 30
    TRIAL_DROP = 0.85
    #: A trial takes at most about this long: slower senders' cuts are not tried.
    TRIAL_TIME = 1.5
    RETRIAL = 10.0
    MARGIN = 0.1
    #: Answers seen, and 429s among them, each decayed by ``WEIGHT`` per later answer.
    answers: float = 0.0
    refused: float = 0.0
    _until: float = -math.inf
    #: The episode on trial: the rates of sends and of accepted requests before its first cut.
    _before: tuple[float, float] | None = None
    #: The trial of its latest cut: when, and the sends and 429s since (``None``: none runs).
    _trial_start: float | None = None
    _trial_sent: int = 0
    _trial_refused: int = 0
    _acquitted_until: float = -math.inf
    #: No trial until then: the headers or the fleet said the cuts are a limit's (until the
    #: throttle is forgotten), or a trial did (for ``RETRIAL`` seconds).
    _untried_until: float = -math.inf
    #: Trials in this episode so far.
    _tries: int = 0
    #: The share found refused at any rate by the last trial that undid its cut.
    _any_rate_share: float = 0.0

    def record(self, refused: bool) -> None:
        """An answer: a 429 (``refused``) or a success."""
        keep = 1.0 - self.WEIGHT
        self.answers = self.answers * keep + 1.0
        self.refused = self.refused * keep + refused
        self._trial_refused += refused

    def sent(self) -> None:
        """An attempt was sent."""
        self._trial_sent += 1

    @property
    def share(self) -> float:
        """The share of recent answers that were 429s (0 before any)."""
        return self.refused / self.answers if self.answers else 0.0

    def on_rate_cut(self, now: float, sent: float, accepted: float, *,
                    shown: bool = False) -> None:
        """A 429 cut the send rate; lately, ``sent`` requests a second were sent and
        ``accepted`` accepted. ``shown``: the provider's headers (or the fleet) said it was a
        limit's, so the cut is not tried while it is remembered."""
        self._acquitted_until = -math.inf  # a cut ends an acquittal, tried or not
        if now >= self._until:  # the throttle was forgotten: a new episode
            self._before, self._untried_until = None, -math.inf
        if shown and self._before is None:
            self._untried_until = math.inf
        self._until = now + self.MEMORY
        if now < self._untried_until or self._trial_start is not None:
            return
        # The episode's rates before its first cut: a trial needs a share refused then, and
        # a sender fast enough to end it soon (5 streams a second took six seconds to try,
        # short of the slots they needed).
        if self._before is None and 0.0 <= accepted < sent \
                and sent * self.TRIAL_TIME >= self.TRIAL_SENDS:
            self._before, self._tries = (sent, accepted), 0
        if self._before is not None:
            self._trial_start, self._trial_sent, self._trial_refused = now, 0, 0
            self._tries += 1

    def acquitted(self, now: float) -> bool:
        """Did a trial find the 429s refused at any rate (its cut should be undone)?"""
        if self._before is None or self._trial_start is None:
            return now < self._acquitted_until
        (sent, accepted), n = self._before, self._trial_sent
        rate = n / max(now - self._trial_start, 1e-9)
        if now - self._trial_start > self.RETRIAL:
            self._trial_start = None  # the sender paused: a stale trial says nothing
        elif rate > self.TRIAL_DROP * sent:
            if now - self._trial_start >= Cubic.COOLDOWN:
                self._trial_start = None  # the cut did not slow the sends: try the next one
        elif n >= self.TRIAL_SENDS:
            after, self._trial_start = self._trial_refused / n, None
            # Refused at any rate, the share stays; a limit's refuses what it did not accept.
            anyway, limits = 1.0 - accepted / sent, max(0.0, 1.0 - accepted / rate)
            if anyway - limits < 3.0 * math.sqrt(anyway * (1.0 - anyway) / n):
                pass  # too close to tell apart: the next cut is tried
            elif after <= limits + (anyway - limits) / 3:
                self._untried_until = now + self.RETRIAL  # a limit's
            elif after > (anyway + limits) / 2:
                self._before = None
                self._acquitted_until, self._until = now + self.MEMORY, -math.inf
                self._any_rate_share = max(after, anyway)
        return now < self._acquitted_until

    @property
    def trying(self) -> bool:
        """Is a cut on trial (no further cut until its verdict)?"""
        return self._trial_start is not None

    @property
    def holding(self) -> bool:
        """Is the rate held at the cut? While a later cut of the episode is tried: the first
        said nothing, and a rate growing back as CUBIC grows it would say nothing again. The
        first is not held: a limit met by bursts drains them as CUBIC grows back."""
        return self._trial_start is not None and self._tries > 1

    def limited(self, now: float) -> bool:
        """Are 429s a rate limit's answers now?"""
        if now < self._until:
            return True
        if now < self._acquitted_until:
            return over_share(self.answers, self.refused,
                              share=max(self.SHARE, self._any_rate_share + self.MARGIN))
        return over_share(self.answers, self.refused)


def over_share(answers: float, refused: float, share: float = RefusalShare.SHARE,
               z: float = RefusalShare.Z, least: float = RefusalShare.LEAST) -> bool:
    """Is ``refused / answers`` above ``share`` with confidence? From ``least`` answers on, its
    Wilson score lower bound at ``z`` standard deviations,
    ``(p + z²/2n − z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)``, is.
    (``fleet/lua/prelude.lua`` computes the same over the fleet's answers.)"""
    if answers < least or answers <= 0:
        return False
    p, n, z2 = refused / answers, answers, z * z
    spread = z * math.sqrt(max(0.0, p * (1 - p)) / n + z2 / (4 * n * n))
    return (p + z2 / (2 * n) - spread) / (1 + z2 / n) > share
