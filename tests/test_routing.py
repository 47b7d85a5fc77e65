"""Graceful degradation: chains, when to move on and when not, breakers, residency."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from resilient_llm import (
    AllTargetsFailed,
    CircuitOpen,
    ConfigError,
    Failure,
    FailureClass,
    Policy,
    ResidencyViolation,
    StreamInterrupted,
    outcome,
    pressure_snapshot,
    resilient,
)
from resilient_llm.engine.breaker import ALONE_PROBE_EVERY, ALONE_WARMUP, Breaker, Thresholds
from resilient_llm.engine.routing import Router, Target
from resilient_llm.openai import OpenAI
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider, FaultServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def failure(kind: FailureClass, *, retryable: bool = True, retry_after: float | None = None,
            status: int | None = None) -> Failure:
    return Failure(kind, retryable, status=status, retry_after=retry_after)


# --- the router, pure -------------------------------------------------------------------------


def test_chain_from_policy_and_wildcard() -> None:
    policy = Policy(fallbacks={"gpt-4.1": ["gpt-4.1-mini", "gpt-4o-mini"], "*": ["cheap"]})
    assert [t.model for t in Router.for_call(policy, "gpt-4.1").chain] == [
        "gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"]
    assert [t.model for t in Router.for_call(policy, "other").chain] == ["other", "cheap"]


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        (FailureClass.OVERLOADED, "move"),
        (FailureClass.TIMEOUT, "move"),
        (FailureClass.FIRST_TOKEN_TIMEOUT, "move"),
        (FailureClass.SERVER_ERROR, "retry"),
        (FailureClass.CONNECTION_RESET, "retry"),
        (FailureClass.STREAM_CUT, "retry"),
    ],
)
def test_when_to_move_on(kind: FailureClass, step: str) -> None:
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    assert router.after_failure(failure(kind)) == step


def test_errors_a_fallback_cannot_fix_stop_at_once() -> None:
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    for kind in (FailureClass.AUTH, FailureClass.CONTENT_POLICY, FailureClass.INVALID_REQUEST,
                 FailureClass.QUOTA_EXHAUSTED):
        assert router.after_failure(failure(kind, retryable=False)) == "stop"


def test_an_error_the_server_asks_to_retry_is_retried_on_the_same_target() -> None:
    """x-should-retry: true on a 400 makes it retryable: retried where it failed (the
    official SDKs retry it), never moved to a fallback that could not fix it either."""
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    for kind in (FailureClass.AUTH, FailureClass.INVALID_REQUEST):
        assert router.after_failure(failure(kind, retryable=True, status=400)) == "retry"
    assert router.after_failure(failure(FailureClass.INVALID_REQUEST, retryable=True),
                                failing=True) == "retry"


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [400, 404, 422])
def test_x_should_retry_on_a_client_error_is_honoured_end_to_end(sdk: str, status: int) -> None:
    provider = FaultProvider()
    provider.script(Fault.status(status, headers={"x-should-retry": "true"}), Fault.ok(text="ok"))
    http = httpx2.Client(transport=provider.transport())
    if sdk == "openai":
        with OpenAI(base_url="http://fault.test/v1", api_key="k", http_client=http) as client:
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            assert answer.choices[0].message.content == "ok"
    else:
        from resilient_llm.anthropic import Anthropic

        with Anthropic(base_url="http://fault.test", api_key="k", http_client=http) as client:
            message = client.messages.create(model="claude-sonnet-4-6", max_tokens=8,
                                             messages=[{"role": "user", "content": "hi"}])
            assert message.content[0].text == "ok"  # type: ignore[union-attr]
    assert [r.status for r in provider.requests] == [status, 200]


def test_long_rate_limit_moves_short_one_retries() -> None:
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    assert router.after_failure(failure(FailureClass.RATE_LIMITED, retry_after=1)) == "retry"
    assert router.after_failure(failure(FailureClass.RATE_LIMITED, retry_after=30)) == "move"


def _raised(message: str) -> BaseException:
    try:
        try:
            raise OSError("inner")
        except OSError as inner:
            raise ConnectionError(message) from inner
    except ConnectionError as error:
        return error


def test_causes_keep_their_tracebacks_until_nothing_can_raise_them() -> None:
    """A cause is raised with its traceback (the caller debugs from it); one another attempt
    on the same target replaced, or any once the call was served, never is: their tracebacks
    hold the attempt's frames, and through their locals the call."""
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    first, second, third = _raised("1"), _raised("2"), _raised("3")
    router.failed_here(first)
    router.failed_here(second)
    assert first.__traceback__ is None and first.__cause__ is not None
    assert first.__cause__.__traceback__ is None
    assert second.__traceback__ is not None and second.__cause__ is not None
    assert second.__cause__.__traceback__ is not None
    assert router.move("server_error")
    router.failed_here(third)
    assert router.causes == {"a": second, "b": third}
    assert second.__traceback__ is not None and third.__traceback__ is not None
    router.served()
    assert all(error.__traceback__ is None for error in (second, third))
    assert str(second) == "2" and router.causes["b"] is third  # only the frames are gone


