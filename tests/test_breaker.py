"""The circuit breaker on injected time: trip, half-open probe, adaptive admission."""

from __future__ import annotations

import pytest

from resilient_llm import Failure, FailureClass
from resilient_llm.engine.breaker import (
    ALONE_PROBE_EVERY,
    ALONE_WARMUP,
    Breaker,
    Thresholds,
    counts_for_health,
)
from resilient_llm.testing import FakeRandom

DOWN = Failure(FailureClass.SERVER_ERROR, True, status=503)
THROTTLED = Failure(FailureClass.RATE_LIMITED, True, status=429)
BAD_REQUEST = Failure(FailureClass.INVALID_REQUEST, False, status=400)


def trip(breaker: Breaker, rng: FakeRandom, now: float = 0.0) -> None:
    for i in range(breaker.thresholds.min_calls):
        assert breaker.allow(now + i * 0.01)
        breaker.record(now + i * 0.01, DOWN, rng)


def test_opens_after_enough_failures_then_lets_exactly_one_probe_through() -> None:
    breaker, rng = Breaker(thresholds=Thresholds(break_for=5.0)), FakeRandom(fixed=0.0)
    trip(breaker, rng)
    assert breaker.state(0.1) == "open" and not breaker.allow(0.1)
    assert breaker.snapshot(0.1).open_until == pytest.approx(0.04 + 5.0)
    assert breaker.allow(5.1)  # half-open: the probe
    assert not breaker.allow(5.1)  # and only one
    breaker.record(5.2, None, rng)
    assert breaker.state(5.2) == "closed" and breaker.allow(5.2)


def test_thresholds_shared_and_tuned_in_place_take_effect_at_once() -> None:
    shared, rng = Thresholds(), FakeRandom(fixed=0.0)
    assert shared == Thresholds(window=30.0, min_calls=5, failure_ratio=0.5, break_for=5.0)
    first, second = Breaker(thresholds=shared), Breaker(thresholds=shared)
    second.thresholds.min_calls, second.thresholds.break_for = 2, 1.0  # tunes both
    for breaker in (first, second):
        trip(breaker, rng)
        assert breaker.state(0.1) == "open"
        assert breaker.snapshot(0.1).open_until == pytest.approx(0.01 + 1.0)


def test_a_failed_probe_opens_again_and_a_cancelled_probe_frees_the_slot() -> None:
    breaker, rng = Breaker(thresholds=Thresholds(break_for=1.0)), FakeRandom(fixed=0.0)
    trip(breaker, rng)
    assert breaker.allow(2.0)
    breaker.cancel_probe()
    assert breaker.allow(2.0)
    breaker.record(2.1, DOWN, rng)
    assert breaker.state(2.1) == "open"


def test_only_health_failures_count() -> None:
    assert counts_for_health(DOWN)
    assert not counts_for_health(THROTTLED) and not counts_for_health(BAD_REQUEST)
    breaker, rng = Breaker(), FakeRandom()
    for i in range(20):
        breaker.record(i * 0.1, THROTTLED if i % 2 else BAD_REQUEST, rng)
    assert breaker.state(2.0) == "closed"


def test_a_caller_without_fallback_is_admitted_while_the_target_is_partly_up() -> None:
    """Partial failure: most attempts fail, some succeed. Refusing such callers would be worse
    than the official SDK's tries; a caller with a fallback moves on."""
    breaker, rng = Breaker(thresholds=Thresholds(min_calls=4)), FakeRandom(seed=1)
    now = 0.0
    for i in range(200):  # 90 % fail, in runs of up to 18
        now += 0.01
        breaker.record(now, None if i % 19 == 0 else DOWN, rng)
    assert breaker.state(now) == "open"
    assert not breaker.allow(now)  # a caller with a fallback moves on
    assert all(breaker.allow(now, alone=True, rng=rng) for _ in range(200))


