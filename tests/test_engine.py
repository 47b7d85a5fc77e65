"""The sans-IO decision core on an injected clock and random source: no sleeping."""

from __future__ import annotations

import statistics

import pytest

from resilient_llm import DeadlineExceeded, Failure, FailureClass, Policy
from resilient_llm.engine.call import MIN_ATTEMPT, Call, GiveUp, Send, Wait, clip_timeouts
from resilient_llm.testing import FakeClock, FakeRandom

OVERLOADED = Failure(FailureClass.OVERLOADED, True, status=529)
BAD_REQUEST = Failure(FailureClass.INVALID_REQUEST, False, status=400)


def make_call(*, deadline: float | None = 10.0, attempts: int = 4, clock: FakeClock | None = None,
              rng: FakeRandom | None = None) -> Call:
    clock = clock or FakeClock()
    return Call(
        policy=Policy(max_attempts=attempts),
        target="gpt-4.1",
        deadline_at=None if deadline is None else clock.now() + deadline,
        max_attempts=attempts,
        clock=clock,
        rng=rng or FakeRandom(fixed=0.5),
    )


def test_timeouts_are_clipped_to_the_time_left() -> None:
    assert clip_timeouts({"connect": 5.0, "read": 600.0, "write": None, "pool": 600.0}, 2.0) == {
        "connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0,
    }
    assert clip_timeouts({"connect": 1.0, "read": None}, None) == {
        "connect": 1.0, "read": None, "write": None, "pool": None,
    }
    # within 50 ms the SDK's own value passes unchanged; beyond it, clipped
    assert clip_timeouts({"connect": 2.04, "read": 1.0, "write": 2.06, "pool": 2.07}, 2.0) == {
        "connect": 2.04, "read": 1.0, "write": 2.0, "pool": 2.0,
    }
    # the read timeout within 1 s: the drivers stop reads at the deadline themselves, so the
    # SDK's 600 s under a 600 s deadline survives a busy CPU before the first send
    assert clip_timeouts({"read": 600.0, "connect": 600.0}, 599.6) == {
        "connect": 599.6, "read": 600.0, "write": 599.6, "pool": 599.6,
    }
    assert clip_timeouts({"read": 600.0}, 598.9)["read"] == 598.9  # a retry: clipped
    assert clip_timeouts(None, None) == {"connect": None, "read": None, "write": None,
                                         "pool": None}


def test_first_attempt_gets_clipped_stream_limits() -> None:
    clock = FakeClock()
    call = make_call(deadline=2.0, clock=clock)
    send = call.next_attempt({"read": 600.0})
    assert isinstance(send, Send)
    assert send.attempt == 1
    assert send.timeouts["read"] == pytest.approx(2.0)
    assert send.first_token_timeout == pytest.approx(2.0)
    assert send.idle_timeout == pytest.approx(2.0)


def test_retryable_failure_waits_then_retries_until_the_cap() -> None:
    call = make_call(attempts=3, deadline=None)
    for expected in (1, 2, 3):
        send = call.next_attempt(None)
        assert isinstance(send, Send) and send.attempt == expected
        decision = call.after_failure(OVERLOADED)
        if expected < 3:
            assert isinstance(decision, Wait) and decision.seconds > 0
    assert decision == GiveUp("attempts", OVERLOADED)
    assert call.next_attempt(None) == GiveUp("attempts", OVERLOADED)


def test_non_retryable_failure_gives_up_at_once() -> None:
    call = make_call()
    call.next_attempt(None)
    assert call.after_failure(BAD_REQUEST) == GiveUp("not_retryable", BAD_REQUEST)


def test_one_shot_bodies_are_not_replayed() -> None:
    call = make_call()
    call.next_attempt(None)
    assert call.after_failure(OVERLOADED, replayable=False).reason == "not_replayable"


def test_a_wait_that_would_end_past_the_deadline_is_not_started() -> None:
    clock = FakeClock()
    call = make_call(deadline=2.0, clock=clock)
    call.next_attempt(None)
    hinted = Failure(FailureClass.RATE_LIMITED, True, status=429, retry_after=30.0)
    assert call.after_failure(hinted) == GiveUp("deadline", hinted)
    assert clock.sleeps == []