def test_the_callers_own_exception_keeps_its_traceback() -> None:
    """A call made while the caller handles an exception: the attempts' errors have it as
    their ``__context__``, and it is the caller's (``logger.exception``, a bare ``raise``)."""
    router = Router.for_call(Policy(), "a")
    try:
        raise KeyError("missing")
    except KeyError as own:
        attempt = _raised("reset")
        assert attempt.__context__ is own or attempt.__cause__.__context__ is own  # type: ignore[union-attr]
        router.failed_here(attempt)
        router.served()
        assert own.__traceback__ is not None and sys.exc_info()[2] is not None
    broke = StreamInterrupted("cut", partial_text="hel", failure="stream_cut",
                              cause=_raised("cut"))
    router.failed_here(broke)
    router.failed_here(_raised("again"))  # replaces the break, which recovery may still raise
    router.served()
    assert broke.cause is not None and broke.cause.__traceback__ is not None


def test_one_retry_per_target_then_move() -> None:
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    router.tries_here = 2
    assert router.after_failure(failure(FailureClass.SERVER_ERROR)) == "move"


def test_a_target_failing_in_a_row_is_left_at_once_when_a_fallback_is_ready() -> None:
    """The retry on the same target is for a blip: a target that failed the attempt before
    too (refusing connections, resetting them) is down, and the fallback serves now."""
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    router.tries_here = 1
    for kind in (FailureClass.CONNECT_ERROR, FailureClass.CONNECTION_RESET,
                 FailureClass.SERVER_ERROR):
        assert router.after_failure(failure(kind)) == "retry"
        assert router.after_failure(failure(kind), failing=True) == "move"
    alone = Router.for_call(Policy(), "a")  # nowhere else to go: retry as the SDK would
    assert alone.after_failure(failure(FailureClass.CONNECT_ERROR), failing=True) == "retry"


def test_after_the_last_target_the_call_goes_back_to_the_first() -> None:
    """A fallback that fails as a target that would be left (twice, in a row, overloaded, or
    refusing for seconds) must not take the rest of the call's attempts: the official client
    would have spent them on the model asked for."""
    def on_fallback(tries: int) -> Router:
        router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
        router.move("overloaded")
        router.tries_here = tries
        return router

    blip = on_fallback(1)
    assert not blip.would_return(failure(FailureClass.SERVER_ERROR))  # one blip: retry it
    assert blip.current.model == "b"
    for router, kwargs, fault in [
        (on_fallback(2), {}, failure(FailureClass.SERVER_ERROR)),
        (on_fallback(1), {"failing": True}, failure(FailureClass.CONNECT_ERROR)),
        (on_fallback(1), {}, failure(FailureClass.OVERLOADED)),
        (on_fallback(1), {}, failure(FailureClass.RATE_LIMITED, retry_after=5.0)),
    ]:
        assert router.would_return(fault, **kwargs)
        assert router.current.model == "b"  # asking changes nothing
        router.back_to_first()
        assert router.current.model == "a" and router.tries_here == 0
        assert not router.has_fallback  # the fallback, tried and failed, is not tried again
    for fault in (failure(FailureClass.AUTH, retryable=False),
                  failure(FailureClass.SERVER_ERROR, retryable=False)):
        assert not on_fallback(2).would_return(fault)
    assert not Router.for_call(Policy(fallbacks={"a": ["b"]}), "a").would_return(
        failure(FailureClass.OVERLOADED))  # not at the chain's end
    context = Router.for_call(Policy(context_fallbacks={"a": ["large"]}), "a")
    assert context.move("context_length", failure(FailureClass.CONTEXT_LENGTH, retryable=False))
    # "a" cannot hold the prompt
    assert not context.would_return(failure(FailureClass.OVERLOADED))


