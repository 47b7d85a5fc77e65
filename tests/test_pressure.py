"""Pressure controllers on injected time: pacer, CUBIC, concurrency, budget, priority."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from resilient_llm._policy import Priority
from resilient_llm.engine.controllers import EventRate, Gradient2
from resilient_llm.engine.parts import Demand
from resilient_llm.engine.pressure import (
    BATCH_SHARE,
    INTERACTIVE_MEMORY,
    ConcurrencyLimit,
    Cubic,
    RateLimits,
    RetryBudget,
    TargetKey,
    TargetPressure,
    TokenBucket,
    estimate_tokens,
)
from resilient_llm.engine.refusals import RefusalShare
from resilient_llm.engine.registry import PressureRegistry
from resilient_llm.providers._ratelimits import (
    parse_anthropic,
    parse_go_duration,
    parse_openai,
)
from tests.refusal_windows import limit_windows

KEY = TargetKey.of("https://api.test:443", "sk-secret", "gpt-4.1")


# --- header parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("1h2m3s", 3723.0), ("0.5s", 0.5),
     ("20us", 2e-5), ("7", 7.0), ("", None), ("1x", None), ("-1", None), ("s1", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    result = parse_go_duration(text)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


def test_openai_headers() -> None:
    requests, tokens = parse_openai({
        "x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "1990000",
        "x-ratelimit-reset-tokens": "300ms",
    })
    assert requests is not None and tokens is not None
    assert (requests.limit, requests.remaining) == (10000, 9999)
    assert requests.reset == pytest.approx(0.006)
    assert (tokens.limit, tokens.remaining) == (2_000_000, 1_990_000)
    assert tokens.reset == pytest.approx(0.3)


def test_bad_openai_values_are_ignored_with_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="resilient_llm")
    requests, tokens = parse_openai({
        "x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "-1",
    })
    assert requests is None and tokens is None
    assert any("not a number" in r.getMessage() for r in caplog.records)


def test_anthropic_headers_use_rfc3339_resets() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    reset = (now + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    requests, tokens = parse_anthropic({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": "not a time",
    }, wall_clock=now.timestamp)
    assert requests is not None and (requests.limit, requests.remaining) == (50, 10)
    assert requests.reset == pytest.approx(30)
    assert tokens == RateLimits(40000, 39000, 0.0)


def test_anthropic_reset_is_measured_against_the_server_date_when_clocks_disagree() -> None:
    server = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    requests, _ = parse_anthropic({
        "date": "Sun, 22 Nov 2026 12:00:00 GMT",
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": (server + timedelta(seconds=5)).isoformat(),
    }, wall_clock=lambda: server.timestamp() + 3600)  # local clock an hour fast
    assert requests is not None and requests.reset == pytest.approx(5)


def test_token_estimate_counts_prompt_and_output_allowance() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 400 + \
        b'"}],"max_tokens": 256}'
    assert estimate_tokens(body) == pytest.approx(len(body) / 4 + 256)
    assert estimate_tokens(b'{"max_completion_tokens":1000}') > 1000


# --- controllers ------------------------------------------------------------------------------


def test_token_bucket_seeded_from_headers() -> None:
    bucket = TokenBucket(rate=0.5, capacity=1, level=1, updated=0.0)
    bucket.observe(RateLimits(limit=60, remaining=0, reset=30.0), now=0.0)
    assert bucket.rate == pytest.approx(2.0)  # 60 missing tokens back in 30 s
    assert bucket.wait_for(1, now=0.0) == pytest.approx(0.5)
    assert bucket.wait_for(1, now=0.5) == 0.0
    bucket.take(1, now=0.5)
    assert bucket.level == pytest.approx(0.0)


def test_cubic_decreases_on_throttle_then_recovers_cubically() -> None:
    cubic = Cubic()
    for i in range(40):  # 10 sends per second for 4 s
        cubic.record_send(i * 0.1)
    measured = cubic.measured
    assert measured > 5
    cut = cubic.on_throttle(now=4.0, current_rate=None)
    assert cut == pytest.approx(0.7 * measured)
    early, at_k, later = cubic.rate(4.1), cubic.rate(4.0 + cubic.k), cubic.rate(4.0 + 3 * cubic.k)
    assert early is not None and at_k is not None and later is not None
    assert early < at_k <= measured + 1e-9 < later or later == pytest.approx(2 * measured)
    assert at_k == pytest.approx(measured)


def test_a_throttle_after_a_pause_cuts_from_the_rate_the_provider_last_accepted() -> None:
    """A periodic batch: 2 s of 100 requests/s accepted, 2 s idle, then a burst whose first
    request meets a 429. The measured rates average the pause in (a tenth of what the provider
    had just served); the cut starts from what it demonstrably accepted."""
    cubic = Cubic()
    for i in range(200):
        cubic.record_send(i * 0.01)
        cubic.record_accept(i * 0.01 + 0.2)
    for _ in range(20):  # the next burst: twenty sent at once, after the pause
        cubic.record_send(4.2)
    peak = cubic.demonstrated(4.2)
    assert peak > 70 and cubic.measured < 0.5 * peak  # the average saw the pause
    cut = cubic.on_throttle(now=4.2, current_rate=None)
    assert cut == pytest.approx(0.7 * peak)


def test_the_peak_is_the_busiest_half_second_within_the_window() -> None:
    rate = EventRate()
    for i in range(30):  # 30 events in [0, 0.5), then 4 in [1.0, 1.5)
        rate.record(i * 0.01)
    for i in range(4):
        rate.record(1.0 + i * 0.1)
    assert rate.peak(1.4, within=30.0) == 60.0  # the busy half-second, not an average
    assert rate.peak(1.4, within=1.0) == 8.0  # only the half-second that began within 1 s
    assert rate.peak(100.0, within=30.0) == 0.0


def test_the_demonstrated_rate_is_forgotten_after_the_hold_and_capped_by_the_current_rate(
) -> None:
    cubic = Cubic()
    for i in range(100):
        cubic.record_accept(i * 0.01)
    assert cubic.demonstrated(1.0) > 50
    assert cubic.demonstrated(1.0 + Cubic.PEAK_HOLD + 1) == 0.0
    # a rate already cut (the pacer's) is the base when it is lower: cuts still compound
    assert cubic.on_throttle(now=1.0, current_rate=10.0) == pytest.approx(7.0)
    # long after: nothing demonstrated, the measured send rate is the base
    for i in range(40):
        cubic.record_send(100.0 + i * 0.1)
    assert cubic.on_throttle(now=104.0, current_rate=None) == pytest.approx(
        0.7 * cubic.measured)


def test_a_drop_binds_the_concurrency_limit_only_when_it_was_probing_for_more() -> None:
    limit = ConcurrencyLimit()
    assert not limit.binds(500, 0.0)  # unlimited: nothing holds the sending back
    limit.on_drop(0.0, inflight=20)  # engaged at 20, cut to 18
    assert limit.limit == pytest.approx(18.0)
    assert not limit.binds(20, 0.5)  # the drop that engaged it was no probe of its own
    limit.on_sample(0.2, 2.0, inflight=18, may_grow=True)  # slow start: one slot more
    assert limit.limit == pytest.approx(19.0)
    # Probing now: a drop with about what it allows out (0.9 of 19) is the probe's.
    assert limit.binds(19, 2.1) and limit.binds(18, 2.1) and not limit.binds(17, 2.1)
    limit.on_drop(2.2, inflight=20)  # that overshoot's cut: 17.1, then a slot per drop
    # Its other drops came with up to 19 out: they meet what it allowed before the cut.
    assert limit.binds(18, 2.5) and not limit.binds(17, 2.5)
    # The window over and no growth since the cut: no probe until it grows again.
    assert not limit.binds(17, 4.0)
    floor = ConcurrencyLimit(limit=1.0)
    floor.on_sample(0.2, 0.0, inflight=1, may_grow=False)
    assert not floor.binds(1, 0.0)  # one request at once probes nothing


def test_concurrency_cuts_on_drops_and_grows_only_when_used() -> None:
    limit = ConcurrencyLimit(limit=20)
    limit.on_drop(0.0)
    assert limit.limit == pytest.approx(18)
    now = 0.0
    for _ in range(3):  # three calm windows, fully used
        for _ in range(10):
            now += 0.11
            limit.on_sample(0.2, now, inflight=18, may_grow=True)
    grown = limit.limit
    assert grown > 18
    for _ in range(3):  # app-limited: no growth
        for _ in range(10):
            now += 0.11
            limit.on_sample(0.2, now, inflight=2, may_grow=True)
    assert limit.limit <= grown + 1e-9


def test_latency_inflation_shrinks_the_limit() -> None:
    limit = ConcurrencyLimit(limit=40)
    now = 0.0
    for _ in range(30):
        now += 0.11
        limit.on_sample(0.2, now, inflight=40, may_grow=True)
    peak = limit.limit
    for _ in range(60):
        now += 0.11
        limit.on_sample(1.0, now, inflight=40, may_grow=True)
    assert limit.limit < peak * 0.9


def test_slow_start_until_the_first_drop_then_back_to_where_it_stood_then_additively() -> None:
    limit = ConcurrencyLimit(limit=20)
    now = 0.0
    for _ in range(20):  # one round trip of a full limit: it doubles
        now += 0.05
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    assert limit.limit == 40
    for _ in range(10):  # a burst of drops inside one window: one cut, then a slot per drop
        limit.on_drop(now)
    assert limit.limit == 30
    for _ in range(10):
        limit.on_drop(now)
    assert limit.limit == 20  # 40 were out, 20 rejected: the provider held 20
    for _ in range(10):  # a slot per success back towards where it stood (TCP's ssthresh)
        now += 0.01
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    assert 30 <= limit.limit < 32
    for _ in range(20):
        now += 0.01
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    assert 40 <= limit.limit < 42  # there: a slot per round trip from now on
    there = limit.limit
    for _ in range(40):
        now += 0.01
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    assert limit.limit < there + 4


def test_a_refusal_episode_gives_the_limit_back_when_it_ends() -> None:
    """A 10 s throttle episode refuses every request however few are out: its drops cut the
    limit to one. The first request accepted after it, sent while drops were still coming,
    brings back the limit of before the episode (the official client just sends)."""
    limit = ConcurrencyLimit(limit=20)
    now = 5.0
    while now < 15.0:
        limit.on_drop(now, inflight=max(1, int(limit.limit)))
        now += 0.1
    assert limit.limit == 1
    limit.on_sample(0.05, now + 0.05, inflight=1, may_grow=False)  # sent after the last drop
    assert limit.limit == 20


def test_one_overshoot_is_not_an_episode() -> None:
    """Twenty of forty rejected at once, then a retry accepted, soon or seconds later: the
    provider held twenty, and the cut stands."""
    for accepted_at in (0.3, 2.1):
        limit = ConcurrencyLimit(limit=40)
        for _ in range(20):
            limit.on_drop(0.0, inflight=40)
        cut = limit.limit
        assert cut == 20
        limit.on_sample(accepted_at - 0.1, accepted_at, inflight=20, may_grow=False)
        assert limit.limit == cut


def test_slow_start_resumes_after_calm_and_never_while_app_limited() -> None:
    limit = ConcurrencyLimit(limit=20)
    limit.on_drop(0.0)
    now = 0.0
    for _ in range(70):  # 7 s of steady latency, no drop: slow start again
        now += 0.1
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    resumed = limit.limit
    assert resumed > 30
    for _ in range(30):  # few slots used: nothing to learn about more
        now += 0.1
        limit.on_sample(0.2, now, inflight=1, may_grow=True)
    assert limit.limit <= resumed


def test_retry_budget_allows_about_ten_percent() -> None:
    budget = RetryBudget()
    allowed = 0
    for _ in range(100):  # sustained failure: every attempt fails
        budget.on_failure()
        if budget.can_retry():
            allowed += 1
    assert allowed == RetryBudget.WARMUP - 1  # the first failures say too little to ration
    for _ in range(10):
        budget.on_success()
    assert budget.tokens == pytest.approx(1.0)


def test_retry_budget_starts_full_at_its_own_size() -> None:
    budget = RetryBudget(max_tokens=4.0)
    assert budget.tokens == 4.0
    budget.on_failure()
    assert budget.tokens == 3.0
    assert budget.can_retry()  # 3 of 4 tokens: above half (and still warming up)


def test_event_rate_counts_per_half_second_bucket() -> None:
    rate = EventRate()
    for i in range(10):  # 10 events in the first half second
        rate.record(0.5 + i * 0.04)
    assert rate.rate == 0.0  # a bucket counts once the next one starts
    rate.record(1.0)
    assert rate.rate == pytest.approx(0.8 * 10 / 0.5)
    rate.record(3.0)  # one event in a bucket, then two idle seconds
    assert rate.rate == pytest.approx(0.8 * 1 / 2.0 + 0.2 * 16.0)


def test_event_rate_counts_the_bucket_that_starts_at_zero() -> None:
    """A clock that starts at 0 (a fake one, a fresh simulation) has a first bucket too."""
    rate = EventRate()
    for i in range(5):
        rate.record(i * 0.1)
    rate.record(0.5)
    assert rate.rate == pytest.approx(0.8 * 5 / 0.5)


def test_event_rate_survives_a_clock_that_steps_back() -> None:
    """A state kept across clocks (a fake one restarted; the send rate a 429 asks for)
    sees time go back: an event a half-second behind counts in the current one; further
    back, the closed half-seconds start over. The mean neither divides by zero nor counts a
    half-second twice."""
    rate = EventRate()
    for now in (1000.0, 1000.1, 1002.0, 1003.0):
        rate.record(now)
    rate.record(1002.7)  # a half-second behind: counted in 1003.0
    assert rate.mean(2.0) == pytest.approx(1 / 1.0)  # from 1002.0 to 1003.0: one event
    rate.record(1003.6)
    assert rate.mean(2.0) == pytest.approx(3 / 1.5)  # and two in 1003.0
    rate.record(1000.2)  # three seconds back: start over
    assert rate.mean(2.0) == rate.rate  # nothing closed since
    rate.record(1000.6)
    assert rate.mean(2.0) == pytest.approx(1 / 0.5)  # 1000.0 alone
    assert rate.peak(1000.7, 2.0) == pytest.approx(2.0)


def test_gradient2_reports_once_per_full_window() -> None:
    latency = Gradient2(min_samples=3)
    assert latency.sample(0.2, now=0.0, window=1.0) is None
    assert latency.sample(0.2, now=0.5, window=1.0) is None
    assert latency.sample(0.2, now=1.0, window=1.0) == 1.0  # first window: long = short
    assert latency.long_rtt == pytest.approx(0.2)
    for now in (1.5, 1.8):
        assert latency.sample(0.8, now=now, window=1.0) is None
    gradient = latency.sample(0.8, now=2.0, window=1.0)  # RTTs quadrupled: latency rising
    assert gradient is not None
    assert gradient == pytest.approx(max(0.5, 1.5 * (0.9 * 0.2 + 0.1 * 0.8) / 0.8))
    latency.sample(0.2, now=2.1, window=1.0)
    latency.restart()  # the open window is dropped, the long RTT kept
    assert latency.sample(0.2, now=2.2, window=1.0) is None
    assert latency.long_rtt == pytest.approx(0.26)


def test_budget_reserve_allows_one_retry_per_second() -> None:
    state = TargetPressure(KEY, now=0.0)
    for _ in range(RetryBudget.WARMUP):
        state.budget.on_failure()
    assert state.record_retry(now=10.0) is True
    assert state.record_retry(now=10.5) is False
    assert state.record_retry(now=11.1) is True


# --- admission --------------------------------------------------------------------------------


def admit(state: TargetPressure, priority: str = "interactive", now: float = 0.0) -> bool:
    waiter = state.enqueue(priority, 0.0)  # type: ignore[arg-type]
    granted = state.try_admit(waiter, now).granted
    if not granted:
        state.cancel(waiter)
    return granted


def test_concurrency_limit_bounds_admission() -> None:
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.limit = 3
    assert [admit(state) for _ in range(4)] == [True, True, True, False]
    state.release(1.0, priority="interactive", latency=0.2, throttled=False, dropped=False,
                  succeeded=True)
    assert admit(state, now=1.0)


def test_batch_keeps_headroom_for_interactive_while_interactive_work_is_about() -> None:
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.limit = 8
    assert admit(state, "interactive")  # interactive work is about: batch keeps headroom
    batch = sum(admit(state, "batch") for _ in range(8))
    assert batch == int(8 * BATCH_SHARE)
    assert admit(state, "interactive")  # the eighth slot
    assert not admit(state, "interactive")


def test_batch_alone_may_use_every_slot() -> None:
    """With no interactive call admitted within ``INTERACTIVE_MEMORY`` seconds, a batch job
    holding slots back for nobody would drain a flood slower than the official client."""
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.limit = 8
    assert sum(admit(state, "batch") for _ in range(10)) == 8
    late = TargetPressure(KEY, now=0.0)
    late.concurrency.limit = 8
    assert late.admit_now("interactive", 1.0, 0.0) is not None
    late.release(0.1, priority="interactive", latency=0.1, throttled=False, dropped=False,
                 succeeded=True)
    now = 0.2 + INTERACTIVE_MEMORY
    assert sum(late.admit_now("batch", 1.0, now) is not None for _ in range(10)) == 8


def test_interactive_waiters_go_first() -> None:
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.limit = 1
    assert admit(state)
    batch = state.enqueue("batch", 0.0)
    interactive = state.enqueue("interactive", 0.0)
    state.release(0.5, priority="interactive", latency=0.2, throttled=False, dropped=False,
                  succeeded=True)
    assert not state.try_admit(batch, 0.5).granted
    assert state.try_admit(interactive, 0.5).granted


def test_pacer_wait_is_known_and_exact() -> None:
    state = TargetPressure(KEY, now=0.0)
    state.observe(RateLimits(limit=10, remaining=0, reset=2.0), None, now=0.0)  # 5/s
    waiter = state.enqueue("interactive", 0.0)
    admission = state.try_admit(waiter, 0.0)
    assert not admission.granted and admission.wait == pytest.approx(0.2)
    assert state.try_admit(waiter, 0.2).granted


def test_token_limit_paces_large_requests() -> None:
    state = TargetPressure(KEY, now=0.0)
    state.observe(None, RateLimits(limit=60_000, remaining=1_000, reset=59.0), now=0.0)
    waiter = state.enqueue("interactive", 5_000.0)
    admission = state.try_admit(waiter, 0.0)
    assert not admission.granted and admission.wait == pytest.approx(4.0, rel=0.01)


def test_headers_alone_never_hold_a_request_longer_than_half_the_deadline_that_saw_them() -> None:
    """A tiny limit spent "for 99999999h" (read as a minute) would pace at 0.5 requests/s and
    3 tokens a minute: a request waiting 2 s and 60 s, beyond a 1 s deadline, and nothing
    admitted means no fresh header to correct it. For the call that saw them (deadline 1 s)
    they hold the next request of its size for at most 0.5 s; a patient call's headers still
    pace as they say."""
    spent = (RateLimits(limit=2, remaining=0, reset=60.0), RateLimits(limit=3, remaining=0,
                                                                       reset=60.0))
    short = TargetPressure(KEY, now=0.0)
    short.observe(*spent, now=0.0, patience=1.0, cost=3.0)
    assert short.time_until_available(0.0, cost=3.0) == pytest.approx(0.5)
    patient = TargetPressure(KEY, now=0.0)
    patient.observe(*spent, now=0.0, patience=600.0, cost=3.0)
    assert patient.time_until_available(0.0) == pytest.approx(2.0)  # MIN_RATE: 0.5/s
    assert patient.time_until_available(0.0, cost=3.0) == pytest.approx(6.0)


def test_a_429s_retry_after_drains_the_pacer_for_at_most_half_the_deadline_that_saw_it() -> None:
    """``Retry-After: 3600`` from a target whose 429s are half its recent answers: the
    next request is due in half the deadline of the call that was told (0.5 s of 1 s), not in
    an hour."""
    for patience, due in ((1.0, 0.5), (None, 3600.0)):
        state = TargetPressure(KEY, now=0.0)
        state.observe(RateLimits(limit=60, remaining=1, reset=30.0), None, now=0.0)  # 2/s
        limit_windows(state.refusals)  # half-seconds whose 429s followed the sends
        state.refusals.answers, state.refusals.refused = 300.0, 150.0  # half: a limit's
        state.release(0.0, priority="interactive", latency=None, throttled=True, dropped=False,
                      succeeded=True, retry_after=3600.0, patience=patience)
        assert state.time_until_available(0.0) == pytest.approx(due, rel=0.01)


def test_429s_are_a_rate_limits_answers_above_a_quarter_of_answers_and_a_minute_after_a_cut(
) -> None:
    refusals = RefusalShare()
    assert not refusals.limited(0.0)  # presumed not limited until 429s show it
    for i in range(500):  # one in ten refused: a share the provider refuses at any rate
        refusals.record(i % 10 == 0)
    assert 0.05 < refusals.share < 0.15 and not refusals.limited(0.0)
    for _ in range(150):  # then every other one: a limit met, more refused when more sent
        refusals.record(True)
        refusals.record(False)
    assert refusals.share > RefusalShare.SHARE and not refusals.limited(0.0)
    limit_windows(refusals)
    assert refusals.limited(0.0)
    cold = RefusalShare()
    limit_windows(cold, allowed=3)  # a cold burst and its retries, nearly all refused
    cold.answers = cold.refused = 0.0
    for _ in range(31):  # a share speaks from 30 answers on (decayed: the 32nd)
        cold.record(True)
        assert not cold.limited(0.0)
    cold.record(True)  # more refused of the busier half-seconds: a limit's
    assert cold.limited(0.0)
    rng = random.Random(4)
    for share in (0.15, 0.2):  # refused at random: never a limit's, however long
        steady = RefusalShare()
        for _ in range(5000):
            steady.record(rng.random() < share)
            assert not steady.limited(0.0)
    calm = RefusalShare()
    # a 429 cut the send rate: its next 429s are a limit's too
    calm.on_rate_cut(10.0, sent=30.0, accepted=20.0)
    assert calm.limited(69.9) and not calm.limited(70.1)


def test_a_429_whose_headers_say_the_limit_is_spent_is_a_rate_limits_answer() -> None:
    """A provider's own headers on its 429 (``remaining: 0``) say the refusal is its limit's,
    whatever share of answers were 429s: the next request is due when ``Retry-After`` says.
    The same 429 with headers that show plenty left is read by the share alone."""
    for remaining, paced in ((0, True), (500, False)):
        state = TargetPressure(KEY, now=0.0)
        state.observe(RateLimits(limit=600, remaining=remaining, reset=30.0), None, now=0.0)
        state.release(0.0, priority="interactive", latency=None, throttled=True,
                      dropped=False, succeeded=True, retry_after=2.0, patience=30.0)
        assert (state.time_until_available(0.0) >= 2.0) is paced


def test_429s_a_target_gives_at_random_slow_nothing_until_a_quarter_of_its_answers_are() -> None:
    """A provider that refuses one request in ten whatever the rate (a quota a neighbour
    spends), with ``Retry-After: 1``: the official client retries the refused ones and serves
    99 % of 20 calls/s with a 2 s deadline. Read as a rate limit, each 429 cut the send rate
    and the concurrency limit, and 34 % were served. Below a quarter of the answers, a 429
    changes no rate, no limit and no pacer; above it, and refusing more of the busier
    half-seconds, it is a rate limit's answer again."""
    state = TargetPressure(KEY, now=0.0)
    state.observe(RateLimits(limit=3000, remaining=2000, reset=20.0), None, now=0.0)
    now = 0.0

    def answer(refused: bool, step: float = 0.05) -> None:  # 20 calls/s, 4 in flight
        nonlocal now
        now += step
        state.cubic.record_send(now)
        state.refusals.sent(now)  # (as an admission counts it)
        state.inflight = 5
        state.release(now, priority="interactive", latency=None if refused else 0.2,
                      throttled=refused, dropped=False, succeeded=not refused,
                      retry_after=1.0 if refused else None, patience=2.0, sent_with=4,
                      sent_at=now)

    for i in range(300):  # every tenth refused
        answer(i % 10 == 9)
        assert state.cubic_rate is None
        assert math.isinf(state.concurrency.limit)
        assert state.time_until_available(now) == 0.0
    assert 0.05 < state.refusals.share < RefusalShare.SHARE
    rng = random.Random(3)
    for _ in range(30):  # then a limit met: beyond ten a half-second, every one refused
        sends = rng.randint(4, 26)
        for index in range(sends):
            answer(index >= 10, 0.5 / sends)
    assert state.refusals.share > RefusalShare.SHARE
    assert state.cubic_rate is not None
    # The cut is on trial: its 429s do not hold the sender until their Retry-After, but the
    # cut rate paces it, with no burst the headers promised.
    assert state.refusals.trying and state.requests is not None
    assert state.requests.rate == pytest.approx(state.cubic_rate)
    assert state.requests.capacity == 1.0
    assert state.time_until_available(now) == 0.0
    # Unless the headers say the limit is spent: then the provider's Retry-After holds.
    state.observe(RateLimits(limit=3000, remaining=0, reset=20.0), None, now=now)
    answer(True, 0.01)
    assert state.refusals.trying and state.time_until_available(now) >= 0.9  # (1 s asked)


