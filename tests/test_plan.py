"""The per-request plan, driven without I/O: a virtual clock, scripted attempt outcomes.

This is how a simulator drives the engine: it builds a :class:`Call` on its own clock and
random source, gives the plan its own pressure states, and answers each action itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from resilient_llm import (
    AllTargetsFailed,
    CircuitOpen,
    DeadlineExceeded,
    Policy,
    RetryBudgetExhausted,
)
from resilient_llm.engine.breaker import ALONE_PROBE_EVERY, ALONE_WARMUP
from resilient_llm.engine.call import Call, Send, Wait
from resilient_llm.engine.classify import Failure, FailureClass
from resilient_llm.engine.plan import (
    REFUSAL_PATIENCE,
    Admit,
    Admitted,
    Failed,
    Plan,
    Raise,
    Refused,
    Reply,
    Return,
    Served,
)
from resilient_llm.engine.pressure import RateLimits, TargetKey, TargetPressure
from resilient_llm.engine.queue import HEAD_POLL, LINE_POLL
from resilient_llm.testing import FakeClock, FakeRandom

SERVER_ERROR = Failure(FailureClass.SERVER_ERROR, True)
OVERLOADED = Failure(FailureClass.OVERLOADED, True)
AUTH = Failure(FailureClass.AUTH, False)


def _plan(clock: FakeClock, *, model: str | None = "m", deadline: float = 30.0,
          **policy: object) -> tuple[Plan, dict[str | None, TargetPressure]]:
    call = Call(policy=Policy(**policy), target=model, deadline_at=clock.now() + deadline,
                max_attempts=4, clock=clock, rng=FakeRandom(fixed=0.5))
    states: dict[str | None, TargetPressure] = {}

    def state_of(name: str | None) -> TargetPressure:
        if name not in states:
            states[name] = TargetPressure(TargetKey.of("sim://provider", "key", name),
                                          clock.now())
        return states[name]

    plan = Plan(call, states=state_of, requested=None, replayable=True, cost=lambda: 10.0)
    return plan, states


class _Error(Exception):
    pass


def _queue(plan: Plan, admit: Admit, clock: FakeClock) -> Admitted | Refused:
    """The drivers' admission queue on the fake clock: ask, sleep what the plan says (a slot
    wait is polled every 10 ms, as nothing else runs to wake it; at least 0.1 ms, as a shorter
    wait at this time would not advance the clock)."""
    place = plan.enqueue(admit)
    while True:
        turn = place.turn()
        if isinstance(turn, (Admitted, Refused)):
            return turn
        clock.sleep(turn if turn is not None else max(1e-4, place.poll(0.01)))


def _drive(plan: Plan, answer: Callable[[Send], Served | Failed],
           clock: FakeClock, *, queue: bool = False) -> tuple[object, list[object]]:
    """A minimal driver: performs every action, returns (result, actions seen). ``queue``:
    admission waits run the plan's queue rules on the clock (else they are granted at once)."""
    actions: list[object] = []
    flow = plan.run()
    action = next(flow)
    while True:
        actions.append(action)
        if isinstance(action, Return):
            return action.value, actions
        if isinstance(action, Raise):
            return action.error, actions
        reply: Reply = None
        if isinstance(action, Send):
            reply = answer(action)
        elif isinstance(action, Wait):
            clock.sleep(action.seconds)
        else:
            assert isinstance(action, Admit)
            reply = _queue(plan, action, clock) if queue else Admitted(0.0, None)
        action = flow.send(reply)


def _script(*outcomes: Failure | None) -> Callable[[Send], Served | Failed]:
    replies: Iterator[Failure | None] = iter(outcomes)

    def answer(send: Send) -> Served | Failed:
        failure = next(replies)
        if failure is None:
            return Served(f"response from {send.target} #{send.attempt}")
        return Failed(failure, f"error response #{send.attempt}", _Error(failure.kind.value))
    return answer


def test_a_failed_attempt_is_retried_after_a_jittered_wait_on_the_virtual_clock() -> None:
    clock = FakeClock()
    plan, _ = _plan(clock)
    result, actions = _drive(plan, _script(SERVER_ERROR, None), clock)
    assert result == "response from m #2"
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["Send", "Wait", "Send", "Return"]
    wait = actions[1]
    assert isinstance(wait, Wait) and wait.seconds > 0
    assert clock.sleeps == [wait.seconds]
    assert plan.call.attempts == 2