def test_context_length_goes_to_the_context_chain_only() -> None:
    policy = Policy(fallbacks={"small": ["other"]}, context_fallbacks={"small": ["large"]})
    router = Router.for_call(policy, "small")
    ctx = failure(FailureClass.CONTEXT_LENGTH, retryable=False)
    assert router.after_failure(ctx) == "move"
    assert router.move("context_length", ctx)
    assert router.current.model == "large"
    no_chain = Router.for_call(Policy(fallbacks={"small": ["other"]}), "small")
    assert no_chain.after_failure(ctx) == "stop"


def test_skip_rules() -> None:
    router = Router.for_call(Policy(fallbacks={"a": ["b"]}), "a")
    assert router.skip_reason(circuit_open=True, expected_latency=None, remaining=None,
                              saturated=False, batch=False) == "circuit_open"
    assert router.skip_reason(circuit_open=False, expected_latency=6.0, remaining=10.0,
                              saturated=False, batch=False) == "too_slow_for_deadline"
    assert router.skip_reason(circuit_open=False, expected_latency=1.0, remaining=10.0,
                              saturated=True, batch=True) == "saturated"
    assert router.skip_reason(circuit_open=False, expected_latency=1.0, remaining=10.0,
                              saturated=True, batch=False) is None
    router.move("x")
    # The last target is never skipped for latency or saturation.
    assert router.skip_reason(circuit_open=False, expected_latency=60.0, remaining=1.0,
                              saturated=True, batch=True) is None


def test_residency_filters_and_fails_closed() -> None:
    policy = Policy(region="eu", allowed_regions="eu",
                    fallbacks={"gpt-4.1": ["gpt-4.1@us", "gpt-4.1-mini"]})
    router = Router.for_call(policy, "gpt-4.1")
    assert [str(t) for t in router.chain] == ["gpt-4.1@eu", "gpt-4.1-mini@eu"]
    assert [str(t) for t in router.blocked] == ["gpt-4.1@us"]
    error = router.residency_error()
    assert error is not None and error.target == "gpt-4.1@us"
    with pytest.raises(ResidencyViolation, match="outside RESILIENT_LLM_ALLOWED_REGIONS"):
        Router.for_call(Policy(allowed_regions="eu"), "gpt-4.1")  # own region unknown


def test_target_parsing() -> None:
    assert Target.parse("m@EU") == Target("m", "eu")
    assert Target.parse("m", default_region="us") == Target("m", "us")
    assert str(Target("m", "eu")) == "m@eu"


# --- breakers, pure -------------------------------------------------------------------------------


def test_breaker_opens_probes_once_and_closes() -> None:
    rng = FakeRandom(fixed=0.0)
    breaker = Breaker(thresholds=Thresholds(min_calls=5, failure_ratio=0.5, break_for=5.0))
    down = failure(FailureClass.OVERLOADED, status=503)
    for second in range(5):
        assert breaker.allow(float(second))
        breaker.record(float(second), down, rng)
    assert breaker.state(4.0) == "open"
    assert not breaker.allow(8.9)
    assert breaker.allow(9.0)  # half-open: one probe
    assert not breaker.allow(9.1)  # ...and only one
    breaker.record(9.5, down, rng)
    assert breaker.state(9.5) == "open" and not breaker.allow(14.4)
    assert breaker.allow(14.5)
    breaker.record(14.6, None, rng)
    assert breaker.state(14.6) == "closed" and breaker.allow(14.7)


def test_breaker_ignores_rate_limits_and_counts_4xx_as_healthy() -> None:
    rng = FakeRandom(fixed=0.0)
    breaker = Breaker(thresholds=Thresholds(min_calls=5))
    for second in range(10):
        breaker.record(float(second), failure(FailureClass.RATE_LIMITED), rng)
        breaker.record(float(second), failure(FailureClass.INVALID_REQUEST, retryable=False), rng)
    assert breaker.state(10.0) == "closed"


def test_break_interval_is_jittered() -> None:
    opened = []
    for u in (0.0, 0.999):
        breaker = Breaker(thresholds=Thresholds(min_calls=1, break_for=5.0))
        breaker.record(0.0, failure(FailureClass.SERVER_ERROR), FakeRandom(fixed=u))
        opened.append(breaker.snapshot(0.0).open_until)
    assert opened[0] == pytest.approx(5.0) and opened[1] == pytest.approx(7.4975)