class _IdlePacer:
    """A pacer that never engages: the state takes its general path over its own buckets
    (the one a fleet's state takes while Redis is away) instead of the fused admission pass."""

    paces_tokens = False

    def sync(self) -> float:
        return 1.0

    def engaged(self) -> bool:
        return False

    def admits_at_once(self) -> bool:
        return True

    def refill(self, demand: Demand, now: float) -> bool:
        return False

    def wait(self, cost: float, now: float, priority: Priority) -> float | None:
        raise AssertionError("an idle pacer is never asked for a permit")

    def take(self, cost: float, now: float, priority: Priority) -> None:
        pass

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None,
                now: float) -> None:
        pass

    def refusing(self, now: float) -> bool:
        return False

    def throttled(self, now: float, *, limited: bool, spent: bool = False) -> None:
        pass

    def acquitted(self, since: float) -> bool:
        return False

    def view(self, now: float) -> None:
        return None

    def backlog(self, queued: int) -> float:
        return 0.0


class _Permits(_IdlePacer):
    """A pacer whose permits decide admission, with a share the test sets."""

    def __init__(self) -> None:
        self.share, self.due, self.taken, self.active = 1.0, 0.0, 0, True

    def sync(self) -> float:
        return self.share

    def engaged(self) -> bool:
        return self.active

    def wait(self, cost: float, now: float, priority: Priority) -> float | None:
        return self.due

    def take(self, cost: float, now: float, priority: Priority) -> None:
        self.taken += 1