def test_a_dead_target_lets_one_caller_without_fallback_through_per_probe_interval() -> None:
    """No success in the window: the target looks down. Callers with nowhere else to go are
    refused but for one every ``ALONE_PROBE_EVERY`` (a quarter second), which probes it (not
    a trickle of doomed calls); callers with a fallback are all refused."""
    breaker, rng, every = Breaker(), FakeRandom(seed=2), ALONE_PROBE_EVERY
    for i in range(ALONE_WARMUP):
        breaker.record(i * 0.001, DOWN, rng)
    # tripped at the fifth failure (0.004 s): the first such probe one interval later
    tripped = 0.004
    assert sum(breaker.allow(tripped + every / 2, alone=True, rng=rng) for _ in range(200)) == 0
    first = tripped + every + 0.01
    assert sum(breaker.allow(first, alone=True, rng=rng) for _ in range(200)) == 1
    assert sum(breaker.allow(first + every / 2, alone=True, rng=rng) for _ in range(200)) == 0
    second = first + every + 0.01
    assert not breaker.allow(second, rng=rng)
    assert sum(breaker.allow(second, alone=True, rng=rng) for _ in range(200)) == 1
    assert breaker.state(second) == "open"


def test_a_probe_without_fallback_that_is_served_lets_such_callers_through_again() -> None:
    breaker, rng = Breaker(), FakeRandom(seed=2)
    for i in range(30):
        breaker.record(i * 0.01, DOWN, rng)
    assert breaker.allow(1.1, alone=True, rng=rng)
    breaker.record(1.2, None, rng)  # the target answered again
    assert all(breaker.allow(1.3, alone=True, rng=rng) for _ in range(50))
    assert not breaker.allow(1.3)  # callers with a fallback wait for the half-open probe


def test_a_fleets_local_breaker_probes_only_a_target_it_saw_serve() -> None:
    """A target nobody served is the fleet-wide probe's; one that served before and then went
    down is probed from each process as a lone client probes it, so its return is seen at
    once, not at the fleet's next half-open probe seconds later."""
    rng = FakeRandom(fixed=0.0)
    fleet_local = Breaker(probes_unserved=False)
    for i in range(ALONE_WARMUP):
        fleet_local.record(i * 0.001, DOWN, rng)
    assert not any(fleet_local.allow(t, alone=True, rng=rng) for t in (0.1, 0.5, 2.0))
    served = Breaker(probes_unserved=False)
    served.record(0.0, None, rng)
    for i in range(ALONE_WARMUP):
        served.record(40.0 + i * 0.001, DOWN, rng)  # down for longer than the window
    assert served.state(40.1) == "open" and not served.served_lately(40.1)
    assert served.allow(40.1 + ALONE_PROBE_EVERY, alone=True, rng=rng)
    assert not served.allow(40.1 + ALONE_PROBE_EVERY, rng=rng)  # a fallback: move on


def test_a_fleets_view_moves_the_local_breaker_through_its_public_methods() -> None:
    breaker = Breaker(thresholds=Thresholds(break_for=5.0))
    assert breaker.hold_open(0.0, 2.0)  # the fleet's circuit is open: a change seen here
    assert breaker.state(1.0) == "open" and breaker.transitions == 1
    assert not breaker.hold_open(0.5, 1.0)  # already open for longer
    assert breaker.open_left(1.0) == pytest.approx(1.0)
    assert breaker.state(2.0) == "half_open" and breaker.open_left(2.0) == 0.0
    breaker.claim_probe()
    assert breaker.probe_out and not breaker.allow(2.0)  # the probe right is taken
    seen = breaker.transitions
    breaker.stay_open(2.0, 3.0)  # another worker probes: open here, not a change of ours
    assert breaker.state(4.0) == "open" and breaker.transitions == seen
    assert breaker.allow(5.5)  # half-open again, and the probe right was given back
    breaker.close()  # the fleet's probe succeeded
    assert breaker.state(5.5) == "closed" and breaker.transitions == seen + 2
    assert breaker.snapshot(4.0).calls == 0