# --- through the drop-in client, in process ----------------------------------------------------


def completion(model: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"from {model}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ByModel:
    """A mock provider whose answer depends on the requested model."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.models: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        self.models.append(model)
        answer = self.answers.get(model, 200)
        if isinstance(answer, list):  # answers in turn, the last one from then on
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer == 200:
            return httpx2.Response(200, json=completion(model))
        status, code, *retry_after = answer
        headers = {"retry-after": str(retry_after[0])} if retry_after else {}
        return httpx2.Response(status, headers=headers, json={
            "error": {"message": f"reason {code}", "type": "x", "code": code}})


def client(handler: ByModel, clock: FakeClock | None = None, **policy: Any) -> OpenAI:
    c = OpenAI(api_key="sk-test", base_url="http://provider.test/v1", policy=Policy(**policy),
               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    c._resilient_clock = clock or FakeClock()
    c._resilient_rng = FakeRandom(fixed=0.5)
    return c


def test_attempts_that_run_out_before_the_chain_name_what_was_not_tried() -> None:
    chain = {"gpt-4.1": ["gpt-4.1-mini", "gpt-4o"]}
    down = {"gpt-4.1": (503, None), "gpt-4.1-mini": (503, None), "gpt-4o": (503, None)}
    for attempts, tried in ((1, ["gpt-4.1"]), (2, ["gpt-4.1", "gpt-4.1-mini"])):
        handler = ByModel(**down)
        with client(handler, fallbacks=chain, max_attempts=attempts) as c, \
                pytest.raises(AllTargetsFailed) as info:
            c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert handler.models == tried and list(info.value.causes) == tried
        untried = ", ".join(m for m in ("gpt-4.1-mini", "gpt-4o") if m not in tried)
        assert str(info.value) == (
            f"every target tried failed ({', '.join(tried)}); last failure: overloaded, "
            f"HTTP 503, x; not tried: {untried} (no attempt left of max_attempts={attempts})")
        assert len(info.value.attempts) == attempts
        assert isinstance(info.value, openai.InternalServerError)  # as the official error


def test_persistent_overload_is_answered_by_the_fallback() -> None:
    handler = ByModel(**{"gpt-4.1": (503, None)})
    with client(handler, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]}) as c:
        answer = c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert answer.model == "gpt-4.1-mini"
    assert handler.models == ["gpt-4.1", "gpt-4.1-mini"]
    report = outcome(answer)
    assert report.degraded and report.served_by == "gpt-4.1-mini"
    assert report.reason == "overloaded"
    assert [(a.target, a.failure) for a in report.attempts] == [
        ("gpt-4.1", "overloaded"), ("gpt-4.1-mini", None)]


def test_context_length_goes_to_the_larger_model_after_one_attempt() -> None:
    handler = ByModel(**{"gpt-4.1-mini": (400, "context_length_exceeded")})
    with client(handler, context_fallbacks={"gpt-4.1-mini": ["gpt-4.1"]}) as c:
        answer = c.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES)
    assert handler.models == ["gpt-4.1-mini", "gpt-4.1"]
    assert outcome(answer).reason == "context_length"


def test_content_policy_propagates_with_the_providers_reason() -> None:
    handler = ByModel(**{"gpt-4.1": (400, "content_policy_violation")})
    with client(handler, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]}) as c, \
            pytest.raises(openai.BadRequestError, match="reason content_policy_violation"):
        c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert handler.models == ["gpt-4.1"]


def test_all_targets_failed_carries_each_cause_as_the_sdk_error() -> None:
    handler = ByModel(a=(503, None), b=(500, None))
    with client(handler, fallbacks={"a": ["b"]}, max_attempts=4) as c, \
            pytest.raises(AllTargetsFailed) as info:
        c.chat.completions.create(model="a", messages=MESSAGES)
    assert set(info.value.causes) == {"a", "b"}
    assert isinstance(info.value.causes["a"], openai.InternalServerError)
    assert len(handler.models) == 4


def test_a_fallback_that_is_down_gives_the_attempts_back_to_the_primary() -> None:
    handler = ByModel(a=[(503, None), (503, None), 200], b=(503, None))
    with client(handler, fallbacks={"a": ["b"]}, max_attempts=4) as c:
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
    # A 503 moves at once; the fallback's 503 sends the rest back (the official: a, a, a).
    assert handler.models == ["a", "b", "a", "a"]
    assert answer.model == "a" and outcome(answer).served_by == "a"


def test_a_primary_whose_circuit_is_open_is_not_gone_back_to() -> None:
    """The fallback's one overload is retried there, as before: going back to a primary that
    is down would spend the attempts its circuit was opened to save."""
    clock = FakeClock()
    handler = ByModel()
    with client(handler, clock, fallbacks={"a": ["b"]}) as c:
        c.chat.completions.create(model="a", messages=MESSAGES)
        clock.advance(40.0)  # its last success long gone: a primary that is down
        handler.answers["a"] = (503, None)
        for _ in range(6):
            c.chat.completions.create(model="a", messages=MESSAGES)  # b serves; a's circuit opens
        handler.models.clear()
        handler.answers["b"] = [(529, "overloaded"), 200]
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
    assert handler.models == ["b", "b"] and answer.model == "b"


def test_going_back_to_the_primary_waits_for_its_own_retry_after() -> None:
    clock = FakeClock()
    handler = ByModel(a=[(429, "rate_limit_exceeded", 10), 200], b=(529, "overloaded"))
    with client(handler, clock, fallbacks={"a": ["b"]}) as c:
        began = clock.now()
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
    assert handler.models == ["a", "b", "a"] and answer.model == "a"
    assert clock.now() - began >= 10.0  # a asked for 10 s: the official client waits them


def test_a_primary_that_asked_for_quiet_is_skipped_then_gone_back_to_after_it() -> None:
    clock = FakeClock()
    handler = ByModel(a=[(429, "rate_limit_exceeded", 3), 200], b=[200, (529, "overloaded"), 200])
    with client(handler, clock, fallbacks={"a": ["b"]}) as c:
        first = c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models == ["a", "b"] and first.model == "b"  # a asked for 3 s
        began = clock.now()
        second = c.chat.completions.create(model="a", messages=MESSAGES)
    # a still wants quiet: skipped for b, whose overload sends the retry back to a once
    # a's 3 s are over (a retry of a that it had none of yet).
    assert handler.models == ["a", "b", "b", "a"] and second.model == "a"
    assert clock.now() - began >= 3.0 - 1e-9
    assert outcome(second).reason == "refusing"


def test_a_call_that_cannot_go_back_ends_as_every_target_failed() -> None:
    clock = FakeClock()
    handler = ByModel()
    with client(handler, clock, fallbacks={"a": ["b"]}, max_attempts=1) as c:
        handler.answers["a"] = (529, "overloaded")
        handler.answers["b"] = (529, "overloaded")
        with pytest.raises(AllTargetsFailed):
            c.chat.completions.create(model="a", messages=MESSAGES)


def test_a_primary_failure_stays_on_the_primary_while_the_fallback_is_unavailable() -> None:
    """The fallback's circuit is open, or it asked for seconds of quiet: retrying the primary,
    as the official client would, is the call's best chance."""
    clock = FakeClock()
    handler = ByModel(b=(503, None))
    with client(handler, clock, fallbacks={"a": ["b"]}) as c:
        for _ in range(5):  # the fallback's own callers open its circuit
            with pytest.raises(openai.InternalServerError):
                c.with_options(max_retries=0).chat.completions.create(model="b", messages=MESSAGES)
        handler.models.clear()
        handler.answers["a"] = [(500, None), 200]
        c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models == ["a", "a"]
    throttled = ByModel(b=(429, "rate_limit_exceeded", 30))
    with client(throttled, FakeClock(), fallbacks={"a": ["b"]}) as c:
        with pytest.raises(openai.RateLimitError):
            c.with_options(max_retries=0).chat.completions.create(model="b", messages=MESSAGES)
        throttled.models.clear()
        throttled.answers["a"] = [(500, None), (500, None), 200]
        c.chat.completions.create(model="a", messages=MESSAGES)
        assert throttled.models == ["a", "a", "a"]


def test_open_circuit_sends_calls_straight_to_the_fallback() -> None:
    clock = FakeClock()
    handler = ByModel(a=(503, None))
    with client(handler, clock, fallbacks={"a": ["b"]}) as c:
        for _ in range(5):
            c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models.count("a") == 5  # the breaker opened on the fifth failure
        handler.models.clear()
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models == ["b"] and outcome(answer).reason == "circuit_open"
        clock.advance(8.0)  # past the (jittered) break: one probe, which succeeds
        handler.answers.clear()
        handler.models.clear()
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models == ["a"] and not outcome(answer).degraded


def test_single_target_with_open_circuit_waits_for_its_probe_not_failing_at_once() -> None:
    """With nowhere else to go, a call refused by an open circuit waits (sending nothing) for
    the target's next probe (one per ``ALONE_PROBE_EVERY``) rather than fail in a
    millisecond: a worker that calls again at once would otherwise hammer the down target
    with first attempts."""
    handler = ByModel(a=(503, None))
    clock = FakeClock()
    with client(handler, clock, max_attempts=1) as c:
        # a target that never succeeded is tried for its first answers before it looks down
        for _ in range(ALONE_WARMUP):
            with pytest.raises(openai.InternalServerError):
                c.chat.completions.create(model="a", messages=MESSAGES)
        handler.models.clear()
        start = clock.now()
        with pytest.raises(openai.InternalServerError):  # the probe's own answer
            c.chat.completions.create(model="a", messages=MESSAGES)
        assert handler.models == ["a"]  # one request: the probe its turn allowed
        assert 0 < clock.now() - start <= ALONE_PROBE_EVERY
        # Right after that probe, the next call waits for the next one; with a deadline too
        # short for that it fails at once, with nothing sent.
    handler.models.clear()
    with client(handler, clock, max_attempts=1, deadline=ALONE_PROBE_EVERY / 2) as short, \
            pytest.raises(CircuitOpen) as info:
        short.chat.completions.create(model="a", messages=MESSAGES)
    assert handler.models == [] and info.value.target == "a"


def test_residency_violation_when_only_the_outside_target_is_left() -> None:
    handler = ByModel(**{"gpt-4.1": (503, None)})
    with client(handler, region="eu", allowed_regions="eu",
                fallbacks={"gpt-4.1": ["gpt-4.1@us"]}) as c, \
            pytest.raises(ResidencyViolation) as info:
        c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert info.value.target == "gpt-4.1@us"
    assert set(handler.models) == {"gpt-4.1"}  # the outside target saw nothing


def test_resilient_decorator_scopes_fallbacks() -> None:
    handler = ByModel(a=(503, None))

    @resilient(fallbacks=["b"])
    def ask(c: OpenAI) -> str:
        answer = c.chat.completions.create(model="a", messages=MESSAGES)
        return str(answer.model)

    with client(handler, max_attempts=2) as c:
        assert ask(c) == "b"
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="a", messages=MESSAGES)