def test_retry_after_that_fits_is_honoured() -> None:
    call = make_call(deadline=10.0, rng=FakeRandom(fixed=0.0))
    call.next_attempt(None)
    hinted = Failure(FailureClass.RATE_LIMITED, True, status=429, retry_after=1.0)
    decision = call.after_failure(hinted)
    assert isinstance(decision, Wait) and decision.seconds >= 1.0


def test_no_attempt_when_less_than_the_minimum_is_left() -> None:
    clock = FakeClock()
    call = make_call(deadline=1.0, clock=clock)
    clock.advance(1.0 - MIN_ATTEMPT / 2)
    assert call.next_attempt(None) == GiveUp("deadline", None)


def test_deadline_error_carries_cause_attempts_and_budget() -> None:
    clock = FakeClock()
    call = make_call(deadline=2.0, clock=clock)
    call.attempt_started(call.next_attempt(None))  # type: ignore[arg-type]
    clock.advance(0.5)
    call.attempt_finished(OVERLOADED, 503)
    call.after_failure(OVERLOADED, RuntimeError("upstream"))
    error = call.deadline_error()
    assert isinstance(error, DeadlineExceeded) and isinstance(error, TimeoutError)
    assert isinstance(error.cause, RuntimeError)
    assert error.budget == 2.0
    assert [a.failure for a in error.attempts] == ["overloaded"]
    assert "overloaded" in str(error)


def test_concurrent_retries_do_not_synchronise() -> None:
    """100 calls hit 529 at the same instant: their retries spread over the backoff window."""
    rng = FakeRandom(seed=7)
    clock = FakeClock()
    retry_times = []
    for _ in range(100):
        call = make_call(clock=clock, rng=rng, deadline=None)
        call.next_attempt(None)
        decision = call.after_failure(OVERLOADED)
        assert isinstance(decision, Wait)
        retry_times.append(decision.seconds)
    window = 0.5  # first retry of a throttle: U(0, 0.5 s)
    assert max(retry_times) - min(retry_times) > 0.8 * window
    # No twentieth of the window holds more than 15 % of the retries (a synchronised wave
    # would hold 100 %).
    slots = [int(t / (window / 20)) for t in retry_times]
    assert max(slots.count(s) for s in set(slots)) <= 15
    assert statistics.pstdev(retry_times) > 0.2 * window


def test_events_build_the_outcome() -> None:
    clock = FakeClock()
    call = make_call(clock=clock)
    send = call.next_attempt(None)
    assert isinstance(send, Send)
    call.attempt_started(send)
    clock.advance(0.2)
    call.attempt_finished(OVERLOADED, 503)
    decision = call.after_failure(OVERLOADED)
    assert isinstance(decision, Wait)
    clock.sleep(decision.seconds)
    call.waited(decision.seconds)
    send = call.next_attempt(None)
    assert isinstance(send, Send)
    call.attempt_started(send)
    clock.advance(0.1)
    call.attempt_finished(None, 200)
    call.emit("succeeded", target="gpt-4.1")
    result = call.record.outcome()
    assert [a.failure for a in result.attempts] == ["overloaded", None]
    assert result.attempts[1].waited_before == pytest.approx(decision.seconds)
    assert result.attempts[0].duration == pytest.approx(0.2)
    assert result.served_by == "gpt-4.1" and not result.degraded and result.finished
    assert result.retries == 1


