"""Whether a target's 429s are a rate limit's answers: the share rule, whether the share
follows the send rate, and the trial of a cut (``engine.refusals``), in virtual time with
seeded randomness."""

from __future__ import annotations

import random

import pytest

from resilient_llm.engine.controllers import Cubic
from resilient_llm.engine.refusals import RefusalShare, SendWindows, over_share
from tests.refusal_windows import limit_windows

SENDS = RefusalShare.TRIAL_SENDS


def trying(refusals: RefusalShare) -> bool:
    """Is a cut on trial? (A call, so that a type checker does not narrow it between steps.)"""
    return refusals.trying


def held(refusals: RefusalShare) -> bool:
    """Is the rate held at the cut? (A call, as :func:`trying`.)"""
    return refusals.holding


def limited_share(share: float = 0.3) -> RefusalShare:
    """Refusals whose recent answers were ``share`` 429s (counted as from 300 answers), in
    half-seconds whose 429s followed the send rate (a limit's, so far as that shows)."""
    refusals = RefusalShare()
    limit_windows(refusals)
    refusals.answers, refusals.refused = 300.0, 300.0 * share
    return refusals


def run_trial(refusals: RefusalShare, *, start: float, rate: float, share: float,
              rng: random.Random | None = None, sends: int = SENDS) -> float:
    """``sends`` attempts from ``start`` at ``rate`` a second, each refused with probability
    ``share`` (without ``rng``: every ``1 / share``-th, as a limit refuses its excess); the
    time of the last."""
    now, owed = start, 0.0
    for _ in range(sends):
        now += 1.0 / rate
        refusals.sent(now)
        if rng is None:
            owed += share
            refused, owed = owed >= 1.0, owed - (owed >= 1.0)
        else:
            refused = rng.random() < share
        refusals.record(refused, now)
    return now


def test_a_cut_that_leaves_the_share_as_it_was_is_undone() -> None:
    """30 % refused at any rate: 60 sent and 42 accepted a second before the cut, 40 sent a
    second after it, still 30 % refused (a limit would have refused none). Over 200 seeds the
    trial undoes the cut nearly always and lets it stand about as often as thirty sends at
    30 % show three 429s or fewer (1 %)."""
    verdicts = {"undone": 0, "stands": 0}
    for seed in range(200):
        refusals = limited_share(0.35)
        assert refusals.limited(0.0)
        refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
        assert trying(refusals) and refusals.limited(0.0)
        now = run_trial(refusals, start=0.0, rate=40.0, share=0.3, rng=random.Random(seed))
        if refusals.acquitted(now):
            verdicts["undone"] += 1
            # For a minute, 429s at the share found are not a limit's.
            assert not refusals.limited(now) and not refusals.limited(now + 59.0)
            assert refusals.acquitted(now + 59.0) and not refusals.acquitted(now + 61.0)
        else:
            assert not trying(refusals)
            refusals.on_rate_cut(now + 1.0, sent=40.0, accepted=28.0)
            verdicts["stands"] += not trying(refusals)  # (else the next cut is tried)
    assert verdicts["undone"] >= 180 and verdicts["stands"] <= 4, verdicts


def test_a_cut_after_which_the_share_falls_as_a_limits_would_stands() -> None:
    """A limit accepting 20 a second, met at 30 a second (a third refused): paced at 21 a
    second after the cut, it refuses 1 − 20/21 of them. The cut stands; the next cut is
    tried too (a chance run of successes among 429s given at random would otherwise spare
    every later cut a trial: cut after cut served 45 % of the calls)."""
    for rate in (10.0, 15.0, 20.0, 21.0):
        refusals = limited_share(0.33)
        refusals.on_rate_cut(0.0, sent=30.0, accepted=20.0)
        now = run_trial(refusals, start=0.0, rate=rate, share=max(0.0, 1.0 - 20.0 / rate))
        assert not refusals.acquitted(now), rate
        assert not trying(refusals) and refusals.limited(now)
        refusals.on_rate_cut(now + 1.0, sent=21.0, accepted=20.0)
        assert trying(refusals) and held(refusals)  # held where cut while it is tried
        assert refusals.limited(now + 60.0)


