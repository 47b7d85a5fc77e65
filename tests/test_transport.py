"""The sync and async drivers over an in-process mock transport, on an injected clock."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import pytest

from resilient_llm import (
    AsyncResilientTransport,
    CircuitOpen,
    DeadlineExceeded,
    Policy,
    ResilientTransport,
    StreamInterrupted,
)
from resilient_llm.testing import FakeClock, FakeRandom

from .conftest import Driver

BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
OK = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
      "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "hello"}}]}


def error(status: int, code: str | None = None, headers: dict[str, str] | None = None,
          etype: str = "server_error") -> httpx2.Response:
    return httpx2.Response(status, headers=headers,
                           json={"error": {"message": "m", "type": etype, "code": code}})


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def chunk(text: str | None = None, role: str | None = None) -> str:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-4.1", "choices": [{"index": 0, "delta": delta}]})


def stream_response(parts: list[bytes], fail: Exception | None = None) -> httpx2.Response:
    def body() -> Iterator[bytes]:
        yield from parts
        if fail is not None:
            raise fail

    return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                           content=body())


class Script:
    """Answers requests from a list of factories; records every request it saw."""

    def __init__(self, *answers: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)


def post(client: Any, body: Any = BODY) -> httpx2.Response:
    response: httpx2.Response = client.post("/v1/chat/completions", json=body)
    return response


# --- statuses and transport errors -------------------------------------------------------------


def test_retry_after_is_honoured_and_the_key_is_stable(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(429, "rate_limit_exceeded", {"retry-after": "1"}),
                    lambda r: httpx2.Response(200, json=OK))
    with driver.client(script, clock=clock) as client:
        response = post(client)
    assert response.status_code == 200
    assert len(script.requests) == 2
    assert clock.sleeps and clock.sleeps[0] >= 1.0
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(keys) == 1 and next(iter(keys)).startswith("rllm-")


def test_invalid_request_is_sent_exactly_once(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(400, None, etype="invalid_request_error"))
    with driver.client(script, clock=clock) as client:
        response = post(client)
    assert response.status_code == 400
    assert len(script.requests) == 1 and clock.sleeps == []


def test_retry_after_beyond_the_deadline_fails_at_once(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(429, "rate_limit_exceeded", {"retry-after": "30"}))
    with driver.client(script, clock=clock, deadline=2) as client, \
            pytest.raises(DeadlineExceeded) as info:
        post(client)
    assert clock.sleeps == []
    assert len(script.requests) == 1
    assert isinstance(info.value.cause, httpx2.HTTPStatusError)
    assert info.value.cause.response.status_code == 429


def test_attempt_cap_returns_the_last_failure(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(503))
    with driver.client(script, clock=clock, max_attempts=3) as client:
        response = post(client)
    assert response.status_code == 503
    assert len(script.requests) == 3 and len(clock.sleeps) == 2


def test_backoff_grows_and_stays_inside_the_deadline(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(500))
    with driver.client(script, clock=clock, max_attempts=20, deadline=5) as client, \
            pytest.raises((DeadlineExceeded, CircuitOpen)):
        post(client)
    assert sum(clock.sleeps) <= 5.0
    # fixed U=0.5: the window doubles; the last wait is clipped to leave the retry its time
    assert clock.sleeps[:-1] == sorted(clock.sleeps[:-1])
    assert clock.sleeps[:4] == [0.125, 0.25, 0.5, 1.0]


def test_connection_errors_are_retried(driver: Driver) -> None:
    clock = FakeClock()

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    script = Script(refuse, lambda r: httpx2.Response(200, json=OK))
    with driver.client(script, clock=clock) as client:
        assert post(client).status_code == 200
    assert len(script.requests) == 2


def test_read_timeout_at_the_deadline_raises_deadline_exceeded(driver: Driver) -> None:
    clock = FakeClock()

    def slow(request: httpx2.Request) -> httpx2.Response:
        clock.advance(2.0)  # the attempt used the whole budget
        raise httpx2.ReadTimeout("slow", request=request)

    with driver.client(Script(slow), clock=clock, deadline=2) as client, \
            pytest.raises(DeadlineExceeded) as info:
        post(client)
    assert isinstance(info.value.cause, httpx2.ReadTimeout)


def test_timeouts_sent_are_clipped(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: httpx2.Response(200, json=OK))
    with driver.client(script, clock=clock, deadline=3) as client:
        client.post("/v1/chat/completions", json=BODY, timeout=600)
    sent = script.requests[0].extensions["timeout"]
    assert all(value is not None and value <= 3.0 for value in sent.values())


def test_application_errors_propagate_unretried(driver: Driver) -> None:
    clock = FakeClock()

    def broken(request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("a bug in a hook")

    script = Script(broken)
    with driver.client(script, clock=clock) as client, pytest.raises(RuntimeError, match="bug"):
        post(client)
    assert len(script.requests) == 1


class _Foreign(Exception):
    """An exception some SDK retries although httpx2 does not raise it."""


def test_exceptions_the_rule_accepts_are_retried_as_connection_failures(driver: Driver) -> None:
    from resilient_llm import ForeignTransportError

    clock = FakeClock()

    def foreign(request: httpx2.Request) -> httpx2.Response:
        raise _Foreign("tls record layer failure")

    def rule(exc: Exception) -> bool:
        return isinstance(exc, _Foreign)

    script = Script(foreign, lambda r: httpx2.Response(200, json=OK))
    with driver.client(script, clock=clock, retry_exceptions=rule, max_attempts=2) as client:
        assert post(client).status_code == 200
        assert len(script.requests) == 2 and len(clock.sleeps) == 1
        script.answers = [foreign]  # every attempt fails: the caller sees the wrapped error
        with pytest.raises(ForeignTransportError) as info:
            post(client)
    assert len(script.requests) == 4  # two attempts each
    assert isinstance(info.value.original, _Foreign)
    assert info.value.__cause__ is info.value.original
    assert info.value.request.url.path == "/v1/chat/completions"

    def other(request: httpx2.Request) -> httpx2.Response:
        raise ValueError("not for the rule")

    script = Script(other)
    with driver.client(script, clock=clock, retry_exceptions=rule) as client, \
            pytest.raises(ValueError, match="not for the rule"):
        post(client)
    assert len(script.requests) == 1


def _anything(exc: Exception) -> bool:
    """The anthropic SDK's rule: every exception that is not its own is retried."""
    return True