class _FleetWord(_IdlePacer):
    """A pacer that says 429s are a limit's for everyone, until its fleet acquits them."""

    def __init__(self) -> None:
        self.says_limited, self.acquitted_at = True, -math.inf
        self.reports: list[tuple[bool, bool]] = []

    def refusing(self, now: float) -> bool:
        return self.says_limited

    def acquitted(self, since: float) -> bool:
        return self.acquitted_at > since

    def throttled(self, now: float, *, limited: bool, spent: bool = False) -> None:
        self.reports.append((limited, spent))


def test_a_cut_made_on_the_fleets_word_is_undone_when_the_fleets_trial_acquits_its_429s() -> None:
    """A worker that sends too little to judge its 429s cuts on the fleet's word (a
    process given a quarter of 50 calls/s, 30 % refused at random). When the fleet's trial of
    its own cut finds the share refused at any rate, the worker forgets its cut too, and its
    429s are a limit's again only well above the share it sees."""
    pacer = _FleetWord()
    state = TargetPressure(KEY, now=0.0, pacer=pacer)
    state.observe(RateLimits(limit=3000, remaining=2000, reset=20.0), None, now=0.0)
    now = 0.0

    def answer(refused: bool) -> None:  # 12.5 calls/s
        nonlocal now
        now += 0.08
        state.cubic.record_send(now)
        state.refusals.sent(now)
        state.release(now, priority="interactive", latency=None if refused else 0.1,
                      throttled=refused, dropped=False, succeeded=not refused,
                      retry_after=1.0 if refused else None, patience=2.0, sent_with=1,
                      sent_at=now)

    def cut() -> float | None:  # (read afresh: each answer may change it)
        return state.cubic_rate

    for i in range(100):
        answer(i % 10 < 3)
    assert cut() is not None and state.refusals.limited(now)
    assert pacer.reports[-1] == (True, False)  # a limit's, as the fleet says; not spent
    pacer.says_limited, pacer.acquitted_at = False, now
    answer(False)
    assert cut() is None
    assert state.time_until_available(now) == pytest.approx(0.0, abs=1e-6)
    for i in range(30):
        answer(i % 10 < 3)
    assert cut() is None and not state.refusals.limited(now)
    assert pacer.reports[-1] == (False, False)