def test_the_plan_gives_the_last_error_response_back_when_it_gives_up() -> None:
    clock = FakeClock()
    plan, _ = _plan(clock)
    result, actions = _drive(plan, _script(AUTH), clock)
    assert result == "error response #1"  # the SDK raises its own error for it
    assert [type(a).__name__ for a in actions] == ["Send", "Return"]


def test_the_attempt_cap_ends_the_call_with_the_last_response() -> None:
    clock = FakeClock()
    plan, _ = _plan(clock)
    result, actions = _drive(plan, _script(*[SERVER_ERROR] * 4), clock)
    assert result == "error response #4"
    assert sum(isinstance(a, Send) for a in actions) == 4


def test_overload_moves_to_the_fallback_at_once_and_fails_over_every_target() -> None:
    clock = FakeClock()
    plan, states = _plan(clock, fallbacks={"m": ["f"]})
    result, actions = _drive(plan, _script(OVERLOADED, None), clock)
    assert result == "response from f #2"
    assert [type(a).__name__ for a in actions] == ["Send", "Send", "Return"]  # no wait
    assert set(states) == {"m", "f"}
    assert plan.call.target == "f"

    plan, _ = _plan(FakeClock(), fallbacks={"m": ["f"]})
    error, _ = _drive(plan, _script(OVERLOADED, AUTH), clock)
    assert isinstance(error, AllTargetsFailed)
    assert set(error.causes) == {"m", "f"}


def test_no_wait_is_started_that_would_end_past_the_deadline() -> None:
    clock = FakeClock()
    plan, _ = _plan(clock)

    def slow(send: Send) -> Served | Failed:
        clock.advance(29.99)  # the attempt used up the budget
        return Failed(SERVER_ERROR, "error", _Error("500"))

    error, actions = _drive(plan, slow, clock)
    assert isinstance(error, DeadlineExceeded)
    assert not any(isinstance(a, Wait) for a in actions)
    assert isinstance(error.__cause__, _Error)


def _open_circuit(clock: FakeClock) -> tuple[Plan, dict[str | None, TargetPressure]]:
    """A plan for a target whose circuit opened on ``ALONE_WARMUP`` failures (nothing ever
    succeeded), with no fallback."""
    plan, states = _plan(clock)
    breaker = states["m"].breaker
    for _ in range(ALONE_WARMUP):
        breaker.record(clock.now(), SERVER_ERROR, FakeRandom(fixed=0.5))
    return Plan(plan.call, states=lambda name: states["m"], requested=None, replayable=True,
                cost=lambda: 0.0), states


def test_an_open_circuit_without_fallback_lets_the_call_probe_as_the_sdk_would_retry(
) -> None:
    """Refused by an open circuit with nowhere else to go, a call waits for the target's next
    probe (one caller per ``ALONE_PROBE_EVERY``) instead of failing at once, sending nothing
    meanwhile; its attempts go out one per probe interval at most, and it ends with the
    provider's own last answer, as the official SDK's retries would (about as soon)."""
    clock = FakeClock()
    plan, _ = _open_circuit(clock)
    start = clock.now()
    result, actions = _drive(plan, _script(*[SERVER_ERROR] * 10), clock)
    assert result == "error response #4"  # the provider's answer, not CircuitOpen
    assert isinstance(actions[0], Wait) and actions[0].reason == "circuit"
    sent, elapsed = [], 0.0
    for action in actions:
        if isinstance(action, Wait):
            elapsed += action.seconds
        elif isinstance(action, Send):
            sent.append(elapsed)
    assert len(sent) == 4
    assert all(b - a >= ALONE_PROBE_EVERY - 1e-9 for a, b in itertools.pairwise(sent))
    assert clock.now() - start <= REFUSAL_PATIENCE + 1e-9