def test_resilient_takes_one_fallback_as_a_name() -> None:
    """A string is one model, not a chain of its characters."""
    handler = ByModel(**{"gpt-4.1": (503, None)})

    @resilient(fallbacks="gpt-4.1-mini")
    def ask(c: OpenAI) -> str:
        return str(c.chat.completions.create(model="gpt-4.1", messages=MESSAGES).model)

    with client(handler, max_attempts=2) as c:
        assert ask(c) == "gpt-4.1-mini"
    assert handler.models == ["gpt-4.1", "gpt-4.1-mini"]
    with pytest.raises(ConfigError, match=r"resilient\(fallbacks=\.\.\.\)=3 is invalid"):
        resilient(fallbacks=3)  # type: ignore[arg-type]


# --- end to end over loopback HTTP ----------------------------------------------------------


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


def test_each_body_a_call_sends_has_its_own_idempotency_key(provider: FaultProvider) -> None:
    """Retries of one body share its key; a fallback's body (another model) gets one of its
    own, derived from the call's: a key is never sent with two payloads."""
    provider.set_default(Fault.status(500), model="gpt-4.1")
    provider.script(Fault.status(500), Fault.ok(), model="gpt-4.1-mini")
    policy = Policy(fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with OpenAI(base_url="http://provider.test/v1", api_key="sk-test", policy=policy,
                http_client=httpx2.Client(transport=provider.transport())) as c:
        c._resilient_clock = FakeClock()
        answer = c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    sent = [(r.model, r.headers["idempotency-key"]) for r in provider.requests]
    assert [model for model, _ in sent] == ["gpt-4.1", "gpt-4.1", "gpt-4.1-mini",
                                            "gpt-4.1-mini"]
    (first, again, fallback, retried) = [key for _, key in sent]
    base = outcome(answer).idempotency_key
    assert first == again == base and fallback == retried != base
    assert base is not None and fallback.startswith(base + "-")


def test_primary_that_never_answers_is_cut_at_a_budget_share(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.hang(), model="gpt-4.1")
    policy = Policy(deadline=4, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as c:
        start = time.monotonic()
        answer = c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        took = time.monotonic() - start
    assert answer.model == "gpt-4.1-mini"
    assert 1.8 <= took <= 3.0  # the primary got half the budget, not all of it


def test_slow_first_token_on_the_primary_streams_from_the_fallback(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.first_token_delay(8.0), model="gpt-4.1")
    policy = Policy(deadline=10, first_token_timeout=1.0,
                    fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as c:
        start = time.monotonic()
        stream = c.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
        chunks = list(stream)
        took = time.monotonic() - start
    assert {chunk.model for chunk in chunks} == {"gpt-4.1-mini"}
    assert took < 3.0
    assert outcome(stream).reason == "first_token_timeout" and outcome(stream).finished


def test_thirty_second_outage_probes_once_per_interval_and_recovers_within_ten_seconds() -> None:
    """Primary down for the first 30 s of one request per second (fake clock, real SDK)."""
    provider = FaultProvider()
    provider.set_default(Fault.status(503), model="gpt-4.1")
    clock = FakeClock()
    policy = Policy(fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with OpenAI(base_url="http://provider.test/v1", api_key="sk-test", policy=policy,
                http_client=httpx2.Client(transport=provider.transport())) as c:
        c._resilient_clock, c._resilient_rng = clock, FakeRandom(fixed=0.5)
        served = []
        primary_hits = []
        for second in range(45):
            if second == 30:
                provider.set_default(Fault.ok(), model="gpt-4.1")  # the primary recovers
            before = sum(1 for r in provider.requests if r.model == "gpt-4.1")
            answer = c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            served.append(answer.model)
            if sum(1 for r in provider.requests if r.model == "gpt-4.1") > before:
                primary_hits.append(second)
            clock.advance(1.0)
    assert len(served) == 45  # every request answered
    probes = [s for s in primary_hits if 5 <= s < 30]  # after the breaker opened
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(gap >= 5 for gap in gaps)  # at most one probe per (≥ 5 s) open interval
    back = next(s for s in range(30, 45) if served[s] == "gpt-4.1")
    assert back - 30 <= 10
    assert all(model == "gpt-4.1" for model in served[back:])


def test_circuit_changes_are_reported_as_events() -> None:
    from resilient_llm import subscribe

    seen: list[tuple[str | None, str]] = []
    unsubscribe = subscribe(lambda record, event: seen.append((event.target, event.detail))
                            if event.kind == "breaker_changed" else None)
    clock = FakeClock()
    handler = ByModel(a=(503, None))
    try:
        with client(handler, clock, fallbacks={"a": ["b"]}) as c:
            for _ in range(5):
                c.chat.completions.create(model="a", messages=MESSAGES)
            clock.advance(8.0)
            handler.answers.clear()
            c.chat.completions.create(model="a", messages=MESSAGES)
    finally:
        unsubscribe()
    assert seen == [("a", "open"), ("a", "half_open"), ("a", "closed")]


def test_two_regions_of_a_model_are_two_targets() -> None:
    """The primary region refuses connections, the same model in another region serves. The
    regions used to share one pressure state (one breaker): the fallback's successes hid the
    primary's failures, so every call tried the dead region again and backed off for it.
    Now the primary fails twice in a row and later calls leave it at once."""
    sent: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.host)
        if request.url.host == "down.test":
            raise httpx2.ConnectError("connection refused", request=request)
        return httpx2.Response(200, json=completion("m"))

    c = OpenAI(api_key="sk-test", base_url="http://down.test/v1",
               policy=Policy(fallbacks={"m": ["m@up"]},
                             region_endpoints={"up": "http://up.test"}),
               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    c._resilient_clock, c._resilient_rng = FakeClock(), FakeRandom(fixed=0.5)
    with c:
        for _ in range(3):
            answer = c.chat.completions.create(model="m", messages=MESSAGES)
            assert outcome(answer).served_region == "up"
    # the first call tries the primary twice (a blip gets one retry); later ones once each
    assert sent == ["down.test", "down.test", "up.test", "down.test", "up.test",
                    "down.test", "up.test"]
    targets = {s.target.rsplit("|", 1)[1] for s in pressure_snapshot()}
    assert {"m", "m@up"} <= targets