def test_a_fleets_local_breaker_refuses_callers_without_a_fallback_at_a_target_never_served(
) -> None:
    rng = FakeRandom(fixed=0.0)
    quiet = Breaker(thresholds=Thresholds(break_for=5.0), probes_unserved=False)
    probing = Breaker(thresholds=Thresholds(break_for=5.0))
    for breaker in (quiet, probing):
        for i in range(ALONE_WARMUP):
            breaker.record(i * 0.01, DOWN, rng)
    assert probing.allow(1.1, alone=True, rng=rng)  # one per interval, as a probe
    assert not quiet.allow(1.1, alone=True, rng=rng)  # a fleet probes fleet-wide instead


def test_a_target_that_never_succeeded_lets_callers_without_a_fallback_try_for_a_while() -> None:
    """Its first answers are often its fast failures: a target failing 90 % of requests trips
    at once, and one probe a second would take ten seconds to find the success that shows it
    is up. Callers with nowhere else to go try it for its first ``ALONE_WARMUP`` answers; a
    caller with a fallback is refused as before."""
    breaker, rng = Breaker(), FakeRandom(fixed=0.0)
    trip(breaker, rng)
    assert breaker.state(0.1) == "open"
    assert not breaker.allow(0.1, rng=rng)
    for i in range(ALONE_WARMUP - breaker.thresholds.min_calls):
        assert breaker.allow(0.1 + i * 0.001, alone=True, rng=rng)
        breaker.record(0.1 + i * 0.001, DOWN, rng)
    assert not breaker.allow(0.2, alone=True, rng=rng)  # down, as far as anyone can tell


def test_served_lately_says_whether_the_target_answered_within_the_window() -> None:
    """What lets a caller with nowhere else to go through an open circuit (a partial
    failure); a fleet's breaker asks it of its local breaker and of the fleet's window."""
    breaker, rng = Breaker(thresholds=Thresholds(break_for=5.0)), FakeRandom(fixed=0.0)
    assert not breaker.served_lately(0.0)
    breaker.record(0.5, None, rng)
    for i in range(breaker.thresholds.min_calls):
        breaker.record(1.0 + i * 0.01, DOWN, rng)
    assert breaker.state(1.1) == "open" and breaker.served_lately(1.1)
    assert breaker.allow(1.1, alone=True, rng=rng) and not breaker.allow(1.1, rng=rng)
    assert not breaker.served_lately(0.5 + breaker.thresholds.window + 0.1)


def test_an_attempt_that_was_not_the_probe_neither_closes_nor_trips_a_half_open_circuit(
) -> None:
    """A fleet lets a caller with nowhere else to go through while another worker probes: its
    answer is counted as if the circuit were open; only the probe's closes or trips it."""
    breaker, rng = Breaker(thresholds=Thresholds(break_for=1.0)), FakeRandom(fixed=0.0)
    trip(breaker, rng)
    assert breaker.state(2.0) == "half_open"
    breaker.record(2.0, None, rng, probe=False)
    assert breaker.state(2.0) == "half_open" and breaker.served_lately(2.0)
    breaker.record(2.1, DOWN, rng, probe=False)
    assert breaker.state(2.1) == "half_open"
    assert breaker.allow(2.2)  # the probe right is still there
    breaker.record(2.3, None, rng)
    assert breaker.state(2.3) == "closed"


def test_the_snapshot_counts_health_failures_in_a_row() -> None:
    breaker, rng = Breaker(), FakeRandom(fixed=0.0)
    for at, outcome, streak in ((0.0, DOWN, 1), (0.1, None, 0), (0.2, DOWN, 1),
                                (0.3, THROTTLED, 1), (0.4, BAD_REQUEST, 0), (0.5, DOWN, 1),
                                (0.6, DOWN, 2)):
        breaker.record(at, outcome, rng)
        assert breaker.snapshot(at).streak == streak, at