def _foreign_transport(handler: Callable[[httpx2.Request], Any], clock: FakeClock,
                       asynchronous: bool, **policy: Any) -> Any:
    kind: Any = AsyncResilientTransport if asynchronous else ResilientTransport
    return kind(httpx2.MockTransport(handler), policy=Policy(**policy), clock=clock,
                rng=FakeRandom(fixed=0.5), retry_exceptions=_anything)


async def _post_with(transport: Any, asynchronous: bool) -> httpx2.Response:
    if asynchronous:
        async with httpx2.AsyncClient(transport=transport, base_url="http://provider.test") as ac:
            response: httpx2.Response = await ac.post("/v1/chat/completions", json=BODY)
            return response
    with httpx2.Client(transport=transport, base_url="http://provider.test") as client:
        return post(client)


@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_the_rule_covers_the_wrapped_transport_not_resilient_llms_own_code(
    asynchronous: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm import ForeignTransportError
    from resilient_llm.transport.shared import DriverBase

    clock = FakeClock()

    def foreign(request: httpx2.Request) -> httpx2.Response:
        raise _Foreign("from below")

    script = Script(foreign, lambda r: httpx2.Response(200, json=OK))
    transport = _foreign_transport(script, clock, asynchronous)
    assert (await _post_with(transport, asynchronous)).status_code == 200
    assert len(script.requests) == 2  # retried, as the SDK would
    script = Script(foreign)
    with pytest.raises(ForeignTransportError):
        await _post_with(_foreign_transport(script, clock, asynchronous, max_attempts=2),
                         asynchronous)
    assert len(script.requests) == 2

    def broken_observe(*args: Any) -> None:
        raise RuntimeError("a bug in resilient-llm")

    monkeypatch.setattr(DriverBase, "observe", broken_observe)
    script = Script(lambda r: httpx2.Response(200, json=OK))
    with pytest.raises(RuntimeError, match="a bug in resilient-llm"):
        await _post_with(_foreign_transport(script, clock, asynchronous), asynchronous)
    assert len(script.requests) == 1  # never retried, never wrapped


@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_foreign_error_while_reading_the_body_is_not_retried(asynchronous: bool) -> None:
    clock = FakeClock()

    def chunks() -> Iterator[bytes]:
        yield b'{"id": '
        raise _Foreign("while reading")

    async def achunks() -> AsyncIterator[bytes]:
        yield b'{"id": '
        raise _Foreign("while reading")

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=achunks() if asynchronous else chunks())

    script = Script(answer)
    with pytest.raises(_Foreign):
        await _post_with(_foreign_transport(script, clock, asynchronous), asynchronous)
    assert len(script.requests) == 1  # the same in both drivers: only sending is covered