def test_an_engaged_pacers_permits_decide_admission_over_the_own_buckets() -> None:
    pacer = _Permits()
    state = TargetPressure(KEY, now=0.0, pacer=pacer)
    state.observe(RateLimits(limit=10, remaining=0, reset=60.0), None, 0.0)  # own bucket empty
    pacer.due = 0.5
    assert state.admit_now("interactive", 0.0, 0.0) is None
    assert state.time_until_available(0.0) == 0.5
    pacer.due = 0.0
    assert state.admit_now("interactive", 0.0, 0.0) is not None
    assert pacer.taken == 1 and state.inflight == 1
    assert state.paces_tokens is False  # neither a token bucket nor a pacer that wants them


def test_a_pacers_share_scales_the_own_buckets_and_the_headers_they_learn() -> None:
    pacer = _Permits()
    pacer.active = False  # the own buckets pace
    state = TargetPressure(KEY, now=0.0, pacer=pacer)
    state.observe(RateLimits(limit=100, remaining=100, reset=60.0), None, 0.0)
    assert state.requests is not None and state.requests.capacity == 100
    pacer.share = 0.25  # apart from a fleet of four
    assert state.admit_now("interactive", 0.0, 0.0) is not None
    assert state.requests.capacity == 25
    state.observe(RateLimits(limit=100, remaining=100, reset=60.0), None, 1.0)
    assert state.requests.capacity == 25  # the headers speak for the whole fleet
    pacer.share = 1.0  # back together
    state.admit_now("interactive", 0.0, 2.0)
    assert state.requests.capacity == 100


