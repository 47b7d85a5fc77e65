"""The per-request plan, driven without I/O: a virtual clock, scripted attempt outcomes.

This is how a simulator drives the engine: it builds a :class:`Call` on its own clock and
random source, gives the plan its own pressure states, and answers each action itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from resilient_llm import AllTargetsFailed, CircuitOpen, DeadlineExceeded, Policy
from resilient_llm.engine.call import Call, Send, Wait
from resilient_llm.engine.classify import Failure, FailureClass
from resilient_llm.engine.plan import (
    Admit,
    Admitted,
    Failed,
    Plan,
    Raise,
    Reply,
    Return,
    Served,
)
from resilient_llm.engine.pressure import TargetKey, TargetPressure
from resilient_llm.testing import FakeClock, FakeRandom

SERVER_ERROR = Failure(FailureClass.SERVER_ERROR, True)
OVERLOADED = Failure(FailureClass.OVERLOADED, True)
AUTH = Failure(FailureClass.AUTH, False)


def _plan(clock: FakeClock, *, model: str | None = "m", **policy: object) -> tuple[Plan, dict[
        str | None, TargetPressure]]:
    call = Call(policy=Policy(**policy), target=model, deadline_at=clock.now() + 30.0,
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


def _drive(plan: Plan, answer: Callable[[Send], Served | Failed],
           clock: FakeClock) -> tuple[object, list[object]]:
    """A minimal driver: performs every action, returns (result, actions seen)."""
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
            reply = Admitted(0.0, None)
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


def test_an_open_circuit_without_fallback_fails_fast_with_circuit_open() -> None:
    clock = FakeClock()
    plan, states = _plan(clock)
    breaker = states["m"].breaker
    for _ in range(30):
        breaker.record(clock.now(), SERVER_ERROR, FakeRandom(fixed=0.5))
    plan2 = Plan(plan.call, states=lambda name: states["m"], requested=None, replayable=True,
                 cost=lambda: 0.0)
    # Nothing ever succeeded: refused before any attempt.
    error, actions = _drive(plan2, _script(), clock)
    assert isinstance(error, CircuitOpen)
    assert len(actions) == 1
    # A second on, one caller without a fallback probes the target; its retry within that
    # second fails fast, before a second attempt.
    clock.sleep(1.0)
    plan3, _ = _plan(clock)
    plan3 = Plan(plan3.call, states=lambda name: states["m"], requested=None, replayable=True,
                 cost=lambda: 0.0)
    error, actions = _drive(plan3, _script(SERVER_ERROR), clock)
    assert isinstance(error, CircuitOpen)
    assert sum(isinstance(a, Send) for a in actions) == 1


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