# --- the two drivers used to disagree here ----------------------------------------------------


def _in_call(clock: FakeClock) -> tuple[Any, Any]:
    from resilient_llm.engine.call import start_call

    return start_call(Policy(), target="gpt-4.1", clock=clock)


def _error_body_then(fail: Exception) -> Callable[[httpx2.Request], httpx2.Response]:
    def answer(request: httpx2.Request) -> httpx2.Response:
        def body() -> Iterator[bytes]:
            yield b'{"error": {"message": "m", '
            raise fail

        return httpx2.Response(500, headers={"content-type": "application/json"},
                               content=body())

    return answer


def test_a_failed_error_body_read_is_a_retryable_failure_with_its_status(driver: Driver) -> None:
    from resilient_llm.engine.call import end_call

    clock = FakeClock()
    script = Script(_error_body_then(httpx2.ReadError("reset while reading")),
                    lambda r: httpx2.Response(200, json=OK))
    call, token = _in_call(clock)
    try:
        with driver.client(script, clock=clock) as client:
            assert post(client).status_code == 200
    finally:
        end_call(token)
    assert len(script.requests) == 2
    first, second = call.record.attempts
    assert (first.number, first.failure, first.status) == (1, "connection_reset", 500)
    assert (second.number, second.failure, second.status) == (2, None, 200)


def test_an_attempt_that_ends_in_a_foreign_error_is_still_recorded(driver: Driver) -> None:
    from resilient_llm.engine.call import end_call

    clock = FakeClock()
    script = Script(_error_body_then(_Foreign("a bug below the transport")))
    call, token = _in_call(clock)
    try:
        with driver.client(script, clock=clock) as client, pytest.raises(_Foreign):
            post(client)
    finally:
        end_call(token)
    assert len(script.requests) == 1  # not a provider failure: never retried
    (attempt,) = call.record.attempts
    assert (attempt.number, attempt.target, attempt.status) == (1, "gpt-4.1", 500)


def test_one_shot_bodies_are_not_retried(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: error(503))

    async def parts() -> AsyncIterator[bytes]:
        yield b"part1"
        yield b"part2"

    content: Any = parts() if driver.asynchronous else iter([b"part1", b"part2"])
    with driver.client(script, clock=clock) as client:
        response = client.post("/v1/files", content=content)
    assert response.status_code == 503 and len(script.requests) == 1


# --- streams ----------------------------------------------------------------------------------


def test_error_event_before_output_is_retried(driver: Driver) -> None:
    clock = FakeClock()
    overloaded = json.dumps({"error": {"type": "overloaded_error", "message": "busy"}})
    script = Script(
        lambda r: stream_response([sse(chunk(role="assistant")), sse(overloaded)]),
        lambda r: stream_response([sse(chunk(role="assistant"), chunk("Hel"), chunk("lo"),
                                       "[DONE]")]),
    )
    with driver.client(script, clock=clock) as client, \
            client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        text = b"".join(response.iter_bytes())
    assert b"Hel" in text and b"[DONE]" in text
    assert len(script.requests) == 2


def test_cut_after_output_raises_stream_interrupted_with_partial_text(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(lambda r: stream_response(
        [sse(chunk(role="assistant"), chunk("Hel"), chunk("lo wor"))],
        fail=httpx2.RemoteProtocolError("peer closed connection"),
    ))
    with driver.client(script, clock=clock) as client, \
            client.stream("POST", "/v1/chat/completions", json=BODY) as response, \
            pytest.raises(StreamInterrupted) as info:
        for _ in response.iter_bytes():
            pass
    assert info.value.partial_text == "Hello wor"
    assert info.value.failure == "stream_cut"
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("tail", "failure"),
    [([], "stream_incomplete"), (["{not json"], "stream_malformed")],
)
def test_truncated_or_malformed_stream_never_looks_complete(
    tail: list[str], failure: str, driver: Driver,
) -> None:
    clock = FakeClock()
    parts = [sse(chunk("Hi"))] + ([sse(*tail)] if tail else [])
    script = Script(lambda r: stream_response(parts))
    with driver.client(script, clock=clock) as client, \
            client.stream("POST", "/v1/chat/completions", json=BODY) as response, \
            pytest.raises(StreamInterrupted) as info:
        for _ in response.iter_bytes():
            pass
    assert info.value.failure == failure and info.value.partial_text == "Hi"