@pytest.mark.parametrize("seed", range(8))
def test_fused_admission_agrees_with_the_general_pacer_path(seed: int) -> None:
    import random

    rng = random.Random(seed)
    fused, generic = TargetPressure(KEY, now=0.0), TargetPressure(KEY, now=0.0, pacer=_IdlePacer())
    now, seen = 0.0, set()
    for step in range(300):
        now += rng.choice((0.0, 0.001, 0.05, 0.3))
        if step % 40 == 0:  # fresh headers: a request bucket, a token bucket, or both
            requests = RateLimits(limit=20, remaining=rng.randint(0, 20), reset=2.0) \
                if rng.random() < 0.8 else None
            tokens = RateLimits(limit=5_000, remaining=rng.randint(0, 5_000), reset=10.0) \
                if rng.random() < 0.6 else None
            for state in (fused, generic):
                state.observe(requests, tokens, now)
        cost = rng.choice((0.0, 10.0, 400.0, 9_000.0))
        priority = rng.choice(("interactive", "batch"))
        answers = [state.admit_now(priority, cost, now) for state in (fused, generic)]  # type: ignore[arg-type]
        assert answers[0] == pytest.approx(answers[1])
        seen.add(answers[0] is None)
        if answers[0] is not None and rng.random() < 0.7:
            for state in (fused, generic):
                state.release(now, priority=priority, latency=0.1,  # type: ignore[arg-type]
                              throttled=False, dropped=False, succeeded=True)
        for bucket in ("requests", "tokens"):
            ours, theirs = getattr(fused, bucket), getattr(generic, bucket)
            assert (ours is None) == (theirs is None)
            if ours is not None:
                ours.refill(now)
                theirs.refill(now)
                assert ours.level == pytest.approx(theirs.level)
        assert (fused.inflight, fused.inflight_batch) == (generic.inflight, generic.inflight_batch)
    assert fused.budget.requests == generic.budget.requests > 0
    assert seen == {True, False}  # both admissions and refusals were compared


def test_throttle_raises_pressure_which_decays() -> None:
    state = TargetPressure(KEY, now=0.0)
    assert state.pressure(0.0) == 0.0
    assert admit(state)
    state.release(1.0, priority="interactive", latency=None, throttled=True, dropped=False,
                  succeeded=False)
    assert state.pressure(1.0) == pytest.approx(1.0)
    assert state.pressure(6.0) == pytest.approx(0.5)
    # a bare 429 to the only request in flight: not "too many at once", no limit
    assert math.isinf(state.concurrency.limit)
    assert state.snapshot(6.0).throttles == 1


def test_no_concurrency_limit_until_the_provider_pushes_back_and_none_after_long_calm() -> None:
    limit = ConcurrencyLimit()
    assert math.isinf(limit.limit)
    limit.on_sample(0.1, 0.0, inflight=500, may_grow=True)
    assert math.isinf(limit.limit)  # nothing signalled pressure: nothing is held
    limit.on_drop(1.0, inflight=40)
    assert limit.limit == pytest.approx(36)  # engaged at what was in flight, then cut
    now = 1.0
    while now < 30.0:
        now += 0.1
        limit.on_sample(0.1, now, inflight=2, may_grow=True)
    assert not math.isinf(limit.limit)
    now += 2.0
    limit.on_sample(0.1, now, inflight=2, may_grow=True)
    assert math.isinf(limit.limit)  # 30 s without pushback: lifted