def test_a_call_held_by_an_open_circuit_is_served_when_its_probe_succeeds() -> None:
    clock = FakeClock()
    plan, states = _open_circuit(clock)
    result, actions = _drive(plan, _script(None), clock)
    assert result == "response from m #1"
    assert [type(a).__name__ for a in actions] == ["Wait", "Send", "Return"]
    # it answered: callers with nowhere else to go are let through again at once
    assert states["m"].breaker.allow(clock.now(), alone=True)


def test_a_short_deadline_fails_an_open_circuit_at_once() -> None:
    clock = FakeClock()
    plan, states = _plan(clock, deadline=0.04)
    breaker = states["m"].breaker
    for _ in range(ALONE_WARMUP):
        breaker.record(clock.now(), SERVER_ERROR, FakeRandom(fixed=0.5))
    plan = Plan(plan.call, states=lambda name: states["m"], requested=None, replayable=True,
                cost=lambda: 0.0)
    error, actions = _drive(plan, _script(), clock)
    assert isinstance(error, CircuitOpen)
    assert len(actions) == 1  # no time for a wait and an attempt: nothing to hold for


def _spent_budget(state: TargetPressure, now: float) -> None:
    """Sustained failures spent the target's retry budget and its reserve of this second."""
    state.budget.tokens = 5.0
    state.budget.success_rate = 0.0
    state.budget.seen = state.budget.WARMUP
    state._last_reserve_retry = now


def test_a_spent_budget_holds_the_call_then_asks_again_and_keeps_the_servers_hint() -> None:
    """A retry the budget refuses is held (sending nothing) for as long as the official SDK's
    retries would take, or as long as the server's ``Retry-After`` when that is longer; the
    budget is asked again after it (its reserve allows one retry a second)."""
    clock = FakeClock()
    plan, states = _plan(clock)
    _spent_budget(states["m"], clock.now())
    # (a 503 with a hint: a 429 says the target works, and does not spend the budget)
    hinted = Failure(FailureClass.SERVER_ERROR, True, status=503, retry_after=3.0)
    result, actions = _drive(plan, _script(hinted, None), clock)
    assert result == "response from m #2"
    holds = [a for a in actions if isinstance(a, Wait)]
    assert [h.reason for h in holds] == ["budget"]
    assert holds[0].seconds == pytest.approx(3.0)  # the hint, beyond REFUSAL_PATIENCE
    # Without a hint: the patience, and a budget still spent after it ends the call.
    clock2 = FakeClock()
    plan2, states2 = _plan(clock2)
    _spent_budget(states2["m"], clock2.now())
    states2["m"]._last_reserve_retry = clock2.now() + REFUSAL_PATIENCE  # no reserve either
    error, actions2 = _drive(plan2, _script(SERVER_ERROR), clock2)
    assert isinstance(error, RetryBudgetExhausted)
    assert [type(a).__name__ for a in actions2] == ["Send", "Wait", "Raise"]
    assert actions2[1].seconds == pytest.approx(REFUSAL_PATIENCE)  # type: ignore[attr-defined]


def test_a_stream_broken_mid_answer_is_not_held_by_a_spent_budget() -> None:
    """Stream recovery after a break: the official SDK raises at once, and so does a spent
    retry budget here (no hold: the caller is reading the stream, not calling again)."""
    clock = FakeClock()
    plan, states = _plan(clock)
    _spent_budget(states["m"], clock.now())
    broken = Failed(SERVER_ERROR, "stream cut", _Error("server_error"))
    flow = plan.run(after=broken)
    action = next(flow)
    assert isinstance(action, Raise) and isinstance(action.error, RetryBudgetExhausted)
    assert clock.sleeps == []


