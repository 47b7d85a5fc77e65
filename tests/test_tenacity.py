"""The tenacity integration, against tenacity itself: deadline stop, backoff, classification,
recording, sync and async. Time is a FakeClock (tenacity's ``sleep`` is injected) except in the
one end-to-end timing check against a loopback HTTP server.
"""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import tenacity
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_fixed,
)

from resilient_llm import _clock, attributes, deadline, outcome, resilient, subscribe
from resilient_llm.context import deadline as _deadline
from resilient_llm.events.bus import Event
from resilient_llm.events.outcome import CallRecord
from resilient_llm.integrations.tenacity import (
    RecordAttempts,
    fit_wait,
    last_outcome,
    record_attempts,
    retry_if_transient,
    stop_at_deadline,
    wait_backoff,
)
from resilient_llm.openai import OpenAI
from resilient_llm.telemetry import otel as _telemetry
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider

URL = "http://tool.test/search"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Deadlines measured on a FakeClock; tenacity sleeps on it too (``sleep=clock.sleep``)."""
    fake = FakeClock()
    monkeypatch.setattr(_deadline, "SYSTEM_CLOCK", fake)
    monkeypatch.setattr(_clock, "SYSTEM_CLOCK", fake)
    return fake


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx2.HTTPStatusError:
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", URL))
    return httpx2.HTTPStatusError(f"HTTP {status}", request=response.request, response=response)


class Result:
    """A weak-referenceable tool result, so ``outcome(result)`` can find its call."""

    def __init__(self, value: str) -> None:
        self.value = value


class Tool:
    """A tool that fails with the scripted exceptions, one per call, then returns a Result."""

    def __init__(self, clock: FakeClock, *failures: BaseException, takes: float = 0.0) -> None:
        self.clock = clock
        self.failures = list(failures)
        self.takes = takes
        self.calls: list[float] = []

    def __call__(self) -> Result:
        self.calls.append(self.clock.now())
        self.clock.advance(self.takes)
        if self.failures:
            raise self.failures.pop(0)
        return Result("found")

    async def acall(self) -> Result:
        await anyio.lowlevel.checkpoint()
        return self()


def state(upcoming_sleep: float = 0.0, attempt: int = 1) -> RetryCallState:
    """A real tenacity RetryCallState, as tenacity hands it to ``stop``."""
    retry_state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    retry_state.attempt_number = attempt
    retry_state.upcoming_sleep = upcoming_sleep
    return retry_state


def failed_state(exc: BaseException, attempt: int = 1) -> RetryCallState:
    retry_state = state(attempt=attempt)
    retry_state.set_exception((type(exc), exc, None))
    return retry_state


# --- stop_at_deadline ----------------------------------------------------------------------------


def test_stop_at_deadline_never_stops_without_a_deadline(clock: FakeClock) -> None:
    assert not stop_at_deadline()(state(upcoming_sleep=1e9))
    assert not stop_at_deadline(reserve=5)(state(upcoming_sleep=1e9))


def test_stop_at_deadline_stops_when_the_sleep_leaves_no_time_for_an_attempt(
    clock: FakeClock,
) -> None:
    with deadline(3):
        clock.advance(1)  # 2 s left; an attempt needs 50 ms
        assert not stop_at_deadline()(state(upcoming_sleep=1.95))  # exactly 50 ms remain
        assert not stop_at_deadline()(state(upcoming_sleep=1.9505))  # within the 1 ms slack
        assert stop_at_deadline()(state(upcoming_sleep=1.952))
        assert not stop_at_deadline(reserve=0.5)(state(upcoming_sleep=1.45))
        assert stop_at_deadline(reserve=0.5)(state(upcoming_sleep=1.452))
        clock.advance(2)  # the deadline has passed
        assert stop_at_deadline()(state(upcoming_sleep=0.0))


def test_stop_at_deadline_reads_the_innermost_scope(clock: FakeClock) -> None:
    with deadline(10), resilient(deadline=1):
        assert stop_at_deadline()(state(upcoming_sleep=0.96))
    with deadline(10):
        assert not stop_at_deadline()(state(upcoming_sleep=0.96))


@pytest.mark.anyio
async def test_stop_at_deadline_counts_an_anyio_cancel_scope() -> None:
    assert not stop_at_deadline()(state(upcoming_sleep=5.0))
    with anyio.move_on_after(2):
        await anyio.lowlevel.checkpoint()
        assert stop_at_deadline()(state(upcoming_sleep=5.0))
        assert not stop_at_deadline()(state(upcoming_sleep=0.5))


@pytest.mark.parametrize(("reserve", "error"), [(-1, ValueError), (float("nan"), ValueError),
                                                 (float("inf"), ValueError), ("1", TypeError),
                                                 (True, TypeError)])
def test_stop_at_deadline_rejects_a_bad_reserve(reserve: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="reserve must be"):
        stop_at_deadline(reserve=reserve)


def test_strategies_compose_with_tenacitys_operators(clock: FakeClock) -> None:
    stop = stop_at_deadline() | stop_after_attempt(2)
    assert isinstance(stop, tenacity.stop.stop_any)
    assert stop(state(attempt=2)) and not stop(state(attempt=1))
    wait = wait_backoff(rng=FakeRandom(fixed=0.5)) + wait_fixed(1)
    assert wait(failed_state(httpx2.ReadTimeout("slow"))) == pytest.approx(0.125 + 1)
    retry = retry_if_transient() | retry_if_exception_type(ValueError)
    assert retry(failed_state(ValueError("mine"))) and retry(failed_state(TimeoutError()))
    assert not (retry_if_transient() & retry_if_exception_type(ValueError))(
        failed_state(TimeoutError()))


# --- wait_backoff --------------------------------------------------------------------------------


def test_fit_wait_takes_a_retry_that_fits_and_refuses_a_hint_that_cannot() -> None:
    assert fit_wait(7.0, hint=0.0, left=None) == 7.0
    assert fit_wait(1.0, hint=0.0, left=3.0) == 1.0
    assert fit_wait(7.0, hint=0.0, left=3.0) == pytest.approx(2.95)  # jitter cut to fit
    assert fit_wait(4.5, hint=2.0, left=3.0) == pytest.approx(2.95)  # spread after a hint cut
    assert fit_wait(12.0, hint=10.0, left=3.0) == 3.0  # the hint itself cannot fit
    assert fit_wait(1.0, hint=0.0, left=0.01) == 0.0


def test_wait_backoff_is_the_librarys_jittered_backoff(clock: FakeClock) -> None:
    wait = wait_backoff(rng=FakeRandom(fixed=0.5), max_backoff=3)
    transient = [wait(failed_state(httpx2.ReadTimeout("slow"), attempt=n)) for n in (1, 2, 3)]
    throttled = [wait(failed_state(status_error(429), attempt=n)) for n in (1, 2, 3, 4)]
    assert transient == pytest.approx([0.125, 0.25, 0.5])  # U(0, 0.25·2^(n−1)) at 0.5
    # U(0, min(3, 2^(n−1))) at 0.5, the first retry's window the official SDKs' 0.5 s
    assert throttled == pytest.approx([0.25, 1.0, 1.5, 1.5])


def test_wait_backoff_honours_retry_after_with_a_positive_spread(clock: FakeClock) -> None:
    wait = wait_backoff(rng=FakeRandom(fixed=0.5))
    seconds = wait(failed_state(status_error(429, {"Retry-After": "2"})))
    millis = wait(failed_state(status_error(529, {"retry-after-ms": "3500"})))
    assert seconds == pytest.approx(2 + 0.5 * 0.2)  # first retry: hint + U(0, hint / 10)
    assert millis == pytest.approx(3.5 + 0.5 * 0.35)
    # Later retries: hint + U(0, min(window, 5)). A 503 from a calm target is a blip, not a
    # throttle: the transient window (0.25 s doubling), not the throttle's (1 s doubling).
    later = wait(failed_state(status_error(429, {"Retry-After": "2"}), attempt=2))
    calm = wait(failed_state(status_error(503, {"retry-after-ms": "3500"}), attempt=2))
    assert later == pytest.approx(2 + 0.5 * 2.0)
    assert calm == pytest.approx(3.5 + 0.5 * 0.5)


def test_wait_backoff_reads_a_returned_response(clock: FakeClock) -> None:
    retry_state = state()
    retry_state.set_result(httpx2.Response(503, headers={"retry-after": "4"},
                                           request=httpx2.Request("GET", URL)))
    assert wait_backoff(rng=FakeRandom(fixed=0.0))(retry_state) == pytest.approx(4.0)
    assert retry_if_transient()(retry_state)


def test_wait_backoff_is_clipped_to_the_time_left(clock: FakeClock) -> None:
    wait = wait_backoff(rng=FakeRandom(fixed=0.99), max_backoff=60)
    with deadline(3):
        assert wait(failed_state(status_error(429), attempt=5)) == pytest.approx(2.95)
        assert wait(failed_state(status_error(429, {"Retry-After": "10"}))) == pytest.approx(3)


def test_a_wait_cut_to_fit_is_not_refused_by_the_stop_on_the_real_clock() -> None:
    with deadline(3):  # the system clock moves between tenacity's wait and stop calls
        retry_state = failed_state(status_error(429), attempt=6)
        retry_state.upcoming_sleep = wait_backoff(rng=FakeRandom(fixed=0.99))(retry_state)
        assert 2.5 < retry_state.upcoming_sleep < 2.95  # 50 ms kept for the attempt
        assert not stop_at_deadline()(retry_state)


def test_wait_backoff_takes_max_backoff_from_the_policy_in_force(clock: FakeClock) -> None:
    wait = wait_backoff(rng=FakeRandom(fixed=0.5))
    with resilient(max_backoff=0.4):
        assert wait(failed_state(status_error(503), attempt=6)) == pytest.approx(0.2)


def test_wait_backoff_backs_off_a_retried_result_or_error_as_transient(clock: FakeClock) -> None:
    wait = wait_backoff(rng=FakeRandom(fixed=0.5))
    retried_result = state(attempt=2)
    retried_result.set_result(None)
    assert wait(retried_result) == pytest.approx(0.25)
    assert wait(failed_state(ValueError("retried by the user's predicate"), 2)) == \
        pytest.approx(0.25)


def test_wait_backoff_rejects_a_bad_max_backoff() -> None:
    with pytest.raises(ValueError, match="max_backoff must be"):
        wait_backoff(max_backoff=-1)


# --- retry_if_transient --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (status_error(429), True), (status_error(500), True), (status_error(503), True),
        (status_error(529), True), (httpx2.ConnectError("refused"), True),
        (httpx2.ReadTimeout("slow"), True), (ConnectionResetError(), True),
        (status_error(400), False), (status_error(404), False), (status_error(401), False),
        (status_error(503, {"x-should-retry": "false"}), False),
        (ValueError("bug"), False), (KeyError("bug"), False), (KeyboardInterrupt(), False),
    ],
    ids=repr,
)
def test_retry_if_transient(exc: BaseException, retried: bool) -> None:
    assert retry_if_transient()(failed_state(exc)) is retried


def test_retry_if_transient_does_not_retry_a_success() -> None:
    retry_state = state()
    retry_state.set_result({"hits": 3})
    assert not retry_if_transient()(retry_state)


# --- the scenario, on the injected clock -------------------------------------------------


def retrying(clock: FakeClock, **overrides: Any) -> Retrying:
    settings: dict[str, Any] = {
        "stop": stop_at_deadline() | stop_after_attempt(5),
        "wait": wait_backoff(rng=FakeRandom(fixed=0.5)),
        "sleep": clock.sleep,
        **record_attempts(name="search"),
    }
    settings.update(overrides)
    return Retrying(**settings)


def test_an_overloaded_tool_under_a_3s_deadline_stops_inside_it(clock: FakeClock) -> None:
    tool = Tool(clock, *[status_error(529)] * 10, takes=0.2)
    start = clock.now()
    with deadline(3), pytest.raises(RetryError) as raised:
        retrying(clock)(tool)
    # Waits at 0.5 of their windows: 0.25 (the first retry's 0.5 s), 1.0 (2^(n−1)), then 2.0
    # cut to 1.1 so that the fourth attempt starts 50 ms before the deadline; after it no
    # wait fits and the run stops.
    assert clock.sleeps == pytest.approx([0.25, 1.0, 1.1])
    assert [t - start for t in tool.calls] == pytest.approx([0.0, 0.45, 1.65, 2.95])
    # A sync tool runs to completion: the overshoot is at most one attempt (pass the tool
    # ``timeout=remaining()``, or keep a ``reserve`` as long as an attempt, to bound it).
    assert clock.now() - start == pytest.approx(3.15)
    assert isinstance(raised.value.last_attempt.exception(), httpx2.HTTPStatusError)
    result = outcome(raised.value)
    assert [a.failure for a in result.attempts] == ["overloaded"] * 4
    assert [a.status for a in result.attempts] == [529] * 4
    assert result.reason == "deadline" and result.finished and result.served_by is None


def test_a_reserve_as_long_as_an_attempt_keeps_the_run_inside_the_deadline(
    clock: FakeClock,
) -> None:
    tool = Tool(clock, *[status_error(529)] * 10, takes=0.2)
    start = clock.now()
    with deadline(3), pytest.raises(RetryError):
        retrying(clock, stop=stop_at_deadline(reserve=0.2) | stop_after_attempt(5))(tool)
    assert clock.now() - start <= 3.0
    assert len(tool.calls) == 3


def test_without_a_deadline_tenacitys_own_stop_decides(clock: FakeClock) -> None:
    tool = Tool(clock, *[status_error(503)] * 10)
    with pytest.raises(RetryError) as raised:
        retrying(clock)(tool)
    assert len(tool.calls) == 5
    assert outcome(raised.value).reason == "stopped"


def test_reraise_gives_the_last_exception_with_its_outcome(clock: FakeClock) -> None:
    last = status_error(503)
    tool = Tool(clock, status_error(503), last)
    with deadline(3), pytest.raises(httpx2.HTTPStatusError) as raised:
        retrying(clock, stop=stop_at_deadline() | stop_after_attempt(2), reraise=True)(tool)
    assert raised.value is last
    assert len(outcome(last).attempts) == 2


def test_a_400_is_not_retried(clock: FakeClock) -> None:
    bad = status_error(400)
    tool = Tool(clock, bad)
    with deadline(3), pytest.raises(httpx2.HTTPStatusError) as raised:
        retrying(clock)(tool)
    assert raised.value is bad and len(tool.calls) == 1 and clock.sleeps == []
    result = outcome(bad)
    assert [a.failure for a in result.attempts] == ["invalid_request"]
    assert result.reason == "not_retryable"


def test_retry_after_beyond_the_deadline_stops_at_once(clock: FakeClock) -> None:
    tool = Tool(clock, *[status_error(503, {"Retry-After": "10"})] * 3)
    with deadline(3), pytest.raises(RetryError) as raised:
        retrying(clock)(tool)
    assert len(tool.calls) == 1 and clock.sleeps == []
    assert outcome(raised.value).reason == "deadline"


def test_a_programming_error_is_raised_at_once(clock: FakeClock) -> None:
    tool = Tool(clock, KeyError("missing"))
    with pytest.raises(KeyError):
        retrying(clock)(tool)
    assert len(tool.calls) == 1


# --- record_attempts -----------------------------------------------------------------------------


def test_every_attempt_is_in_the_outcome_of_the_result(clock: FakeClock) -> None:
    tool = Tool(clock, httpx2.ReadTimeout("slow"), status_error(429), takes=0.1)
    with deadline(5):
        result = retrying(clock)(tool)
    assert result.value == "found"
    facts = outcome(result)
    assert [(a.number, a.target, a.failure, a.status) for a in facts.attempts] == [
        (1, "search", "timeout", None), (2, "search", "rate_limited", 429),
        (3, "search", None, None)]
    assert [a.duration for a in facts.attempts] == pytest.approx([0.1, 0.1, 0.1])
    assert [a.waited_before for a in facts.attempts] == pytest.approx([0.0, *clock.sleeps])
    assert clock.sleeps == pytest.approx([0.125, 1.0])
    assert facts.served_by == "search" and facts.finished and facts.error is None
    assert facts.requested == "search" and facts.deadline_budget == pytest.approx(5)
    assert facts.elapsed == pytest.approx(0.3 + sum(clock.sleeps))
    assert facts.retries == 2


def test_the_decorator_form_names_the_call_after_the_function(clock: FakeClock) -> None:
    failures = [ConnectionResetError()]

    @tenacity.retry(wait=wait_backoff(rng=FakeRandom(fixed=0.0)), sleep=clock.sleep,
                    **record_attempts())
    def lookup_order() -> Result:
        if failures:
            raise failures.pop()
        return Result("order")

    facts = outcome(lookup_order())
    name = "test_the_decorator_form_names_the_call_after_the_function.<locals>.lookup_order"
    assert [a.target for a in facts.attempts] == [name, name]
    assert [a.failure for a in facts.attempts] == ["connection_reset", None]


def test_last_outcome_finds_a_result_that_is_not_weak_referenceable(clock: FakeClock) -> None:
    @tenacity.retry(sleep=clock.sleep, wait=wait_fixed(0.5), **record_attempts(name="hits"))
    def hits() -> dict[str, int]:
        if not clock.sleeps:
            raise TimeoutError
        return {"hits": 3}

    assert hits() == {"hits": 3}
    with pytest.raises(LookupError):
        outcome({"hits": 3})
    facts = last_outcome()
    assert facts.requested == "hits" and [a.failure for a in facts.attempts] == ["timeout", None]


def test_last_outcome_without_a_recorded_run_says_how_to_get_one() -> None:
    def fresh() -> None:
        with pytest.raises(LookupError, match="record_attempts"):
            last_outcome()

    contextvars.Context().run(fresh)


def test_each_run_is_a_call_of_its_own(clock: FakeClock) -> None:
    decorated = tenacity.retry(sleep=clock.sleep, wait=wait_fixed(0.5),
                               **record_attempts(name="fetch"))
    script = [TimeoutError(), None, None]

    def fetch() -> Result:
        failure = script.pop(0)
        if failure is not None:
            raise failure
        return Result("ok")

    fetcher = decorated(fetch)
    first, second = fetcher(), fetcher()
    assert len(outcome(first).attempts) == 2 and len(outcome(second).attempts) == 1
    assert outcome(second).attempts[0].waited_before == 0.0


def test_the_users_predicate_decides_and_the_users_hooks_still_run(clock: FakeClock) -> None:
    seen: list[int] = []
    recorder = record_attempts(retry_if_exception_type(ValueError), name="parse",
                               before=lambda rs: seen.append(rs.attempt_number),
                               retry_error_callback=lambda rs: Result("fallback"))
    tool = Tool(clock, ValueError("1"), ValueError("2"), ValueError("3"))
    result = Retrying(stop=stop_after_attempt(2), sleep=clock.sleep, **recorder)(tool)
    assert result.value == "fallback" and seen == [1, 2]
    facts = outcome(result)
    assert [a.failure for a in facts.attempts] == ["application_error"] * 2
    assert facts.reason == "stopped"


def test_record_attempts_is_a_mapping_of_tenacity_keywords() -> None:
    recorder = record_attempts(name="search")
    assert isinstance(recorder, RecordAttempts)
    assert sorted(recorder) == ["before", "retry", "retry_error_callback"]
    assert "retry_if_transient" in repr(recorder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry": "yes"}, "needs a plain"),
        ({"before": 3}, "needs a plain"),
        ({"name": ""}, "non-empty string"),
    ],
)
def test_record_attempts_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        record_attempts(**kwargs)


def test_record_attempts_rejects_an_async_predicate() -> None:
    async def predicate(retry_state: RetryCallState) -> bool:
        return True

    with pytest.raises(TypeError, match="not async"):
        record_attempts(predicate)  # type: ignore[arg-type]


def test_the_iterator_form_is_recorded_too(clock: FakeClock) -> None:
    tool = Tool(clock, TimeoutError())
    results: list[Result] = []
    for attempt in Retrying(sleep=clock.sleep, wait=wait_fixed(1),
                            **record_attempts(name="loop")):
        with attempt:
            results.append(tool())
        retry_state = attempt.retry_state
    facts = outcome(retry_state)
    assert [a.failure for a in facts.attempts] == ["timeout", None]
    assert facts.attempts[1].waited_before == pytest.approx(1)
    assert last_outcome() == facts
    assert results[0].value == "found"


def test_subscribers_see_the_tool_calls_events(clock: FakeClock) -> None:
    seen: list[tuple[str | None, str, int]] = []

    def listener(record: CallRecord, event: Event) -> None:
        seen.append((record.requested, event.kind, event.attempt))

    unsubscribe = subscribe(listener)
    try:
        retrying(clock)(Tool(clock, TimeoutError()))
    finally:
        unsubscribe()
    assert seen == [
        ("search", "call_started", 0), ("search", "attempt_started", 1),
        ("search", "attempt_finished", 1), ("search", "waited", 2),
        ("search", "attempt_started", 2), ("search", "attempt_finished", 2),
        ("search", "succeeded", 0),
    ]


def test_an_enclosing_resilient_function_gives_its_budget_and_result(clock: FakeClock) -> None:
    tool = Tool(clock, status_error(502), takes=0.5)

    @resilient(deadline=4)
    def step() -> Result:
        clock.advance(1)  # the step's own work before the tool
        return retrying(clock)(tool)

    facts = outcome(step())
    assert facts.deadline_budget == pytest.approx(3)  # what was left when the tool started
    assert [a.failure for a in facts.attempts] == ["server_error", None]


def test_a_step_keeps_the_tool_call_and_the_model_call_apart(clock: FakeClock) -> None:
    provider = FaultProvider()
    provider.script(Fault.ok(text="Paris."))
    client = OpenAI(api_key="sk-tool", base_url="http://tools.test/v1",
                    http_client=httpx2.Client(transport=provider.transport()))
    tool = Tool(clock, status_error(503))

    @resilient(deadline=10)
    def step() -> Any:
        retrying(clock)(tool)
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "capital of France?"}])

    with client:
        answer = step()
    model_call, tool_call = outcome(answer), last_outcome()
    assert [a.target for a in model_call.attempts] == ["gpt-4.1"] and model_call.retries == 0
    assert [a.failure for a in tool_call.attempts] == ["overloaded", None]
    assert tool_call.requested == "search"


# --- telemetry -----------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    was_installed = _telemetry.installed()
    _telemetry.configure(tracer_provider=provider, meter_provider=meter_provider)
    yield exporter
    _telemetry.configure()
    if not was_installed:
        _telemetry.uninstall()
    provider.shutdown()
    meter_provider.shutdown()


def test_the_tool_call_is_a_span_with_one_child_per_attempt(
    clock: FakeClock, spans: InMemorySpanExporter
) -> None:
    tool = Tool(clock, status_error(503), status_error(503), takes=0.1)
    parent_tracer = TracerProvider().get_tracer("agent")
    with parent_tracer.start_as_current_span("agent step") as step, deadline(3), \
            attributes(feature="research", tenant="acme"):
        retrying(clock)(tool)
    finished = spans.get_finished_spans()
    (call,) = [s for s in finished if s.name == "execute_tool search"]
    attempts = sorted((s for s in finished if s.name == "attempt search"),
                      key=lambda s: s.start_time or 0)
    assert call.kind is SpanKind.INTERNAL
    assert call.parent is not None and call.parent.span_id == step.get_span_context().span_id
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "search"
    assert "gen_ai.request.model" not in attrs and "gen_ai.provider.name" not in attrs
    assert attrs["resilient_llm.attempts"] == 3 and attrs["resilient_llm.retries"] == 2
    assert attrs["resilient_llm.deadline.budget"] == pytest.approx(3)
    assert (attrs["feature"], attrs["tenant"]) == ("research", "acme")  # attributes() labels
    assert call.status.status_code is not StatusCode.ERROR
    assert [dict(s.attributes or {}).get("resilient_llm.attempt.failure") for s in attempts] == \
        ["overloaded", "overloaded", None]
    assert [dict(s.attributes or {})["resilient_llm.attempt.number"] for s in attempts] == [1, 2, 3]
    assert [dict(s.attributes or {}).get("http.response.status_code") for s in attempts] == \
        [503, 503, None]
    assert all(s.parent is not None and call.context is not None
               and s.parent.span_id == call.context.span_id for s in attempts)
    durations = [((s.end_time or 0) - (s.start_time or 0)) / 1e9 for s in attempts]
    assert durations == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)


def test_a_failed_tool_call_span_says_why(clock: FakeClock, spans: InMemorySpanExporter) -> None:
    tool = Tool(clock, *[status_error(503, {"Retry-After": "10"})] * 2)
    with deadline(3), pytest.raises(RetryError):
        retrying(clock)(tool)
    (call,) = [s for s in spans.get_finished_spans() if s.name == "execute_tool search"]
    assert call.status.status_code is StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "deadline_exceeded"


# --- async ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_retrying_stops_at_the_deadline(clock: FakeClock) -> None:
    tool = Tool(clock, *[status_error(529)] * 10, takes=0.2)
    start = clock.now()
    with pytest.raises(RetryError) as raised:
        async with deadline(3):
            await AsyncRetrying(stop=stop_at_deadline() | stop_after_attempt(5),
                                wait=wait_backoff(rng=FakeRandom(fixed=0.5)),
                                sleep=clock.asleep, **record_attempts(name="search"))(tool.acall)
    assert clock.sleeps == pytest.approx([0.25, 1.0, 1.1])
    assert clock.now() - start == pytest.approx(3.15)
    assert len(outcome(raised.value).attempts) == 4


@pytest.mark.anyio
async def test_async_decorator_records_and_retries_only_transient_failures(
    clock: FakeClock,
) -> None:
    tool = Tool(clock, httpx2.ConnectError("refused"), status_error(404))

    @tenacity.retry(wait=wait_backoff(rng=FakeRandom(fixed=0.0)), sleep=clock.asleep,
                    **record_attempts(name="async search"))
    async def search() -> Result:
        return await tool.acall()

    with pytest.raises(httpx2.HTTPStatusError) as raised:
        await search()
    facts = outcome(raised.value)
    assert [a.failure for a in facts.attempts] == ["connect_error", "invalid_request"]
    assert facts.reason == "not_retryable"


@pytest.mark.anyio
async def test_a_cancelled_attempt_ends_the_run_and_is_recorded(clock: FakeClock) -> None:
    recorder = record_attempts(name="slow")
    with anyio.CancelScope() as scope:

        async def slow() -> Result:
            scope.cancel()  # as an enclosing deadline's cancel scope does when time is up
            await anyio.lowlevel.checkpoint()
            return Result("never")

        await AsyncRetrying(sleep=clock.asleep, **recorder)(slow)
    assert scope.cancelled_caught
    facts = last_outcome()
    assert [a.failure for a in facts.attempts] == ["application_error"]
    assert facts.finished and facts.reason == "not_retryable"


@pytest.mark.anyio
async def test_async_iterator_form(clock: FakeClock) -> None:
    tool = Tool(clock, TimeoutError())
    results: list[Result] = []
    async for attempt in AsyncRetrying(sleep=clock.asleep, wait=wait_fixed(0.25),
                                       **record_attempts(name="aloop")):
        with attempt:
            results.append(await tool.acall())
    assert results[0].value == "found"
    assert [a.failure for a in last_outcome().attempts] == ["timeout", None]


# --- packaging -----------------------------------------------------------------------------------


def test_import_resilient_llm_imports_no_integration() -> None:
    code = (
        "import sys, resilient_llm\n"
        "loaded = {'tenacity', 'resilient_llm.integrations',\n"
        "          'resilient_llm.integrations.tenacity'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "import resilient_llm.integrations.tenacity\n"
        "clients = {'httpx', 'requests', 'openai', 'anthropic'} & set(sys.modules)\n"
        "assert not clients, clients\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- end to end, real time, loopback HTTP --------------------------------------------------------


class ToolServer:
    """A loopback HTTP endpoint answering every request with one status and headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        outer = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/search"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ToolServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def search_tool(url: str) -> Callable[[], Any]:
    @tenacity.retry(stop=stop_at_deadline() | stop_after_attempt(5), wait=wait_backoff(),
                    retry=retry_if_transient())
    def search() -> Any:
        with httpx2.Client(timeout=5) as client:
            response = client.get(url)
            response.raise_for_status()
            return response.json()

    return search


@pytest.mark.slow
def test_end_to_end_a_503_endpoint_under_deadline_3_ends_within_3_3_s() -> None:
    with ToolServer(503) as server:
        search = search_tool(server.url)
        start = time.monotonic()
        with deadline(3), pytest.raises(RetryError):
            search()
        elapsed = time.monotonic() - start
    assert elapsed < 3.3
    assert 1 < server.hits <= 5


@pytest.mark.slow
def test_end_to_end_a_400_is_not_retried_and_retry_after_10_stops_at_once() -> None:
    with ToolServer(400) as bad:
        with deadline(3), pytest.raises(httpx2.HTTPStatusError):
            search_tool(bad.url)()
        assert bad.hits == 1
    with ToolServer(503, {"Retry-After": "10"}) as busy:
        start = time.monotonic()
        with deadline(3), pytest.raises(RetryError):
            search_tool(busy.url)()
        elapsed = time.monotonic() - start
    assert busy.hits == 1 and elapsed < 1.0