def test_fast_frozen_init_keeps_the_dataclass_contract() -> None:
    import dataclasses

    from resilient_llm.events.bus import Event

    event = Event("succeeded", 1.5, 2, "gpt-4.1")
    assert (event.kind, event.at, event.attempt, event.target) == ("succeeded", 1.5, 2, "gpt-4.1")
    assert event == Event("succeeded", 1.5, 2, "gpt-4.1")
    assert event.detail == ""  # defaults kept
    assert Event("waited", 0.0, seconds=3.0).seconds == 3.0  # keywords still work
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.at = 2.0  # type: ignore[misc]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_enclosing_anyio_deadline_bounds_the_call(anyio_backend: str) -> None:
    import anyio.lowlevel

    from resilient_llm.engine.call import end_call, start_call

    with anyio.fail_after(3):
        inside, token = start_call(Policy(deadline=600), target="m")
        end_call(token)
        await anyio.lowlevel.checkpoint()
    outside, token = start_call(Policy(deadline=600), target="m")
    end_call(token)
    left_inside, left_outside = inside.remaining(), outside.remaining()
    assert left_inside is not None and 2.0 < left_inside <= 3.0
    assert left_outside is not None and left_outside > 590


def _one_attempt(call: Call) -> None:
    send = call.next_attempt(None)
    assert isinstance(send, Send)
    call.attempt_started(send)
    call.clock.sleep(0.25)
    call.attempt_finished(None, 200)
    call.succeeded("gpt-4.1")


def test_events_the_builtin_listener_does_not_need_are_only_folded_into_the_record() -> None:
    from resilient_llm.events import bus as _events
    from resilient_llm.telemetry import otel as _telemetry

    was_installed = _telemetry.installed()
    _telemetry.uninstall()
    seen: list[str] = []
    _events.set_builtin(lambda record, event: seen.append(event.kind),
                        lambda record: frozenset({"call_started", "attempt_started"}))
    try:
        call = make_call()
        _one_attempt(call)
        assert seen == ["attempt_finished", "succeeded"]
        (attempt,) = call.record.outcome().attempts  # the skipped start still timed it
        assert attempt.number == 1 and attempt.duration == pytest.approx(0.25)
        # A subscribed listener gets every event, and the built-in one still only its own.
        everything: list[str] = []
        unsubscribe = _events.subscribe(lambda record, event: everything.append(event.kind))
        try:
            seen.clear()
            _one_attempt(make_call())
        finally:
            unsubscribe()
        assert everything == ["call_started", "attempt_started", "attempt_finished",
                              "succeeded"]
        assert seen == ["attempt_finished", "succeeded"]
    finally:
        _events.set_builtin(None)
        if was_installed:
            _telemetry.install()


def test_without_any_listener_a_call_still_has_its_outcome() -> None:
    from resilient_llm.events import bus as _events
    from resilient_llm.telemetry import otel as _telemetry

    was_installed = _telemetry.installed()
    _telemetry.uninstall()
    try:
        call = make_call()
        assert call.record.quiet == _events.ALL_KINDS
        _one_attempt(call)
        outcome = call.record.outcome()
        assert outcome.served_by == "gpt-4.1" and outcome.finished
        assert [a.duration for a in outcome.attempts] == [pytest.approx(0.25)]
    finally:
        if was_installed:
            _telemetry.install()


def test_a_failing_quiet_decision_is_logged_and_every_event_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from resilient_llm.events import bus as _events
    from resilient_llm.telemetry import otel as _telemetry

    def broken(record: object) -> frozenset[str]:
        raise RuntimeError("a bug in the built-in listener")

    was_installed = _telemetry.installed()
    _telemetry.uninstall()
    seen: list[str] = []
    _events.set_builtin(lambda record, event: seen.append(event.kind), broken)
    try:
        _one_attempt(make_call())
    finally:
        _events.set_builtin(None)
        if was_installed:
            _telemetry.install()
    assert seen == ["call_started", "attempt_started", "attempt_finished", "succeeded"]
    assert "failed to open a call" in caplog.text


def test_a_native_trio_scope_counts_before_anyio_is_ever_imported() -> None:
    import subprocess
    import sys

    script = (
        "import sys, trio, resilient_llm\n"
        "assert 'anyio' not in sys.modules, 'the premise: nothing imported anyio yet'\n"
        "async def main():\n"
        "    with trio.move_on_after(5):\n"
        "        print(resilient_llm.remaining())\n"
        "trio.run(main)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert 4.0 < float(result.stdout) <= 5.0