def test_a_drop_of_the_only_request_in_flight_sets_no_limit() -> None:
    """One request in flight cannot have been too many at once: a limit of one learnt from it
    would hold a later burst the official SDK sends at once. More in flight are evidence, but
    a first cut starts from four at least: from two or three, a chance refusal left a limit of
    one or two."""
    limit = ConcurrencyLimit()
    assert limit.on_drop(0.0, inflight=1) is False
    assert math.isinf(limit.limit)
    assert limit.on_drop(0.0, inflight=3) is True
    assert limit.limit == 3.0  # from four: x 0.9, and one fewer for the drop
    limit.on_drop(2.0, inflight=1)  # an engaged limit is cut as before
    assert limit.limit == 1.0


def test_before_any_limit_a_drop_sent_with_four_or_fewer_in_flight_engages_none() -> None:
    """The first limit is four at least, so a refusal of a request sent with four or fewer in
    flight says nothing that limit would hold: at 50 calls/s of 0.2 s, a chance refusal of
    an early request (before the first answer) engaged four slots where ten were needed."""
    limit = ConcurrencyLimit()
    assert limit.on_drop(0.1, inflight=6, sent_with=4) is False
    assert math.isinf(limit.limit)
    assert limit.on_drop(0.2, inflight=8, sent_with=7) is True
    assert limit.limit == 6.0  # fewer than the seven the refused request was sent with
    assert limit.on_drop(1.5, inflight=3, sent_with=3) is True  # an engaged limit learns
    assert limit.limit < 6.0


def test_drops_of_one_overshoot_leave_what_the_provider_held_not_a_slot_less_each() -> None:
    """A brownout (answers ten times slower) doubles what is in flight for a while: the drops
    of requests sent with 21 to 28 in flight say the provider holds 20, not that each of them
    was one more too many (that left a limit of 8 on 20 slots). A burst's drops, sent with
    ever more in flight, still leave what the provider held."""
    brownout = ConcurrencyLimit()
    for sent_with in range(21, 29):
        brownout.on_drop(0.0, inflight=sent_with, sent_with=sent_with)
    assert brownout.limit == pytest.approx(21 * 0.9)  # x 0.9 from the first drop's 21, once
    burst = ConcurrencyLimit()
    for sent_with in range(21, 201):
        burst.on_drop(0.0, inflight=200, sent_with=sent_with)
    assert burst.limit == 20.0


def test_a_rate_shaped_429_counts_at_any_load_and_a_slot_less_each() -> None:
    """A 429 with ``Retry-After`` (or from a target that publishes rate limits) may be a rate
    limit: fewer at once also holds the rate, and a rate limit holds no number at once to read
    from ``sent_with`` (each process of a fleet counts only its own requests)."""
    limit = ConcurrencyLimit()
    limit.on_served(0.0, sent_with=10)
    assert limit.on_drop(1.0, inflight=8, sent_with=8, rate_shaped=True) is True
    assert limit.limit == 7.0  # from 8: x 0.9, one fewer for the drop
    limit.on_drop(1.1, inflight=7, sent_with=3, rate_shaped=True)
    assert limit.limit == 6.0  # a slot less, not "fewer than 3"


def test_a_drop_sent_with_no_more_in_flight_than_the_provider_served_cuts_nothing() -> None:
    """A refusal of a request sent with as many in flight as one the provider just served is
    not about how many at once (an overloaded shared pool, random 529s): the limit neither
    engages nor falls. One sent with more than ever served is evidence, and cuts as before."""
    limit = ConcurrencyLimit()
    limit.on_served(0.0, sent_with=6)
    assert limit.served(1.0) == 6
    assert limit.on_drop(1.0, inflight=3, sent_with=5) is False
    assert math.isinf(limit.limit)
    assert limit.on_drop(1.5, inflight=8, sent_with=8) is True
    assert limit.limit == 7.0
    assert limit.on_drop(3.0, inflight=6, sent_with=6) is False
    assert limit.limit == 7.0
    # what was served is remembered for 10 to 20 s, then forgotten
    assert limit.served(15.0) == 6
    assert limit.served(25.0) == 0
    limit.on_served(19.9, sent_with=1)  # a later stretch does not keep an old one alive
    assert limit.served(19.95) == 6 and limit.served(20.5) == 1
    assert limit.on_drop(25.0, inflight=6, sent_with=6) is True
    assert limit.limit < 7.0


def test_slow_start_climbs_back_to_half_the_old_limit_after_an_episode() -> None:
    limit = ConcurrencyLimit(limit=20)
    now = 0.0
    for _ in range(6):  # a silent outage: timeouts cut it down to 3 or so
        now += 1.0
        for _ in range(3):
            limit.on_drop(now, inflight=int(limit.limit))
    low = limit.limit
    assert low < 6
    for _ in range(12):  # the provider is back: a slot per success up to 10
        now += 0.05
        limit.on_sample(0.2, now, inflight=int(limit.limit), may_grow=True)
    assert limit.limit >= 10 > low


def test_registry_is_bounded_and_keys_hide_credentials() -> None:
    reg = PressureRegistry(maxsize=16)
    for i in range(100):
        reg.get(TargetKey.of("https://api.test:443", f"sk-{i}", "m"), 0.0)
    assert len(reg) == 16
    assert "sk-secret" not in str(KEY)