def test_malformed_event_before_output_is_retried(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(
        lambda r: stream_response([sse(chunk(role="assistant"), "{oops")]),
        lambda r: stream_response([sse(chunk("ok"), "[DONE]")]),
    )
    with driver.client(script, clock=clock) as client, \
            client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        assert b"[DONE]" in b"".join(response.iter_bytes())
    assert len(script.requests) == 2


def test_cut_before_output_is_retried(driver: Driver) -> None:
    clock = FakeClock()
    script = Script(
        lambda r: stream_response([sse(chunk(role="assistant"))],
                                  fail=httpx2.ReadError("reset")),
        lambda r: stream_response([sse(chunk("ok"), "[DONE]")]),
    )
    with driver.client(script, clock=clock) as client, \
            client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        assert b"[DONE]" in b"".join(response.iter_bytes())
    assert len(script.requests) == 2


# --- every failure class through both drivers -------------------------------------------------

CLASS_CASES = [
    # (name, response factory or exception, attempts with max_attempts=2)
    ("rate_limited", lambda r: error(429, "rate_limit_exceeded"), 2),
    ("quota_exhausted", lambda r: error(429, "insufficient_quota", etype="insufficient_quota"), 1),
    ("overloaded", lambda r: error(529, etype="overloaded_error"), 2),
    ("server_error", lambda r: error(500), 2),
    ("timeout", lambda r: error(504), 2),
    ("conflict", lambda r: error(409), 2),
    ("context_length", lambda r: error(400, "context_length_exceeded"), 1),
    ("content_policy", lambda r: error(400, "content_policy_violation"), 1),
    ("auth", lambda r: error(401, etype="authentication_error"), 1),
    ("invalid_request", lambda r: error(422, etype="invalid_request_error"), 1),
    ("connect_error", httpx2.ConnectError("refused"), 2),
    ("connection_reset", httpx2.RemoteProtocolError("reset"), 2),
    ("read_timeout", httpx2.ReadTimeout("slow"), 2),
]


def _handler(case: Any, seen: list[httpx2.Request]) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if isinstance(case, httpx2.TransportError):
            raise type(case)(str(case), request=request)
        return case(request)  # type: ignore[no-any-return]

    return handler


@pytest.mark.parametrize(("name", "case", "attempts"), CLASS_CASES, ids=[c[0] for c in CLASS_CASES])
def test_failure_class(name: str, case: Any, attempts: int, driver: Driver) -> None:
    seen: list[httpx2.Request] = []
    clock = FakeClock()
    with driver.client(_handler(case, seen), clock=clock, max_attempts=2) as client, \
            contextlib.suppress(httpx2.TransportError):
        post(client)
    assert len(seen) == attempts
    assert len(clock.sleeps) == attempts - 1


# --- pressure in the drivers -----------------------------------------------------------------


def test_admission_that_cannot_happen_before_the_deadline_fails_at_once(driver: Driver) -> None:
    clock = FakeClock()
    paced = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0",
             "x-ratelimit-reset-requests": "20s"}  # 0.5 requests per second, none left
    script = Script(lambda r: httpx2.Response(200, json=OK, headers=paced))
    with driver.client(script, clock=clock, deadline=10) as client:
        assert post(client).status_code == 200
    with driver.client(script, clock=clock, deadline=1) as client, \
            pytest.raises(DeadlineExceeded, match="deadline"):
        post(client)
    assert len(script.requests) == 1  # the second call never reached the provider
    assert clock.sleeps == []


def test_pacer_wait_that_fits_is_waited_and_reported_as_queue_wait(driver: Driver) -> None:
    from resilient_llm.engine.call import start_call

    clock = FakeClock()
    paced = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0",
             "x-ratelimit-reset-requests": "20s"}
    script = Script(lambda r: httpx2.Response(200, json=OK, headers=paced))
    with driver.client(script, clock=clock, deadline=10) as client:
        post(client)
        call, token = start_call(Policy(deadline=10), target="gpt-4.1", clock=clock)
        try:
            post(client)
        finally:
            from resilient_llm.engine.call import end_call

            end_call(token)
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(2.0)
    assert call.record.queue_wait == pytest.approx(2.0)


