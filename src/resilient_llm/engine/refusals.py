"""Are a target's 429s a rate limit's answers, or a share refused at any rate?

A rate limit refuses the excess of a caller above it; a provider may also refuse a share of
requests whatever the rate (a quota a neighbour spends, a pool others overload), and a bare
429 cannot say which. Paced as a limit's, such 429s starve the caller; retried as a share,
a limit's are amplified. This module decides, from counts, rates and send times only (no
clock, no I/O).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from .controllers import Cubic

__all__ = ["RefusalShare", "SendWindows", "Verdict", "over_share", "trial_verdict"]


@dataclass(slots=True)
class SendWindows:
    """Attempts sent and 429s per half-second of sending: does the share refused follow the
    send rate?

    A rate limit refuses the excess of a busier half-second: one more attempt sent is one
    more refused, so the least-squares slope of 429s on sends across half-seconds is near
    one, above the mean share refused. A share refused at any rate is the same share of a
    busy half-second as of a quiet one: the slope is the share. Traffic whose sends vary
    from one half-second to the next as much as arrivals at random do (open-loop callers,
    bursts, retries) tells them apart in a few seconds without a send held back. Judged on
    their share alone, 30 % of 50 calls/s refused at random with ``Retry-After: 1`` (a 2 s
    deadline) were cut, then tried: 87.6 % served, where the official client serves 91.2 %.

    :meth:`follows`, over the half-seconds of the last ``KEEP`` that ended a half-second ago
    or more (their 429s are in) and sent something: ``False`` before ``LEAST`` of them;
    ``True`` when the slope ``b = Σ(s − s̄)(r − r̄) / Σ(s − s̄)²`` is more than ``Z``
    standard errors above ``r̄ / s̄``; ``False`` when it is ``Z_ANY_RATE`` below one, a
    limit's slope, or before twice ``LEAST`` half-seconds (at 40 % refused at random, a
    dozen of them could not yet tell, and the share alone cut the rate); ``None`` when
    neither, or when the sends were too even to tell (their variance under ``VARIED`` of
    their mean, where arrivals at random have their mean: a steady sender, a paced one): the
    share alone must do, for a sender fast enough to try its cut (most attempts refused
    leave little room between the share and one: four processes apart against a quantized
    limit, whose 429s were 70 % of the answers, were otherwise retried as the official
    client retries them).
    """

    WIDTH = 0.5
    KEEP = 24
    LEAST = 6
    Z = 3.0
    Z_ANY_RATE = 2.0
    VARIED = 0.25
    #: Per half-second (its index: the send instant // ``WIDTH``): [sent, refused].
    _counts: dict[int, list[int]] = field(default_factory=dict)

    def sent(self, at: float) -> None:
        """An attempt was sent at ``at``."""
        key = int(at // self.WIDTH)
        counts = self._counts.get(key)
        if counts is None:
            for old in [k for k in self._counts if k <= key - self.KEEP]:
                del self._counts[old]
            counts = self._counts[key] = [0, 0]
        counts[0] += 1

    def refused(self, sent_at: float) -> None:
        """An attempt sent at ``sent_at`` was answered 429."""
        counts = self._counts.get(int(sent_at // self.WIDTH))
        if counts is not None:
            counts[1] += 1

    def follows(self, now: float) -> bool | None:
        """Do the half-seconds that sent more meet a larger share of 429s, with confidence?
        (``None``: it cannot tell; see the class.)"""
        done = int(now // self.WIDTH) - 1
        pairs = [(s, r) for key, (s, r) in self._counts.items()
                 if done - self.KEEP <= key < done and s > 0]
        k = len(pairs)
        if k < self.LEAST:
            return False
        mean_s = sum(s for s, _ in pairs) / k
        mean_r = sum(r for _, r in pairs) / k
        sxx = sum((s - mean_s) ** 2 for s, _ in pairs)
        if sxx / (k - 1) < self.VARIED * mean_s:
            return None
        slope = sum((s - mean_s) * (r - mean_r) for s, r in pairs) / sxx
        spread = sum((r - mean_r - slope * (s - mean_s)) ** 2 for s, r in pairs) / (k - 2)
        error = math.sqrt(spread / sxx)
        if slope - mean_r / mean_s > self.Z * error:
            return True
        at_any_rate = 1.0 - slope > self.Z_ANY_RATE * error
        return False if at_any_rate or k < 2 * self.LEAST else None


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
    ``WEIGHT`` per answer, about 330 answers) **and** their share follows the send rate
    (:class:`SendWindows`; over ``MOST`` of them, the share alone), and for ``MEMORY``
    seconds after one cut the send rate (a limit met again after its throttle is forgotten
    is answered at its first 429s). A burst refused outright by a limit shows it at its
    ``LEAST``-th answer; 20 % refused at random almost never does.
    The share alone read 30 % refused at random as a limit's; cut after cut, 38 % of 50
    calls/s were served against the official client's 91 %.

    A cut made on the share, by a sender fast enough to send ``TRIAL_SENDS`` attempts within
    ``TRIAL_TIME`` seconds, is also tried: no further cut until that many attempts sent since
    were answered, and meanwhile its 429s do not count against the concurrency limit. A limit
    that accepted ``a`` requests a second lately refuses about ``1 − a / r`` of attempts sent
    at ``r`` after the cut; a share refused at any rate stays ``1 − a / s``, as at the send
    rate ``s`` before the cut. Once the two predictions are three standard errors apart, a
    share of the trial's own attempts (answers to attempts sent before it began arrive late
    and are not counted: their successes, slower than 429s, read as a limit's) nearer the
    second undoes the cut (:meth:`acquitted`) and, for ``MEMORY`` seconds, 429s are a limit's
    only with confidence ``MARGIN`` above the share found refused at any rate. Anything else,
    or a cut that did not slow the sends below ``TRIAL_DROP`` of ``s`` within a second, says
    nothing, and the next cut is tried with the rate held where it was cut (:attr:`holding`).
    (A verdict "a limit's" once spared the next cuts a trial for 10 s: a chance run of
    successes at 30 % refused confirmed one, and cut after cut served 45 % of the calls.)
    Cuts the headers or the fleet called a limit's are not tried.

    A sender too slow to try a cut (below ``TRIAL_SENDS / TRIAL_TIME`` requests a second) is
    not cut on the share alone when its sends cannot tell (:meth:`limited`'s ``sent``): a
    process given every fourth call sends too evenly, and four such processes given 25
    calls/s between them, 30 % refused at random, were cut and never tried (85.7 % served
    against the official client's 91.2 %, 20 seeds).
    """

    WEIGHT = 0.003
    SHARE = 0.25
    #: Above this share (with confidence), 429s are a limit's whatever the send rate shows.
    MOST = 0.6
    Z = 2.0
    #: Answers (decayed) before a share speaks at all: a run of early 429s is chance as often.
    LEAST = 30.0
    MEMORY = 60.0
    TRIAL_SENDS = 30
    TRIAL_DROP = 0.85
    #: A trial takes at most about this long: slower senders' cuts are not tried.
    TRIAL_TIME = 1.5
    #: A trial that has not ended after this long (the sender paused) says nothing.
    STALE = 10.0
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
    _trial_answered: int = 0
    _acquitted_until: float = -math.inf
    #: The headers or the fleet said this episode's cuts are a limit's: none is tried.
    _shown: bool = False
    #: Trials in this episode so far.
    _tries: int = 0
    #: The share found refused at any rate by the last trial that undid its cut.
    _any_rate_share: float = 0.0
    #: When a 429 last cut the send rate (``-inf``: not since the last acquittal).
    last_cut: float = -math.inf
    #: Sends and 429s per half-second of sending.
    _windows: SendWindows = field(default_factory=SendWindows)

    def record(self, refused: bool, sent_at: float | None = None) -> None:
        """An answer: a 429 (``refused``) or a success, to an attempt sent at ``sent_at``
        (``None``: unknown, counted as sent now)."""
        if refused and sent_at is not None:
            self._windows.refused(sent_at)
        keep = 1.0 - self.WEIGHT
        self.answers = self.answers * keep + 1.0
        self.refused = self.refused * keep + refused
        if self._trial_start is not None and (sent_at is None or sent_at >= self._trial_start):
            self._trial_answered += 1
            self._trial_refused += refused

    def sent(self, now: float) -> None:
        """An attempt was sent at ``now``."""
        self._trial_sent += 1
        self._windows.sent(now)

    @property
    def share(self) -> float:
        """The share of recent answers that were 429s (0 before any)."""
        return self.refused / self.answers if self.answers else 0.0

    def on_rate_cut(self, now: float, sent: float, accepted: float, *,
                    shown: bool = False) -> bool:
        """A 429 cut the send rate; lately, ``sent`` requests a second were sent and
        ``accepted`` accepted. ``shown``: the provider's headers (or the fleet) said it was a
        limit's, so the cut is not tried while it is remembered. Is a cut on trial now?"""
        self._acquitted_until = -math.inf  # a cut ends an acquittal, tried or not
        self.last_cut = now
        if now >= self._until:  # the throttle was forgotten: a new episode
            self._before, self._shown = None, False
        if shown and self._before is None:
            self._shown = True
        self._until = now + self.MEMORY
        if self._shown or self._trial_start is not None:
            return self._trial_start is not None
        # The episode's rates before its first cut: a trial needs a share refused then, and
        # a sender fast enough to end it soon (5 streams a second took six seconds to try,
        # short of the slots they needed).
        if self._before is None and 0.0 <= accepted < sent and self.triable(sent):
            self._before, self._tries = (sent, accepted), 0
        if self._before is not None:
            self._trial_start, self._trial_sent, self._trial_refused = now, 0, 0
            self._trial_answered = 0
            self._tries += 1
        return self._trial_start is not None

    def acquitted(self, now: float) -> bool:
        """Did a trial find the 429s refused at any rate (its cut should be undone)?"""
        if self._before is None or self._trial_start is None:
            return now < self._acquitted_until
        (sent, accepted), n = self._before, self._trial_answered
        rate = self._trial_sent / max(now - self._trial_start, 1e-9)
        if now - self._trial_start > self.STALE:
            self._trial_start = None  # the sender paused: a stale trial says nothing
        elif rate > self.TRIAL_DROP * sent:
            if now - self._trial_start >= Cubic.COOLDOWN:
                self._trial_start = None  # the cut did not slow the sends: try the next one
        elif n >= self.TRIAL_SENDS:
            self._trial_start = None
            verdict = trial_verdict(sent, accepted, rate, n, self._trial_refused)
            if verdict.acquit:
                self._before = None
                self._acquitted_until, self._until = now + self.MEMORY, -math.inf
                self._any_rate_share = verdict.found
        return now < self._acquitted_until

    def acquit(self, now: float) -> None:
        """Others found the 429s refused at any rate (the fleet's trial of its cut): as if a
        trial of this sender's had, at the share it sees."""
        self._before, self._trial_start, self.last_cut = None, None, -math.inf
        self._acquitted_until, self._until = now + self.MEMORY, -math.inf
        self._any_rate_share = self.share

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

    def triable(self, sent: float) -> bool:
        """Is a sender of ``sent`` requests a second fast enough to try a cut (to send
        ``TRIAL_SENDS`` attempts within ``TRIAL_TIME`` seconds)?"""
        return sent * self.TRIAL_TIME >= self.TRIAL_SENDS

    def often(self) -> bool:
        """Are 429s more than ``SHARE`` of the recent answers, with confidence (whether or not
        they follow the send rate)?"""
        return over_share(self.answers, self.refused)

    def limited(self, now: float, sent: float | None = None) -> bool:
        """Are 429s a rate limit's answers now? ``sent``: requests sent a second lately
        (below ``TRIAL_SENDS / TRIAL_TIME``, sends that cannot tell do not let the share
        decide; ``None``: unknown, they do)."""
        if now < self._until:
            return True
        share = self.SHARE
        if now < self._acquitted_until:
            share = max(share, self._any_rate_share + self.MARGIN)
        if not over_share(self.answers, self.refused, share=share):
            return False
        follows = self._windows.follows(now)
        if follows is None and sent is not None and not self.triable(sent):
            follows = False
        return follows is not False or over_share(self.answers, self.refused,
                                                  share=max(share, self.MOST))


class Verdict(NamedTuple):
    """A trial's reading: could it tell (``apart``), are the 429s refused at any rate
    (``acquit``), and the share it found so (``found``)."""

    apart: bool
    acquit: bool
    found: float


def trial_verdict(sent: float, accepted: float, rate: float, answered: int,
                  refused: int) -> Verdict:
    """A cut's trial: before it, ``sent`` a second and ``accepted`` of them; since, ``answered``
    attempts sent at ``rate`` a second, ``refused`` of them 429s.

    Refused at any rate, the share stays ``1 − accepted / sent``; a limit's refuses what it did
    not accept, ``max(0, 1 − accepted / rate)``. The two are ``apart`` once three standard
    errors of the first separate them; the 429s are refused at any rate when, apart, the share
    found is nearer the first. (``fleet/lua/prelude.lua``'s ``trial`` reads the fleet's the
    same way.)"""
    anyway, limits = 1.0 - accepted / sent, max(0.0, 1.0 - accepted / rate)
    after = refused / answered
    apart = anyway - limits >= 3.0 * math.sqrt(anyway * (1.0 - anyway) / answered)
    return Verdict(apart, apart and after > (anyway + limits) / 2, max(after, anyway))


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