def test_a_hold_leaves_the_attempt_after_it_the_time_an_answer_takes() -> None:
    """A hold that would leave the next attempt less than the target's normal answer time
    is cut short, or not taken: a retry that cannot finish only adds load to a target whose
    budget (or circuit) already says it is failing."""
    clock = FakeClock()
    plan, states = _plan(clock, deadline=1.0)
    state = states["m"]
    for _ in range(20):  # the target answers in about 0.4 s
        state._learn_latency(0.4)
    _spent_budget(state, clock.now())
    error, actions = _drive(plan, _script(SERVER_ERROR, SERVER_ERROR), clock)
    holds = [a for a in actions if isinstance(a, Wait)]
    normal = state.normal_latency()
    assert normal is not None and normal >= 0.4
    assert isinstance(error, RetryBudgetExhausted) and len(holds) == 1
    assert 0 < holds[0].seconds <= 1.0 - normal + 1e-9
    hinted = Failure(FailureClass.SERVER_ERROR, True, status=503, retry_after=3.0)
    clock2 = FakeClock()
    plan2, states2 = _plan(clock2, deadline=2.0)
    _spent_budget(states2["m"], clock2.now())
    error, actions2 = _drive(plan2, _script(hinted), clock2)
    assert isinstance(error, RetryBudgetExhausted)  # the hint leaves no time: at once
    assert [type(a).__name__ for a in actions2] == ["Send", "Raise"]


def test_an_admission_queue_is_an_action_and_its_wait_is_reported_once() -> None:
    clock = FakeClock()
    plan, states = _plan(clock)
    state = states["m"]
    state.concurrency.limit = 1.0
    state.inflight = 1  # someone else holds the only slot
    flow = plan.run()
    action = next(flow)
    assert isinstance(action, Admit) and action.state is state and action.cost == 10.0
    action = flow.send(Admitted(0.25, 1.5))
    assert isinstance(action, Send)
    assert plan.call.record.pressure == 0.25
    assert flow.send(Served("ok")) == Return("ok")


def test_an_exception_thrown_into_an_attempt_frees_its_slot_and_propagates() -> None:
    clock = FakeClock()
    plan, states = _plan(clock)
    flow = plan.run()
    action = next(flow)
    assert isinstance(action, Send)
    assert states["m"].inflight == 1
    with pytest.raises(_Error):
        flow.throw(_Error("the driver crashed"))
    assert states["m"].inflight == 0


def test_a_request_without_a_model_runs_on_one_unnamed_target() -> None:
    clock = FakeClock()
    plan, states = _plan(clock, model=None)
    result, _ = _drive(plan, _script(None), clock)
    assert result == "response from None #1"
    assert list(states) == [None]


def test_a_retry_that_cannot_fit_moves_to_the_fallback_instead_of_giving_up() -> None:
    """The provider asks for 40 s and 30 are left: no retry here fits, the fallback may."""
    clock = FakeClock()
    plan, _ = _plan(clock, fallbacks={"m": ("fb",)})
    throttled = Failure(FailureClass.RATE_LIMITED, True, status=429, retry_after=40.0)
    result, actions = _drive(plan, _script(throttled, None), clock)
    sends = [a for a in actions if isinstance(a, Send)]
    assert [s.target for s in sends] == ["m", "fb"]
    assert result == "response from fb #2"


def test_a_full_primary_holds_a_call_with_a_fallback_no_longer_than_the_fallback_takes() -> None:
    """Every slot of the primary is taken and nobody frees one: after 50 ms in its queue
    (the fallback's answer time is not known yet) the call moves on, and only the attempt
    actually sent is counted."""
    clock = FakeClock()
    plan, states = _plan(clock, fallbacks={"m": ["f"]})
    states["m"].concurrency.limit = 1.0
    states["m"].inflight = 1
    began = clock.now()
    result, actions = _drive(plan, _script(None), clock, queue=True)
    assert result == "response from f #1"
    assert clock.now() - began <= 0.05 + 1e-3  # its patience, and one 0.1 ms poll
    assert [a.target for a in actions if isinstance(a, Send)] == ["f"]
    assert plan.call.attempts == 1
    assert plan.router.reason == "saturated"
    assert states["m"].inflight == 1 and not states["m"]._waiting  # the waiter left the queue