def test_a_token_limit_paces_by_the_size_of_each_request(driver: Driver) -> None:
    from resilient_llm.engine.pressure import estimate_tokens
    from resilient_llm.engine.registry import registry

    clock = FakeClock()
    # 6 000 tokens a minute (100/s) with 1 000 left: a small request goes at once, a large one
    # waits for the tokens it needs, which the driver learns only from the request body.
    paced = {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "1000",
             "x-ratelimit-reset-tokens": "50s"}
    script = Script(lambda r: httpx2.Response(200, json=OK, headers=paced))
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 8_000}]}
    with driver.client(script, clock=clock, deadline=60) as client:
        post(client)  # learns the limit
        (state,) = registry._targets.values()
        assert state.paces_tokens
        post(client)
        assert clock.sleeps == []  # a small request fits in what is left
        client.post("/v1/chat/completions", json=big)
    need = estimate_tokens(json.dumps(big).encode())
    assert need > 1_000 and len(clock.sleeps) == 1
    assert clock.sleeps[0] == pytest.approx((need - 1_000) / 100, rel=0.05)


def test_spent_retry_budget_fails_instead_of_adding_load(driver: Driver) -> None:
    from resilient_llm import RetryBudgetExhausted
    from resilient_llm.engine.plan import REFUSAL_PATIENCE
    from resilient_llm.engine.registry import registry

    clock = FakeClock()
    script = Script(lambda r: httpx2.Response(200, json=OK), lambda r: error(503))
    with driver.client(script, clock=clock, max_attempts=4) as client:
        assert post(client).status_code == 200
        (state,) = registry._targets.values()
        state.budget.tokens = 5.0  # sustained failures elsewhere spent it down to the floor
        state.budget.success_rate = 0.0  # ...and nothing succeeded for a while
        state.budget.seen = state.budget.WARMUP
        state._last_reserve_retry = clock.now()  # ...and the reserve retry of this second
        with pytest.raises(RetryBudgetExhausted) as info:
            post(client)
    # The refused call does not fail in a millisecond (a worker calling again at once would
    # send a first attempt each time): it is held as long as the official SDK's retries would
    # take, sending nothing, then asks the budget again: its reserve allows one retry a second
    # to a target where nothing succeeds, and that retry failed too.
    assert clock.sleeps == [pytest.approx(REFUSAL_PATIENCE)]
    assert len(script.requests) == 3
    assert isinstance(info.value.cause, httpx2.HTTPStatusError)
    assert "retry budget" in str(info.value)


def test_the_first_header_with_a_value_wins() -> None:
    from resilient_llm.transport.shared import header

    headers = httpx2.Headers([(b"Content-Type", b"application/json"), (b"X-Twice", b"a"),
                              (b"x-twice", b"b")])
    assert header(headers, "absent", "x-twice", "content-type") == "a, b"
    assert header(headers, "absent", "missing") is None
    # like ``get(a) or get(b)``: an empty value gives way to a later name, else is the answer
    keyed = httpx2.Headers({"Authorization": "", "x-api-key": "sk-k"})
    assert header(keyed, "authorization", "x-api-key") == "sk-k"
    assert header(keyed, "authorization", "absent") == ""


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_attempt_limit_expires_and_says_so(anyio_backend: str) -> None:
    import anyio

    from resilient_llm.transport.asynchronous import _AttemptLimit

    async with _AttemptLimit(0.02) as limit:
        await anyio.sleep(5)
    assert limit.expired
    async with _AttemptLimit(None) as quiet:
        await anyio.sleep(0.001)
    assert not quiet.expired


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_outer_cancellation_is_not_taken_for_the_attempt_limit(
    anyio_backend: str,
) -> None:
    import anyio

    from resilient_llm.transport.asynchronous import _AttemptLimit

    ran_on = False
    with anyio.move_on_after(0.02) as outer:
        async with _AttemptLimit(10) as inner:
            await anyio.sleep(5)
        ran_on = True  # must not run: the cancellation belongs to the outer scope
    assert outer.cancelled_caught and not inner.expired and not ran_on


@pytest.mark.anyio
async def test_a_timeout_error_raised_inside_the_attempt_is_not_its_expiry() -> None:
    from resilient_llm.transport.asynchronous import _AttemptLimit

    with pytest.raises(TimeoutError, match="from the attempt"):
        async with _AttemptLimit(10) as limit:
            raise TimeoutError("from the attempt")
    assert not limit.expired
