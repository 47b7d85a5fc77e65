"""The drop-in ``Anthropic`` / ``AsyncAnthropic`` against the fault-injecting provider.

Engine behaviour (what is retried, how long it waits, which error ends a call) runs in-process
on an injected clock: no sleeping. Wall-clock claims (the deadline holds within 0.3 s, an early
exit closes the upstream connection) run over the loopback server in real, short time.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
from anthropic.lib.credentials import AccessToken
from anthropic.types import MessageParam

import resilient_llm.anthropic as dropin
from resilient_llm import (
    DeadlineExceeded,
    Policy,
    ResilientTransport,
    StreamInterrupted,
    outcome,
)
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.engine.classify import FailureClass
from resilient_llm.engine.registry import registry
from resilient_llm.providers._sse import StreamScanner
from resilient_llm.providers.anthropic import (
    ANTHROPIC,
    classify_stream_error,
    rate_limits,
    reset_seconds,
)
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider, FaultServer, Usage

CLAUDE = "claude-sonnet-4-6"
MSGS: list[MessageParam] = [{"role": "user", "content": "hi"}]
TEXT = "The quick brown fox jumps over the lazy dog again and again."
SLACK = 0.3  # the acceptance bound: deadline + 0.3 s


# --- helpers --------------------------------------------------------------------------------------


def inproc(provider: FaultProvider, *, clock: FakeClock | None = None, seed: int = 0,
           **kwargs: Any) -> Anthropic:
    """A drop-in client on the in-process transport, on an injected clock and random source."""
    client = Anthropic(base_url="http://fault.test", api_key="sk-ant-test",
                       http_client=httpx2.Client(transport=provider.transport()), **kwargs)
    client._resilient_clock = clock or FakeClock()
    client._resilient_rng = FakeRandom(seed)
    return client


def ainproc(provider: FaultProvider, *, clock: FakeClock | None = None,
            **kwargs: Any) -> AsyncAnthropic:
    client = AsyncAnthropic(base_url="http://fault.test", api_key="sk-ant-test",
                            http_client=httpx2.AsyncClient(transport=provider.transport()),
                            **kwargs)
    client._resilient_clock = clock or FakeClock()
    client._resilient_rng = FakeRandom(0)
    return client


def text_of(stream: Any) -> str:
    return "".join(
        e.delta.text for e in stream
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )


# --- retries, classification ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [529, 503])
def test_overload_is_retried_with_jitter_under_one_idempotency_key(
    provider: FaultProvider, status: int
) -> None:
    waits: list[list[float]] = []
    for seed in (1, 2):
        provider.reset()
        registry.clear()  # the second round must not inherit the first one's breaker state
        provider.script(Fault.status(status), Fault.status(status), Fault.ok(text=TEXT))
        clock = FakeClock()
        with inproc(provider, clock=clock, seed=seed) as client:
            message = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
        assert message.content[0].type == "text" and message.content[0].text == TEXT
        requests = provider.requests
        assert [r.status for r in requests] == [status, status, 200]
        keys = {r.headers["idempotency-key"] for r in requests}
        assert len(keys) == 1, "one key for every attempt of the call"
        assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "1", "2"]
        result = outcome(message)
        assert [a.failure for a in result.attempts] == ["overloaded", "overloaded", None]
        assert result.idempotency_key in keys
        backoffs = [a.waited_before for a in result.attempts[1:]]
        # full jitter: U(0, 1 s · 2^(n-1)) for throttles, widened at most 2x under pressure
        assert 0 < backoffs[0] <= 2.0 and 0 < backoffs[1] <= 4.0
        waits.append(backoffs)
    assert waits[0] != waits[1], "jittered: another random draw gives other waits"


def test_bad_request_is_sent_exactly_once(provider: FaultProvider) -> None:
    provider.script(Fault.status(400))
    clock = FakeClock()
    with inproc(provider, clock=clock) as client, pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert len(provider.requests) == 1 and clock.sleeps == []


def test_deadline_ends_a_call_with_the_sdk_error_as_its_cause(provider: FaultProvider) -> None:
    provider.set_default(Fault.status(429, headers={"retry-after": "30"}))
    clock = FakeClock()
    with inproc(provider, clock=clock, policy=Policy(deadline=5)) as client, \
            pytest.raises(DeadlineExceeded) as info:
        client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert isinstance(info.value.cause, anthropic.RateLimitError)
    assert info.value.__cause__ is info.value.cause
    assert len(provider.requests) == 1 and clock.sleeps == []
    # The SDK re-raises a copy of the error (``_make_connection_error``): its message stays.
    assert str(info.value).startswith("deadline of 5 s exceeded after 1 attempt; last failure")


def test_explicit_max_retries_is_honoured(provider: FaultProvider) -> None:
    provider.set_default(Fault.status(529))
    with inproc(provider, max_retries=0) as client, pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert len(provider.requests) == 1
    provider.reset()
    provider.set_default(Fault.status(429))  # a quota signal: no breaker cuts the call short
    with inproc(provider, policy=Policy(max_attempts=2)) as client, \
            pytest.raises(anthropic.RateLimitError):
        client.with_options(max_retries=5).messages.create(
            model=CLAUDE, max_tokens=64, messages=MSGS)
    assert len(provider.requests) == 6


def test_overloaded_error_event_before_any_text_is_retried(provider: FaultProvider) -> None:
    provider.script(Fault.error_event(after_events=2, error_type="overloaded_error"),
                    Fault.ok(text=TEXT))
    with inproc(provider) as client:
        with client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS,
                                    stream=True) as stream:
            assert text_of(stream) == TEXT
        assert [a.failure for a in outcome(stream).attempts] == ["overloaded", None]
    assert len(provider.requests) == 2


def test_messages_stream_helper_is_covered(provider: FaultProvider) -> None:
    provider.script(Fault.stream_cut(after_events=2), Fault.ok(text=TEXT))
    with inproc(provider) as client, client.messages.stream(
        model=CLAUDE, max_tokens=64, messages=MSGS
    ) as stream:
        assert "".join(stream.text_stream) == TEXT
        assert stream.get_final_message().content[0].type == "text"
    assert len(provider.requests) == 2


def test_a_ping_is_not_output_so_a_cut_after_it_is_retried(provider: FaultProvider) -> None:
    # message_start, content_block_start, ping, then the connection drops: no text yet.
    provider.script(Fault.stream_cut(after_events=3), Fault.ok(text=TEXT))
    with inproc(provider) as client:
        stream = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS, stream=True)
        assert text_of(stream) == TEXT
    assert len(provider.requests) == 2


def test_invalid_request_error_event_is_not_retried(provider: FaultProvider) -> None:
    provider.set_default(Fault.error_event(after_events=2, error_type="invalid_request_error"))
    with inproc(provider) as client, pytest.raises(anthropic.APIStatusError) as info:
        text_of(client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS, stream=True))
    assert info.value.status_code == 200  # as the official SDK reports it
    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    ("etype", "kind", "retryable"),
    [
        ("overloaded_error", FailureClass.OVERLOADED, True),
        ("rate_limit_error", FailureClass.RATE_LIMITED, True),
        ("api_error", FailureClass.SERVER_ERROR, True),
        ("invalid_request_error", FailureClass.INVALID_REQUEST, False),
        ("authentication_error", FailureClass.AUTH, False),
        ("something_new", FailureClass.SERVER_ERROR, True),
    ],
)
def test_stream_errors_are_classified_like_their_http_twins(
    etype: str, kind: FailureClass, retryable: bool
) -> None:
    failure = classify_stream_error({"type": "error", "error": {"type": etype, "message": "m"}})
    assert (failure.kind, failure.retryable, failure.status) == (kind, retryable, None)


def test_stream_cut_after_text_raises_stream_interrupted_with_the_partial_text(
    provider: FaultProvider,
) -> None:
    provider.set_default(Fault.stream_cut(after_events=5, text=TEXT))
    with inproc(provider, policy=Policy(stream_recovery="off")) as client:
        stream = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS, stream=True)
        seen: list[str] = []

        def read() -> None:
            for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    seen.append(event.delta.text)  # noqa: PERF401 - kept as it arrives

        with pytest.raises(StreamInterrupted) as info:
            read()
    assert seen and info.value.partial_text == "".join(seen)
    assert TEXT.startswith(info.value.partial_text) and info.value.partial_text != TEXT
    assert info.value.failure == "stream_cut"
    assert len(provider.requests) == 1, "output had reached the caller: no silent retry"


def test_usage_with_cache_tokens_reaches_outcome(provider: FaultProvider) -> None:
    usage = Usage(input_tokens=12, output_tokens=7, cache_read_tokens=2048,
                  cache_creation_tokens=256)
    provider.set_default(Fault.ok(text=TEXT, usage=usage))
    with inproc(provider) as client:
        message = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
        stream = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS, stream=True)
        assert outcome(stream).finished is False
        text_of(stream)
    json_usage = outcome(message).usage
    assert json_usage.cache_read_input_tokens == 2048
    assert json_usage.cache_creation_input_tokens == 256
    streamed = outcome(stream)
    assert streamed.finished
    assert streamed.usage["cache_read_input_tokens"] == 2048
    assert streamed.usage["cache_creation_input_tokens"] == 256
    assert streamed.usage["output_tokens"] == 7


def test_usage_survives_a_stream_without_message_delta_usage() -> None:
    scanner = StreamScanner(ANTHROPIC)
    scanner.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
                 b'{"input_tokens":3,"cache_read_input_tokens":1}}}\n\n'
                 b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
    assert scanner.usage == {"input_tokens": 3, "cache_read_input_tokens": 1}
    assert not scanner.committed and scanner.events == 2


def test_streaming_is_still_required_for_long_requests(provider: FaultProvider) -> None:
    with inproc(provider) as client:
        assert client.timeout == anthropic.DEFAULT_TIMEOUT
        with pytest.raises(ValueError, match="Streaming is required"):
            client.messages.create(model=CLAUDE, max_tokens=100_000, messages=MSGS)
        assert provider.requests == []
        # As in the official client, a caller-chosen timeout lifts the guard.
        client.with_options(timeout=30).messages.create(
            model=CLAUDE, max_tokens=100_000, messages=MSGS)
    assert len(provider.requests) == 1


def test_low_level_options_are_not_modified(provider: FaultProvider) -> None:
    from anthropic._models import FinalRequestOptions

    system = "You are terse. " * 400  # long enough for an automatic cache breakpoint
    body = {"model": CLAUDE, "max_tokens": 8, "system": system, "messages": MSGS}
    options = FinalRequestOptions.construct(method="post", url="/v1/messages", json_data=body)
    given: Any = options.json_data
    with inproc(provider) as client:
        for _ in range(2):  # reused, as the SDK allows
            client.request(httpx2.Response, options)
    assert options.json_data is given
    assert isinstance(given, dict) and given["system"] == system
    assert not isinstance(options.max_retries, int)
    sent = [r.json for r in provider.requests]
    assert all("cache_control" in str(b["system"]) for b in sent)  # edits reach the wire only


def test_placeholders_are_dropped_from_the_body_before_caching_and_lint() -> None:
    import openai

    from resilient_llm.dropin.base import _without_placeholders

    body = {"model": CLAUDE, "system": anthropic.omit, "max_tokens": 8,
            "temperature": anthropic.NOT_GIVEN, "metadata": None, "top_k": openai.omit,
            "messages": MSGS, "stop_sequences": openai.NOT_GIVEN}
    plain = _without_placeholders(body)
    assert plain == {"model": CLAUDE, "max_tokens": 8, "metadata": None, "messages": MSGS}
    assert list(plain) == ["model", "max_tokens", "metadata", "messages"]
    assert len(body) == 8  # the caller's body is left as it was
    already = {"model": CLAUDE, "max_tokens": 8}
    assert _without_placeholders(already) is already  # nothing to drop: no copy
    assert _without_placeholders(None) is None


def test_user_middleware_wraps_the_call_and_the_transport_retries_below_it(
    provider: FaultProvider,
) -> None:
    seen: list[str] = []

    def tag(request: Any, call_next: Any) -> Any:
        seen.append(request.url)
        return call_next(request.copy(headers={**request.headers, "x-tag": "mw"}))

    provider.script(Fault.status(529), Fault.ok(text=TEXT))
    with inproc(provider, middleware=[tag]) as client:
        client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert len(seen) == 1
    assert [r.headers.get("x-tag") for r in provider.requests] == ["mw", "mw"]


def test_foreign_transport_errors_are_retried_as_the_sdk_does() -> None:
    calls: list[httpx2.Request] = []
    boom = RuntimeError("a bug in a custom transport")

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        raise boom

    client = Anthropic(api_key="k", http_client=httpx2.Client(
        transport=httpx2.MockTransport(handler)), policy=Policy(max_attempts=3))
    client._resilient_clock = FakeClock()
    with client, pytest.raises(anthropic.APIConnectionError) as info:
        client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS)
    assert len(calls) == 3
    assert info.value.__cause__ is boom  # exactly what the official client reports


def test_a_401_is_resent_once_with_a_fresh_token(provider: FaultProvider) -> None:
    tokens = iter(["first", "second", "third"])

    def credentials(*, force_refresh: bool = False) -> AccessToken:
        return AccessToken(token=next(tokens), expires_at=None)

    provider.script(Fault.status(401), Fault.ok(text=TEXT))
    client = Anthropic(base_url="http://fault.test", credentials=credentials,
                       http_client=httpx2.Client(transport=provider.transport()))
    with client:
        client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS)
    assert [r.headers["authorization"] for r in provider.requests] == [
        "Bearer first", "Bearer second"]


# --- RESILIENT_LLM_ENABLED=false, copies, signatures, private hooks -------------------------------


def test_disabled_behaves_like_the_official_client(provider: FaultProvider) -> None:
    fast = {"retry-after-ms": "1"}  # the SDK's own backoff, kept short
    provider.script(Fault.status(529, headers=fast), Fault.status(529, headers=fast),
                    Fault.ok(text=TEXT))
    with inproc(provider, policy=Policy(enabled=False)) as client:
        message = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
        assert not any(isinstance(t, ResilientTransport)
                       for t in client._client._mounts.values())
    requests = provider.requests
    assert len(requests) == 3, "the SDK's own two retries"
    assert all("idempotency-key" not in r.headers for r in requests)
    with pytest.raises(LookupError):
        outcome(message)


def test_disabled_from_the_environment(provider: FaultProvider,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_ENABLED", "false")
    with inproc(provider) as client:
        assert client.policy.enabled is False
        client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS)
    assert "idempotency-key" not in provider.requests[0].headers


def test_copies_keep_the_class_and_the_policy(provider: FaultProvider) -> None:
    policy = Policy(deadline=7)
    with inproc(provider, policy=policy) as client:
        copy = client.with_options(timeout=3)
        assert type(copy) is Anthropic and copy.policy is policy
        other = client.copy(policy=Policy(deadline=9))
        assert other.policy.deadline == 9
        assert client.with_middleware().policy is policy
    assert Anthropic.__name__ == "Anthropic"  # the User-Agent names the class


@pytest.mark.parametrize("cls", [Anthropic, AsyncAnthropic])
def test_copy_accepts_every_constructor_parameter(cls: type[Any]) -> None:
    init = set(inspect.signature(cls.__init__).parameters) - {"self"}
    copy = set(inspect.signature(cls.copy).parameters) - {"self"}
    assert "policy" in init and "policy" in copy
    official = inspect.signature(getattr(anthropic, cls.__name__).__init__).parameters
    assert set(official) - {"self"} <= init


def test_private_sdk_hooks_exist_in_the_installed_version(provider: FaultProvider) -> None:
    """Fails loudly when an anthropic release drops a hook this drop-in relies on."""
    from resilient_llm._sdk_versions import sdk_version_status

    assert sdk_version_status("anthropic", anthropic.__version__) == "supported", (
        f"anthropic {anthropic.__version__} is outside {dropin.SUPPORTED_VERSIONS}: re-check "
        f"{dropin.PRIVATE_HOOKS} and the compat suite before widening the tested range"
    )
    for cls in (Anthropic, AsyncAnthropic):
        client = cls(api_key="k")
        for hook in dropin.PRIVATE_HOOKS:
            assert hasattr(client, hook), f"anthropic.{cls.__name__} lost {hook}"
        assert isinstance(client._client, (httpx2.Client, httpx2.AsyncClient))
    signature = inspect.signature(anthropic.Anthropic.request)
    assert list(signature.parameters)[:3] == ["self", "cast_to", "options"]


# --- async ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_overload_retry_and_error_event(provider: FaultProvider) -> None:
    provider.script(Fault.status(529), Fault.ok(text=TEXT),
                    Fault.error_event(after_events=2), Fault.ok(text=TEXT))
    async with ainproc(provider) as client:
        message = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
        assert [a.failure for a in outcome(message).attempts] == ["overloaded", None]
        async with client.messages.stream(model=CLAUDE, max_tokens=64,
                                          messages=MSGS) as stream:
            assert "".join([t async for t in stream.text_stream]) == TEXT
    assert [r.status for r in provider.requests] == [529, 200, 200, 200]


@pytest.mark.anyio
async def test_async_cut_after_text_and_bad_request(provider: FaultProvider) -> None:
    provider.script(Fault.stream_cut(after_events=5), Fault.status(400))
    async with ainproc(provider, policy=Policy(stream_recovery="off")) as client:
        stream = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS,
                                              stream=True)
        with pytest.raises(StreamInterrupted) as info:
            async for _ in stream:
                pass
        assert info.value.partial_text
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert len(provider.requests) == 2


# --- wall clock over loopback: deadlines, closing upstream ----------------------------------------


@pytest.mark.slow
def test_env_deadline_holds_for_create_and_stream(
    provider: FaultProvider, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "0.8")
    provider.script(Fault.ok(delay=5.0), Fault.stream_stall(after_events=4, seconds=5.0))
    with Anthropic(base_url=server.anthropic_base_url, api_key="k") as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS)
        assert time.monotonic() - start <= 0.8 + SLACK
        assert isinstance(info.value.cause, anthropic.APITimeoutError)

        start = time.monotonic()
        stream = client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS, stream=True)
        with pytest.raises(DeadlineExceeded) as info:
            text_of(stream)
        assert time.monotonic() - start <= 0.8 + SLACK
        assert isinstance(info.value.cause, StreamInterrupted)
        assert info.value.cause.partial_text


@pytest.mark.slow
@pytest.mark.anyio
async def test_async_env_deadline_holds_for_create_and_stream(
    provider: FaultProvider, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "0.8")
    provider.script(Fault.hang(), Fault.stream_stall(after_events=4, seconds=5.0))
    async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k") as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS)
        assert time.monotonic() - start <= 0.8 + SLACK

        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            async with client.messages.stream(model=CLAUDE, max_tokens=8,
                                              messages=MSGS) as stream:
                async for _ in stream.text_stream:
                    pass
        assert time.monotonic() - start <= 0.8 + SLACK
        assert isinstance(info.value.cause, StreamInterrupted)
    provider.reset()  # frees the hung exchange on the server


@pytest.mark.slow
def test_first_token_and_idle_limits(provider: FaultProvider, server: FaultServer) -> None:
    provider.script(Fault.first_token_delay(3.0), Fault.ok(text=TEXT),
                    Fault.stream_stall(after_events=5, seconds=3.0))
    policy = Policy(first_token_timeout=0.3, stream_idle_timeout=0.3, stream_recovery="off")
    with Anthropic(base_url=server.anthropic_base_url, api_key="k", policy=policy) as client:
        start = time.monotonic()
        with client.messages.stream(model=CLAUDE, max_tokens=8, messages=MSGS) as stream:
            assert "".join(stream.text_stream) == TEXT
        assert time.monotonic() - start < 1.5
        # the helper wraps the stream request() returned (outcome() of the helper itself is
        # requested from the engine)
        assert [a.failure for a in outcome(stream._raw_stream).attempts] == [
            "first_token_timeout", None]
        start = time.monotonic()
        with pytest.raises(StreamInterrupted) as info:
            text_of(client.messages.create(model=CLAUDE, max_tokens=8, messages=MSGS,
                                           stream=True))
        assert time.monotonic() - start < 1.5
    assert info.value.failure == "stream_stall" and info.value.partial_text
    assert len(provider.requests) == 3
    provider.reset()


@pytest.mark.slow
def test_breaking_out_of_a_stream_closes_the_upstream_connection(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.ok(text=TEXT, chunk_delay=0.05))
    with Anthropic(base_url=server.anthropic_base_url, api_key="k") as client:
        with client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS,
                                    stream=True) as stream:
            for event in stream:
                if event.type == "content_block_delta":
                    break
        for _ in client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS,
                                        stream=True):
            break  # the stream object is dropped here, unreferenced
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MSGS) as helper:
            for _ in helper.text_stream:
                break
        records = provider.wait_for(
            lambda rs: len(rs) == 3 and all(r.finished for r in rs), timeout=2.0)
    assert [r.client_disconnected for r in records] == [True, True, True]
    assert outcome(stream).finished and outcome(stream).error is None


@pytest.mark.slow
@pytest.mark.anyio
async def test_async_early_exit_closes_the_upstream_connection(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.ok(text=TEXT, chunk_delay=0.05))
    async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k") as client:
        async with await client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS,
                                                stream=True) as stream:
            async for _ in stream:
                break
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MSGS) as s:
            async for _ in s.text_stream:
                break
        with anyio.fail_after(2):
            records = await anyio.to_thread.run_sync(lambda: provider.wait_for(
                lambda rs: len(rs) == 2 and all(r.finished for r in rs), timeout=2.0))
    assert [r.client_disconnected for r in records] == [True, True]


# --- rate-limit headers ---------------------------------------------------------------------------


def test_rate_limit_headers_are_parsed_per_dimension() -> None:
    now = 1_900_000_000.0
    headers = httpx2.Headers({
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2030-03-17T17:46:45Z",
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": "2030-03-17T19:46:40+02:00",
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "not a number",
        "anthropic-priority-input-tokens-limit": "1000",
        "anthropic-priority-input-tokens-remaining": "2000",
    })
    found = rate_limits(headers, wall_clock=lambda: now)
    assert set(found) == {"requests", "input_tokens", "priority_input_tokens"}
    reset_at = 1_900_000_000.0 + 5.0  # 2030-03-17T17:46:45Z
    assert found["requests"].limit == 50 and found["requests"].remaining == 49
    assert found["requests"].reset == pytest.approx(reset_at - now + 0.0)
    assert found["input_tokens"].reset == pytest.approx(0.0)  # offset: 5 s before `now`
    assert found["priority_input_tokens"].remaining == 1000  # clamped to the limit
    assert found["priority_input_tokens"].reset == 0.0  # no reset header


def test_rate_limit_resets_follow_the_server_date_when_clocks_disagree() -> None:
    headers = {
        "date": "Sun, 17 Mar 2030 17:46:40 GMT",  # epoch 1_900_000_000
        "anthropic-ratelimit-tokens-limit": "100",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2030-03-17T17:47:40Z",
    }
    skewed = rate_limits(headers, wall_clock=lambda: 1_900_000_000.0 + 3600)
    assert skewed["tokens"].reset == pytest.approx(60.0)


@pytest.mark.parametrize("value", ["", "tomorrow", "2030-03-17T17:46:45"])
def test_unreadable_resets_are_ignored(value: str) -> None:
    assert reset_seconds(value, 0.0) is None


def test_explicit_attempts_reads_the_sdks_max_retries_as_the_official_clients_do() -> None:
    import types

    import openai

    from resilient_llm.dropin.base import explicit_attempts

    def given(value: Any) -> Any:
        return types.SimpleNamespace(max_retries=value)

    for sentinel in (anthropic.NOT_GIVEN, openai.NOT_GIVEN, anthropic.NOT_GIVEN):
        assert explicit_attempts(given(sentinel), 2, False) is None  # the policy decides
        assert explicit_attempts(given(sentinel), 2, True) == 3  # the client's own value
    assert explicit_attempts(given(0), 2, True) == 1
    assert explicit_attempts(given(4), 2, False) == 5
    assert explicit_attempts(types.SimpleNamespace(), 2, False) is None
    with pytest.raises(ValueError, match="non-negative"):
        explicit_attempts(given(-1), 2, False)
    for bad in ("3", None, 2.5):
        with pytest.raises(TypeError, match="max_retries must be a non-negative integer"):
            explicit_attempts(given(bad), 2, False)


@pytest.mark.parametrize("cls", [Anthropic, AsyncAnthropic])
def test_own_errors_pass_through_the_sdks_connection_error_hook(cls: Any) -> None:
    """anthropic >= 2.17 routes any error raised while a body is read through
    ``_make_connection_error``; a StreamInterrupted must come out as itself, with its partial
    text, and not as its own cause (the SDK raises the result ``from`` the original)."""
    client = cls(api_key="k", base_url="http://127.0.0.1:9")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    original = StreamInterrupted("cut", partial_text="Hello", failure="stream_cut")
    made = client._make_connection_error(request, original)
    assert type(made) is StreamInterrupted and made is not original
    assert made.partial_text == "Hello" and made.failure == "stream_cut"
    assert str(made) == str(original)
    try:
        raise made from original
    except StreamInterrupted as caught:
        assert caught.__cause__ is original and original.__cause__ is None


@pytest.mark.parametrize("original", [httpx2.TooManyRedirects("too many"), ValueError("odd")],
                         ids=["httpx2 error", "foreign error"])
def test_a_transport_failure_reads_as_in_the_official_client(original: Exception) -> None:
    """The transport wraps what a custom transport raises in ``ForeignTransportError`` so it
    can be retried; the caller must still get the SDK's own error, message and cause (from
    anthropic 2.17 the message names the failure: ``... failed: TooManyRedirects``)."""

    def raising(request: httpx2.Request) -> httpx2.Response:
        raise original

    def failure(cls: Any) -> anthropic.APIConnectionError:
        client = cls(api_key="k", base_url="https://example.com", max_retries=0,
                     http_client=httpx2.Client(transport=httpx2.MockTransport(raising)))
        with pytest.raises(anthropic.APIConnectionError) as caught:
            client.get("/foo", cast_to=httpx2.Response)
        return caught.value

    official, ours = failure(anthropic.Anthropic), failure(Anthropic)
    assert type(ours) is type(official) is anthropic.APIConnectionError
    assert str(ours) == str(official)
    assert "ForeignTransportError" not in str(ours)
    assert ours.__cause__ is original and official.__cause__ is original


@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_followed_redirect_is_not_a_retry(max_retries: int) -> None:
    """httpx2 follows a redirect by sending a second request through the transport within the
    same call; it must not use up an attempt, or ``max_retries=0`` turns every redirect into
    a failure (the official client follows it)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "example.com":
            return httpx2.Response(307, headers={"Location": "https://other.example.com/foo"})
        return httpx2.Response(200, json={"served_by": request.url.host})

    def get(cls: Any) -> Any:
        client = cls(api_key="k", base_url="https://example.com", max_retries=max_retries,
                     http_client=httpx2.Client(transport=httpx2.MockTransport(handler),
                                               follow_redirects=True))
        return client.get("/foo", cast_to=httpx2.Response)

    official, ours = get(anthropic.Anthropic), get(Anthropic)
    assert official.json() == ours.json() == {"served_by": "other.example.com"}
    assert ours.status_code == 200 and ours.url == "https://other.example.com/foo"