def test_concurrent_threads_and_tasks_never_exceed_the_limit() -> None:
    """Stress: 8 threads and 64 tasks hammer one target; in-flight never passes the limit."""
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.limit = 5
    state.concurrency.window = 1e9  # hold the limit still for the assertion
    peak = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def cycle() -> None:
        nonlocal peak
        waiter = state.enqueue("interactive", 0.0)
        while not state.try_admit(waiter, 0.0).granted:
            waiter.event.wait(0.01)
            waiter.event.clear()
        with lock:
            peak = max(peak, state.inflight)
        state.release(0.0, priority="interactive", latency=0.01, throttled=False,
                      dropped=False, succeeded=True)

    def worker() -> None:
        try:
            for _ in range(200):
                cycle()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def tasks() -> None:
        async def one() -> None:
            for _ in range(20):
                await asyncio.to_thread(cycle)

        await asyncio.gather(*(one() for _ in range(64)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert peak <= 5
    assert state.inflight == 0


def test_rate_limits_from_raw_headers_pick_the_providers_prefix() -> None:
    from resilient_llm.providers._ratelimits import parse_rate_limits

    raw = [(b"Content-Type", b"application/json"),
           (b"X-RateLimit-Limit-Requests", b"100"), (b"x-ratelimit-remaining-requests", b"40"),
           (b"x-ratelimit-reset-requests", b"30s")]
    requests, tokens = parse_rate_limits("openai", raw)
    assert requests == RateLimits(100, 40, 30.0) and tokens is None
    assert parse_rate_limits("anthropic", raw) == (None, None)
    assert parse_rate_limits("openai", [(b"content-type", b"text/plain")]) == (None, None)


# --- lost attempts and silent targets ---------------------------------------------------------


def _answered(state: TargetPressure, now: float, latency: float = 0.5) -> None:
    """One attempt admitted at ``now - latency`` that succeeded at ``now``."""
    assert state.admit_now("interactive", 0.0, now - latency) is not None
    state.release(now, priority="interactive", latency=latency, throttled=False,
                  dropped=False, succeeded=True)


def test_an_attempt_hung_far_past_the_normal_latency_no_longer_holds_its_slot() -> None:
    """Normal answers take 0.5 s (normal latency 1.05 s): one attempt in flight for longer
    than that says nothing of how busy the target is, so the one slot it holds is free again;
    a younger one keeps it."""
    state = TargetPressure(KEY, now=0.0)
    _answered(state, 1.0)
    state.concurrency.limit = 1.0
    assert state.admit_now("interactive", 0.0, 2.0) is not None  # it hangs
    assert state.admit_now("interactive", 0.0, 2.5) is None  # young: it holds the slot
    assert state.admit_now("interactive", 0.0, 3.2) is not None  # lost: the slot is free
    assert state.inflight == 2  # both still count as sent until they end
    waiter = state.enqueue("interactive", 0.0)
    assert not state.try_admit(waiter, 3.3).granted
    assert state.try_admit(waiter, 4.4).granted


def test_timeouts_while_the_target_answers_nobody_do_not_cut_the_concurrency_limit() -> None:
    state = TargetPressure(KEY, now=0.0)
    _answered(state, 1.0)
    assert not state.silent(1.5, 1.5)  # it answered 0.5 s ago
    assert state.silent(1.5, 5.0)  # nothing for 4 s: an outage
    _answered(state, 6.0)  # it is back
    assert state.silent(3.0, 6.5)  # an attempt sent during the silence, timing out after it
    assert not state.silent(6.2, 7.0)  # one sent since: its timeout is the usual signal
    fresh = TargetPressure(KEY, now=0.0)
    # Nothing known yet (no normal latency to go by): its timeouts count as usual.
    assert not fresh.silent(0.0, 100.0)


def test_a_release_on_another_thread_wakes_an_async_waiter_at_once() -> None:
    """A queued task behind the head polls only every second: a slot freed by a sync caller
    on another thread must reach it through its loop, not at its next poll."""
    import anyio

    from resilient_llm.transport.asynchronous import _cross_thread_wake

    state = TargetPressure(KEY, now=0.0)

    async def wait_for_a_wake_from_another_thread() -> None:
        waiter = state.enqueue("interactive", 0.0)
        waiter.loop_thread = threading.get_ident()
        waiter.async_event = anyio.Event()
        waiter.notify = _cross_thread_wake(lambda: waiter.async_event)
        waker = threading.Thread(target=waiter.wake)
        waker.start()
        with anyio.fail_after(0.5):  # nothing else would wake it: no poll runs here
            await waiter.async_event.wait()
        waker.join()

    asyncio.run(wait_for_a_wake_from_another_thread())


@pytest.mark.parametrize(("held", "slows"), [(10, False), (4, True)])
def test_a_429_at_the_concurrency_limit_cuts_the_limit_not_the_send_rate(
        held: int, slows: bool) -> None:
    """A provider of 10 slots: a drop engaged a limit of 10, and the limit probes for an 11th.
    429s with the limit's worth in flight are that probe meeting the edge; the limit answers
    them, and cutting the send rate as well paced warm bursts below what the slots serve. The
    same 429s with fewer in flight than the limit are rate-shaped: they slow the send rate
    (a cut tried, as the share alone called them a limit's)."""
    state = TargetPressure(KEY, now=0.0)
    state.observe(RateLimits(limit=100, remaining=10, reset=1.0), None, 0.0)  # headers: a rate
    for i in range(20):
        state.cubic.record_send(i * 0.05)
        state.cubic.record_accept(i * 0.05 + 0.2)
    state.concurrency.on_drop(0.5, inflight=11)
    limit_windows(state.refusals, end=2.0)  # half-seconds whose 429s followed the sends
    state.refusals.answers, state.refusals.refused = 300.0, 150.0  # half: a limit's
    limit = state.concurrency.limit
    assert limit == pytest.approx(9.9)

    def throttled(now: float) -> None:
        state.inflight = held  # the 429'd attempt among them
        state.release(now, priority="interactive", latency=None, throttled=True,
                      dropped=False, succeeded=True, retry_after=None, patience=10.0)

    def accepted(now: float) -> None:
        state.inflight = 10  # the limit's worth out: slow start adds a slot (it probes)
        state.release(now, priority="interactive", latency=0.2, throttled=False,
                      dropped=False, succeeded=True, patience=10.0)

    accepted(1.9)
    assert state.concurrency.limit > limit
    limit = state.concurrency.limit
    throttled(2.0)
    accepted(2.05)  # accepted between the 429s: they are not an episode refusing everything
    throttled(2.1)
    assert (state.cubic_rate is not None) is slows
    # The probe's 429s cut the limit; the others' cut is on trial (the share alone called
    # them a limit's), and until its verdict they take no slots.
    assert (state.concurrency.limit < limit) is not slows


@pytest.mark.parametrize("accepted_between", [False, True])
def test_throttles_with_nothing_accepted_between_do_not_slow_the_send_rate(
        accepted_between: bool) -> None:
    """Two 429s with ``Retry-After`` within seconds slow the send rate when the provider
    accepted something between them (a rate limit). With nothing accepted between, it was
    refusing every rate (a throttle episode): pacing at the floor would hold callers for
    seconds after the episode ends, when the official client is served at once."""
    state = TargetPressure(KEY, now=0.0)
    for i in range(20):
        state.cubic.record_send(10.0 + i * 0.1)  # a measured send rate
    limit_windows(state.refusals, end=12.0)  # half-seconds whose 429s followed the sends
    state.refusals.answers, state.refusals.refused = 300.0, 150.0  # half: a limit's

    def ended(now: float, *, accepted: bool) -> None:
        state.release(now, priority="interactive", latency=0.05 if accepted else None,
                      throttled=not accepted, dropped=False, succeeded=accepted,
                      retry_after=None if accepted else 1.0, patience=10.0)

    ended(12.0, accepted=False)
    if accepted_between:
        ended(12.2, accepted=True)
    ended(12.5, accepted=False)
    assert (state.cubic_rate is not None) is accepted_between


def _offer(state: TargetPressure, refuse: Callable[[float], bool], *, rate: float,
           seconds: float, start: float = 0.0) -> tuple[float, int]:
    """Offer ``rate`` attempts a second for ``seconds``; each admitted one is answered at
    once, a 429 with ``Retry-After: 1`` when ``refuse(now)``. The end, and attempts sent."""
    now, sent = start, 0
    while now < start + seconds:
        now += 1.0 / rate
        if state.admit_now("interactive", 0.0, now) is None:
            continue  # paced: this attempt waits (the caller's business)
        sent += 1
        refused = refuse(now)
        state.release(now, priority="interactive", latency=None if refused else 0.1,
                      throttled=refused, dropped=False, succeeded=not refused,
                      retry_after=1.0 if refused else None, patience=2.0, sent_with=1)
    return now, sent


def test_a_cut_for_429s_refused_at_any_rate_is_tried_and_undone() -> None:
    """30 % refused at random at 60 attempts a second: the share cuts the rate once, the
    cut is held while tried, and undone when the share stays; the pacer then admits every
    attempt offered. The trial's 429s cut no concurrency limit."""
    rng = random.Random(7)
    state = TargetPressure(KEY, now=0.0)
    now, _ = _offer(state, lambda _: rng.random() < 0.3, rate=60.0, seconds=15.0)
    assert state.refusals.acquitted(now)
    assert state.cubic_rate is None and math.isinf(state.concurrency.limit)
    _, sent = _offer(state, lambda _: rng.random() < 0.3, rate=60.0, seconds=5.0, start=now)
    assert sent >= 299  # every attempt of the next five seconds admitted at once


def test_a_cut_for_a_rate_limits_429s_is_tried_and_stands() -> None:
    """A limit of 20 a second met at 60 attempts a second: the cut is tried, stands, and the
    pacer holds the sends near the limit."""
    bucket = TokenBucket(20.0, 5.0, 5.0, 0.0)

    def refuse(now: float) -> bool:
        bucket.refill(now)
        if bucket.level < 1.0:
            return True
        bucket.level -= 1.0
        return False

    state = TargetPressure(KEY, now=0.0)
    now, _ = _offer(state, refuse, rate=60.0, seconds=15.0)
    assert state.cubic_rate is not None and not state.refusals.acquitted(now)
    _, sent = _offer(state, refuse, rate=60.0, seconds=5.0, start=now)
    assert sent <= 5 * 20 * 1.5  # paced near the limit, not at the 60 a second offered


def test_slots_cut_for_429s_read_as_a_limits_come_back_when_found_refused_at_any_rate() -> None:
    """30 % refused at random at 50 calls/s: drops read as a rate limit's took a slot each
    (five to one and a half) and the slots stayed cut after the trial undid the rate's cut;
    calls queued out of their 2 s deadline. The verdict now gives them back."""
    limit = ConcurrencyLimit()
    limit.on_served(0.0, sent_with=4)
    assert limit.on_drop(0.1, inflight=5, sent_with=6)  # a cap's evidence: not forgiven
    engaged = limit.limit
    for n, at in enumerate((2.0, 2.1, 2.2)):
        limit.on_drop(at, inflight=5 - n, sent_with=5 - n, rate_shaped=True)
    assert limit.limit < engaged - 2
    limit.forgive_rate_cuts()
    assert limit.limit == engaged
    limit.on_drop(9.0, inflight=8, sent_with=9)  # a cut that is no rate limit's
    cut = limit.limit
    limit.forgive_rate_cuts()
    assert limit.limit == cut  # nothing to give back


def test_a_429_with_retry_after_takes_no_slot_while_429s_are_a_few_of_the_answers() -> None:
    """One 429 with ``Retry-After`` among successes, sent with more in flight than any served
    so far (the first second of 50 calls/s): 30 % refused at random engaged a limit of four
    for the six at once the caller needed, and calls queued out of a 2 s deadline. A 429
    with a rate limit's hint is a cap's evidence only when 429s are over a quarter of the
    answers; a bare 429 still is at once (a cap refusing with no hint)."""
    for hint, engages in ((1.0, False), (None, True)):
        state = TargetPressure(KEY, now=0.0)
        for sent_with in (1, 2, 3):
            state.release(0.1 * sent_with, priority="interactive", latency=0.1,
                          throttled=False, dropped=False, succeeded=True, sent_with=sent_with)
        state.inflight = 6
        state.release(0.4, priority="interactive", latency=None, throttled=True,
                      dropped=False, succeeded=True, retry_after=hint, patience=2.0,
                      sent_with=6, sent_at=0.38)
        assert math.isinf(state.concurrency.limit) is not engages, hint
    often = TargetPressure(KEY, now=0.0)  # over a quarter: the hint no longer spares a slot
    often.refusals.answers, often.refusals.refused = 300.0, 150.0
    often.concurrency.on_served(0.3, sent_with=3)
    often.inflight = 6
    often.release(0.4, priority="interactive", latency=None, throttled=True, dropped=False,
                  succeeded=True, retry_after=1.0, patience=2.0, sent_with=6, sent_at=0.38)
    assert not math.isinf(often.concurrency.limit)


def test_a_cut_put_on_trial_gives_back_the_slots_its_episodes_429s_took() -> None:
    """429s read as a limit's took the slots one by one before the share-based cut that is
    tried; while it is, they are not a limit's, and the slots come back at once rather than
    after the verdict (five to one: a second and a half of calls queued out of their 2 s
    deadline)."""
    state = TargetPressure(KEY, now=0.0)
    state.concurrency.on_served(0.0, sent_with=5)
    state.concurrency.on_drop(0.1, inflight=6, sent_with=7)  # a cap's evidence: stays
    engaged = state.concurrency.limit
    for n, at in enumerate((0.5, 0.6, 0.7)):  # then drops read as a limit's
        state.concurrency.on_drop(at, inflight=5 - n, sent_with=5 - n, rate_shaped=True)
    assert state.concurrency.limit < engaged
    limit_windows(state.refusals, end=2.0)  # 429s that follow the sends, a third of them
    state.refusals.answers, state.refusals.refused = 300.0, 100.0
    for i in range(80):  # 40 sent a second, two thirds accepted: fast enough to be tried
        state.cubic.record_send(0.05 + 0.025 * i)
        if i % 3:
            state.cubic.record_accept(0.05 + 0.025 * i)
    for at, ok in ((2.0, False), (2.05, True), (2.1, False)):
        state.release(at, priority="interactive", latency=0.05 if ok else None,
                      throttled=not ok, dropped=False, succeeded=True,
                      retry_after=None if ok else 1.0, patience=10.0, sent_at=at - 0.02)
    assert state.cubic_rate is not None and state.refusals.trying
    assert state.concurrency.limit == engaged


def test_a_retry_waits_ahead_of_calls_that_began_after_it() -> None:
    """Within a priority, the call that began first is admitted first: a retry does not go
    to the back of the line behind calls that arrived while it backed off."""
    state = TargetPressure(KEY, now=0.0)
    newer = state.enqueue("interactive", 1.0, since=5.0)
    retry = state.enqueue("interactive", 1.0, since=1.0)
    batch = state.enqueue("batch", 1.0, since=0.0)
    assert state.first_in_line(retry)
    state.cancel(retry)
    assert state.first_in_line(newer)
    state.cancel(newer)
    assert state.first_in_line(batch)