def test_a_call_behind_others_on_a_paced_primary_moves_on_at_once_when_their_turns_take_longer(
) -> None:
    """The primary paces 4.5 requests/s with one request left in its bucket (the head of its
    queue may go now) and two calls queued ahead: this call's turn is 0.44 s away at the
    soonest, longer than the fallback takes, so it moves at once (it waited out its whole
    patience first: a fleet with a fallback ready served 0.35 x the calls it serves now).
    Without a fallback the same place waits to be woken: those ahead may leave sooner than
    their pace says."""
    for fallbacks in ({"m": ["f"]}, {}):
        clock = FakeClock()
        plan, states = _plan(clock, fallbacks=fallbacks)
        primary = states["m"]
        primary.observe(RateLimits(limit=10, remaining=1, reset=2.0), None, now=clock.now())
        ahead = [primary.enqueue("interactive", 0.0, since=clock.now() - 1.0)  # began earlier
                 for _ in range(2)]
        if fallbacks:
            result, actions = _drive(plan, _script(None), clock, queue=True)
            assert result == "response from f #1"
            assert [a.target for a in actions if isinstance(a, Send)] == ["f"]
            assert clock.sleeps == []
            assert plan.router.reason == "paced"
            assert primary._waiting == ahead  # it left the queue
            continue
        flow = plan.run()
        admit = next(flow)
        assert isinstance(admit, Admit)
        place = plan.enqueue(admit)
        assert place.turn() is None  # wait to be woken
        place.leave()


def test_only_the_first_in_line_polls_often() -> None:
    """Waiters behind the head are woken when they reach it, so they ask rarely (400 queued
    calls polling every 50 ms spent as much CPU as their requests); the head asks every 50 ms,
    as the clock alone can free it a slot. Both waits stop where the call would give up."""
    clock = FakeClock()
    first, states = _plan(clock, deadline=30.0)
    second, _ = _plan(clock, deadline=0.3)
    third, _ = _plan(clock, deadline=30.0)
    state = states["m"]
    state.concurrency.limit = 1.0
    state.inflight = 1
    head = first.enqueue(Admit(state, 0.0))
    short = second.enqueue(Admit(state, 0.0))
    behind = third.enqueue(Admit(state, 0.0))
    assert head.turn() is None and short.turn() is None and behind.turn() is None
    assert head.poll() == HEAD_POLL
    assert behind.poll() == LINE_POLL
    assert short.poll() < 0.3  # it gives up before its deadline: its wait ends there
    assert behind.poll(HEAD_POLL) == HEAD_POLL  # a driver that cannot be woken across threads
    head.leave()
    short.leave()
    assert behind.poll() == HEAD_POLL


def test_an_admission_that_cannot_come_in_time_fails_at_once_and_counts_no_attempt() -> None:
    """The pacer needs 0.2 s and the call has 0.15 s: without a fallback it fails now, not at
    the deadline, and its error says that no attempt was sent."""
    clock = FakeClock()
    plan, states = _plan(clock, deadline=0.15)
    states["m"].observe(RateLimits(limit=10, remaining=0, reset=2.0), None, now=clock.now())
    error, actions = _drive(plan, _script(), clock, queue=True)
    assert isinstance(error, DeadlineExceeded)
    assert clock.sleeps == []  # failed at once, not at the deadline
    assert "after 0 attempts" in str(error) and "pacer needs 0.2 s" in str(error.__cause__)
    assert not error.attempts
    assert not any(isinstance(a, Send) for a in actions)


def test_an_attempt_admitted_too_late_to_be_made_is_not_counted() -> None:
    """Admitted once less than the shortest attempt is left: the call ends, and its error
    counts only the attempt actually sent."""
    clock = FakeClock()
    plan, states = _plan(clock, deadline=1.0)
    flow = plan.run()
    action = next(flow)
    assert isinstance(action, Send) and action.target == "m"
    wait = flow.send(Failed(SERVER_ERROR, "e", _Error("503")))
    assert isinstance(wait, Wait)
    clock.sleep(wait.seconds)
    states["m"].concurrency.limit = 1.0
    states["m"].inflight = 1
    action = flow.send(None)
    assert isinstance(action, Admit)
    clock.advance(1.0 - wait.seconds - 0.03)  # a queue that overslept: 30 ms are left
    states["m"].inflight = 0
    assert states["m"].try_admit(states["m"].enqueue("interactive", 0.0), clock.now()).granted
    action = flow.send(Admitted(0.0, 0.9))
    assert isinstance(action, Raise) and isinstance(action.error, DeadlineExceeded)
    assert "after 1 attempt;" in str(action.error)
    assert states["m"].inflight == 0  # the slot it was given is free again