def test_a_cut_that_does_not_slow_the_sends_says_nothing_and_the_next_cut_is_tried() -> None:
    refusals = limited_share(0.3)
    refusals.on_rate_cut(0.0, sent=30.0, accepted=21.0)
    assert not held(refusals)  # the first cut grows back as CUBIC grows it
    now = run_trial(refusals, start=0.0, rate=29.0, share=0.3, rng=random.Random(1), sends=28)
    assert now < Cubic.COOLDOWN and not refusals.acquitted(now) and trying(refusals)
    refusals.sent(Cubic.COOLDOWN)  # the 29th, at the same pace, a second on: nothing learnt
    assert not refusals.acquitted(Cubic.COOLDOWN + 0.01)
    assert not trying(refusals)
    # The next cut is tried against the rates before the first.
    refusals.on_rate_cut(2.0, sent=29.0, accepted=20.0)
    assert trying(refusals) and held(refusals)  # the next is held where it was cut
    now = run_trial(refusals, start=2.0, rate=20.0, share=0.3, rng=random.Random(2))
    assert refusals.acquitted(now)


def test_predictions_too_close_to_tell_apart_decide_nothing() -> None:
    """Sends slowed from 30 to 25 a second while 20 were accepted: a limit would refuse 20 %,
    a share at any rate a third. Thirty sends cannot tell those apart at three standard
    errors, so the cut neither stands nor is undone: the next one is tried."""
    refusals = limited_share(0.33)
    refusals.on_rate_cut(0.0, sent=30.0, accepted=20.0)
    now = run_trial(refusals, start=0.0, rate=25.0, share=0.33, rng=random.Random(3))
    assert not refusals.acquitted(now) and not trying(refusals)
    refusals.on_rate_cut(now + 0.1, sent=25.0, accepted=17.0)
    assert trying(refusals)  # still the first cut's rates: the episode is on trial


def test_while_acquitted_a_share_well_above_the_one_found_is_a_limits_again() -> None:
    refusals = limited_share(0.35)
    refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
    rng = random.Random(5)
    now = run_trial(refusals, start=0.0, rate=40.0, share=0.3, rng=rng)
    assert refusals.acquitted(now) and not refusals.limited(now)
    for _ in range(400):  # a limit met on top: most attempts now refused, more of busier
        refusals.record(rng.random() < 0.7)  # half-seconds
    later = now + 20.0  # (the half-seconds of the trial forgotten)
    limit_windows(refusals, end=later, allowed=5)
    assert refusals.limited(later)
    refusals.on_rate_cut(later, sent=60.0, accepted=18.0)  # a new episode, tried anew
    assert trying(refusals) and not refusals.acquitted(later)


def test_sends_and_429s_outside_a_trial_count_for_nothing_in_the_next() -> None:
    refusals = limited_share(0.3)
    for _ in range(100):
        refusals.sent(-0.5)
        refusals.record(True, -0.5)
    refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
    now = run_trial(refusals, start=0.0, rate=40.0, share=0.3, rng=random.Random(6))
    assert refusals.acquitted(now)  # the hundred 429s before the cut were not its trial's


def test_no_trial_for_a_sender_too_slow_to_finish_one_soon_and_the_cut_is_remembered(
) -> None:
    """Thirty sends at 10 a second would hold a cut for three seconds: a stream's slots are
    needed sooner. Such cuts stand as CUBIC makes them."""
    fastest = RefusalShare.TRIAL_SENDS / RefusalShare.TRIAL_TIME
    for sent in (0.0, 10.0, 0.99 * fastest):
        refusals = limited_share(0.3)
        refusals.on_rate_cut(0.0, sent=sent, accepted=0.7 * sent)
        assert not trying(refusals) and refusals.limited(59.0)
    refusals.on_rate_cut(1.0, sent=fastest, accepted=0.7 * fastest)  # fast enough now: tried
    assert trying(refusals)


@pytest.mark.parametrize(("answers", "refused", "expected"), [
    (29.0, 29.0, False),  # too few answers to speak
    (30.0, 30.0, True),
    (300.0, 60.0, False),  # a fifth: under a quarter
    (300.0, 120.0, True),  # two fifths: over a quarter with confidence
    (300.0, 84.0, False),  # 28 %: over a quarter, but not with confidence
])
def test_the_share_rule_is_a_wilson_lower_bound(answers: float, refused: float,
                                                 expected: bool) -> None:
    assert over_share(answers, refused) is expected


def test_a_cut_the_providers_headers_or_the_fleet_called_a_limits_is_not_tried() -> None:
    """Headers that say the limit is spent are the provider's word (a burst against slot
    headers was slower by a tenth while its cuts were tried): no trial while remembered."""
    refusals = limited_share(0.35)
    refusals.on_rate_cut(0.0, sent=100.0, accepted=40.0, shown=True)
    assert not trying(refusals)
    refusals.on_rate_cut(1.0, sent=100.0, accepted=40.0)  # its next cut, by the share alone
    assert not trying(refusals)
    refusals.on_rate_cut(62.0, sent=100.0, accepted=40.0)  # forgotten: a new episode
    assert trying(refusals)


def test_a_trial_the_sender_paused_in_says_nothing_and_blocks_no_later_cut() -> None:
    refusals = limited_share(0.35)
    refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
    run_trial(refusals, start=0.0, rate=40.0, share=0.3, rng=random.Random(8), sends=10)
    assert trying(refusals)
    assert not refusals.acquitted(RefusalShare.STALE + 1.0)  # then nothing for a while
    assert not trying(refusals)


def test_no_trial_when_the_rates_before_the_cut_show_no_share_refused() -> None:
    """Answers lag the sends they answer: just after the sends slowed, more may have been
    accepted than sent in the same two seconds. No share was refused by those rates, so
    there is nothing to try (and no square root of a negative variance)."""
    for accepted in (40.0, 60.0):
        refusals = limited_share(0.35)
        refusals.on_rate_cut(0.0, sent=40.0, accepted=accepted)
        assert not trying(refusals) and refusals.limited(1.0)
        assert not refusals.acquitted(1.0)


def test_a_cut_during_an_acquittal_ends_it_and_is_not_undone() -> None:
    """After a trial undid a cut, the provider's headers say a limit is spent and the rate is
    cut again: that cut is not tried and must not be undone by the old verdict."""
    refusals = limited_share(0.35)
    refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
    now = run_trial(refusals, start=0.0, rate=40.0, share=0.3, rng=random.Random(9))
    assert refusals.acquitted(now)
    refusals.on_rate_cut(now + 1.0, sent=60.0, accepted=42.0, shown=True)
    assert not trying(refusals)
    assert not refusals.acquitted(now + 1.5) and refusals.limited(now + 1.5)


def test_429s_whose_share_grows_with_the_send_rate_follow_it() -> None:
    """Half-seconds of 4 to 26 attempts: a limit refusing all beyond ten shows it over twelve
    of them, every seed; a quarter, a third or half refused at any rate almost never does
    (at ``Z`` = 3, two seeds in a hundred at most)."""
    for seed in range(100):
        limit = SendWindows()
        limit_windows(limit, seed=seed)
        assert limit.follows(0.0), seed
    for share in (0.25, 0.33, 0.5):
        chance = 0
        for seed in range(100):
            windows = SendWindows()
            limit_windows(windows, share=share, seed=seed)
            chance += windows.follows(0.0) is True
        assert chance <= 2, (share, chance)


def test_a_steady_senders_429s_say_nothing_of_the_rate() -> None:
    """The same attempts every half-second: no busier one to compare, whatever is refused."""
    windows = SendWindows()
    limit_windows(windows, steady=True)
    assert windows.follows(0.0) is None  # the share alone must do (``RefusalShare``)


def test_only_half_seconds_whose_429s_are_in_and_recent_count() -> None:
    """The half-second under way and the one before it may still have 429s to come; those
    more than ``KEEP`` half-seconds old are forgotten."""
    windows = SendWindows()
    limit_windows(windows, end=0.0)
    assert windows.follows(0.0)
    # Seen from the last of them (-1.5 s): three of the twelve are too recent to count,
    # nine still do.
    assert windows.follows(-1.5)
    assert not windows.follows(-4.0)  # six too recent: fewer than LEAST left
    later = 0.5 * SendWindows.KEEP + 1.0
    assert not windows.follows(later)  # all of them too old
    windows.sent(later)  # and dropped once a new half-second begins
    assert len(windows._counts) == 1


def test_without_the_share_following_the_rate_429s_are_not_a_limits() -> None:
    """Half of the answers 429s, but as many refused in busy half-seconds as in quiet ones:
    no cut; the same share in half-seconds a limit shaped: a limit's."""
    at_random = RefusalShare()
    limit_windows(at_random, share=0.5)
    at_random.answers, at_random.refused = 300.0, 150.0
    assert at_random.often() and not at_random.limited(0.0)
    assert limited_share(0.5).limited(0.0)


def test_a_sender_too_slow_to_try_a_cut_needs_the_send_rate_to_show_a_limit() -> None:
    """Sends too even to tell a limit's 429s from a share refused at any rate (a process
    given every fourth call): a sender fast enough to try a cut lets the share decide (the
    trial undoes a wrong cut); one too slow to try it in ``TRIAL_TIME`` does not, but for a
    share over ``MOST``. Four processes apart given 25 calls/s between them, 30 % refused at
    random, were cut on the share alone and never tried: 85.7 % served where the official
    client served 91.2 %."""
    slow_enough = RefusalShare.TRIAL_SENDS / RefusalShare.TRIAL_TIME
    steady = RefusalShare()
    limit_windows(steady, share=0.35, steady=True)
    steady.answers, steady.refused = 300.0, 105.0
    assert steady.often() and steady._windows.follows(0.0) is None
    assert steady.limited(0.0, sent=slow_enough + 1.0)
    assert steady.limited(0.0)  # (no send rate known: the share decides, as before)
    assert not steady.limited(0.0, sent=slow_enough - 1.0)
    steady.refused = 210.0  # 70 %: bursts refused outright
    assert steady.limited(0.0, sent=slow_enough - 1.0)
    shaped = RefusalShare()  # a slow sender whose half-seconds do show a limit: cut
    limit_windows(shaped, allowed=10)
    shaped.answers, shaped.refused = 300.0, 105.0
    assert shaped._windows.follows(0.0) is True
    assert shaped.limited(0.0, sent=slow_enough - 1.0)


def test_a_trial_counts_the_answers_to_its_own_attempts_only() -> None:
    """A cut comes on a 429; the successes of attempts sent before it, slower than 429s,
    arrive during the trial. Counted, thirty 200s made 30 % refused at random look like a
    limit's drop to nothing; the trial counts only what it sent."""
    refusals = limited_share(0.35)
    refusals.on_rate_cut(0.0, sent=60.0, accepted=42.0)
    for _ in range(30):  # answers to attempts sent before the cut
        refusals.record(False, -0.05)
    assert not refusals.acquitted(0.01) and trying(refusals)  # (a release asks at each answer)
    now = run_trial(refusals, start=0.01, rate=40.0, share=0.3, rng=random.Random(5))
    assert refusals.acquitted(now)
