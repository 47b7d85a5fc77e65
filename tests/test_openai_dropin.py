"""The drop-in ``OpenAI`` / ``AsyncOpenAI`` against the official SDK's own behaviour.

What changes when the import is swapped (one retry layer with jitter, one idempotency key,
``outcome()``, resilient-llm errors carrying the SDK's error as their cause) and what does not
(return and error types, explicit ``max_retries``, ``RESILIENT_LLM_ENABLED=false``). Engine
behaviour runs in-process on an injected clock; closing upstream runs over loopback.
"""

from __future__ import annotations

import io
import ssl
from typing import Any

import anyio
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from resilient_llm import (
    DeadlineExceeded,
    Policy,
    ResilientTransport,
    StreamInterrupted,
    outcome,
)
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.providers.openai import rate_limits
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider, FaultServer, Usage

GPT = "gpt-4.1"
MSGS: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
TEXT = "The quick brown fox jumps over the lazy dog again and again."


def inproc(provider: FaultProvider, **kwargs: Any) -> OpenAI:
    client = OpenAI(base_url="http://fault.test/v1", api_key="sk-test",
                    http_client=httpx2.Client(transport=provider.transport()), **kwargs)
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(0)
    return client


def ainproc(provider: FaultProvider, **kwargs: Any) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url="http://fault.test/v1", api_key="sk-test",
                         http_client=httpx2.AsyncClient(transport=provider.transport()),
                         **kwargs)
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(0)
    return client


def chat_text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# --- what the swap adds ---------------------------------------------------------------------------


@pytest.mark.parametrize("given", [{"deadline": 5}, "deadline=5", 5])
def test_a_policy_of_another_type_is_a_clear_error(given: Any) -> None:
    with pytest.raises(TypeError, match=r"policy= takes a resilient_llm\.Policy, got "
                                        + type(given).__name__) as info:
        OpenAI(api_key="k", policy=given)
    assert ("Policy(**settings)" in str(info.value)) == isinstance(given, dict)
    with OpenAI(api_key="k") as client, pytest.raises(TypeError, match="got dict"):
        client.copy(policy={"deadline": 5})  # type: ignore[arg-type]


def test_outcome_of_a_retried_call(provider: FaultProvider) -> None:
    provider.script(Fault.status(500), Fault.ok(text=TEXT, usage=Usage(input_tokens=9,
                                                                       output_tokens=4)))
    with inproc(provider) as client:
        completion = client.chat.completions.create(model=GPT, messages=MSGS)
    assert completion.choices[0].message.content == TEXT
    result = outcome(completion)
    assert [a.failure for a in result.attempts] == ["server_error", None]
    assert result.served_by == GPT and not result.degraded and result.finished
    assert result.usage.prompt_tokens == 9
    keys = {r.headers["idempotency-key"] for r in provider.requests}
    assert keys == {result.idempotency_key}


@pytest.mark.parametrize(("client_kwargs", "call_kwargs", "budget"), [
    ({}, {}, 600.0),                               # the SDK's default timeout lifts nothing
    ({}, {"timeout": 900}, 900.0),                  # a longer timeout for this call
    ({"timeout": 1800}, {}, 1800.0),                # on the client
    ({"timeout": httpx2.Timeout(5, read=1200)}, {}, 1200.0),
    ({}, {"timeout": 30}, 600.0),                   # a shorter one is per attempt, as before
])
def test_an_explicit_longer_timeout_lifts_the_default_deadline(
    provider: FaultProvider, client_kwargs: dict[str, Any], call_kwargs: dict[str, Any],
    budget: float,
) -> None:
    """The default deadline stands for the official 600 s per attempt: a caller who asked
    to wait longer for one answer is not cut at 600 s."""
    with inproc(provider, **client_kwargs) as client:
        completion = client.chat.completions.create(model=GPT, messages=MSGS, **call_kwargs)
    assert outcome(completion).deadline_budget == budget


def test_a_deadline_the_caller_set_is_not_lifted_by_a_timeout(
    provider: FaultProvider, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "20")
    with inproc(provider) as client:
        completion = client.chat.completions.create(model=GPT, messages=MSGS, timeout=900)
    assert outcome(completion).deadline_budget == 20.0


def test_the_stream_limits_are_lifted_only_from_their_defaults() -> None:
    from resilient_llm.dropin.base import call_policy

    class Options:
        timeout: Any = 900.0

    default = openai.DEFAULT_TIMEOUT
    lifted = call_policy(Policy(), Options(), default, default)
    assert (lifted.deadline, lifted.first_token_timeout, lifted.stream_idle_timeout) == (
        900.0, 900.0, 900.0)
    own = call_policy(Policy(first_token_timeout=60), Options(), default, default)
    assert (own.first_token_timeout, own.stream_idle_timeout) == (60.0, 900.0)
    Options.timeout = default  # as anthropic passes it for a long non-streamed answer
    assert call_policy(Policy(), Options(), default, default) == Policy()
    Options.timeout = None  # no per-call value: the client's, unless it is the SDK's default
    assert call_policy(Policy(), Options(), default, default) == Policy()
    assert call_policy(Policy(), Options(), 120.0, default).first_token_timeout == 300.0
    assert call_policy(Policy(), Options(), 1e9, default).deadline == 86400.0


def test_raw_responses_report_the_retries_of_the_one_retry_layer(
    provider: FaultProvider,
) -> None:
    provider.script(Fault.status(503), Fault.status(503), Fault.ok())
    with inproc(provider) as client:
        raw = client.chat.completions.with_raw_response.create(model=GPT, messages=MSGS)
    assert raw.retries_taken == 2
    assert raw.http_request.headers["x-stainless-retry-count"] == "2"
    assert raw.parse().choices[0].message.content


def test_stream_outcome_finishes_when_the_stream_does(provider: FaultProvider) -> None:
    provider.script(Fault.stream_cut(after_events=1), Fault.ok(text=TEXT))
    with inproc(provider) as client:
        stream = client.chat.completions.create(model=GPT, messages=MSGS, stream=True)
        assert outcome(stream).finished is False
        assert chat_text(stream) == TEXT
    result = outcome(stream)
    assert result.finished and result.error is None
    assert [a.failure for a in result.attempts] == ["stream_cut", None]


def test_stream_cut_after_output_keeps_the_partial_text(provider: FaultProvider) -> None:
    provider.set_default(Fault.stream_cut(after_events=4, text=TEXT))
    with inproc(provider, policy=Policy(stream_recovery="off")) as client:
        stream = client.chat.completions.create(model=GPT, messages=MSGS, stream=True)
        with pytest.raises(StreamInterrupted) as info:
            chat_text(stream)
    assert info.value.partial_text and TEXT.startswith(info.value.partial_text)
    assert len(provider.requests) == 1


def test_deadline_exceeded_carries_the_sdk_error(provider: FaultProvider) -> None:
    provider.set_default(Fault.status(429, headers={"retry-after": "30"}))
    with inproc(provider, policy=Policy(deadline=5)) as client, \
            pytest.raises(DeadlineExceeded) as info:
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert isinstance(info.value.cause, openai.RateLimitError)
    assert info.value.cause.status_code == 429
    assert isinstance(info.value, TimeoutError)


def test_a_final_provider_error_keeps_its_official_type(provider: FaultProvider) -> None:
    provider.set_default(Fault.status(500))
    with inproc(provider, policy=Policy(max_attempts=2)) as client, \
            pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert len(provider.requests) == 2
    provider.reset()
    provider.set_default(Fault.status(400))
    with inproc(provider) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert len(provider.requests) == 1


def test_the_http_clients_own_transport_stays_in_place(provider: FaultProvider) -> None:
    """Code that inspects ``client._client._transport`` (pool checks) still sees httpx2's."""
    with OpenAI(api_key="k") as client:
        transport = client._client._transport
        assert type(transport) is httpx2.HTTPTransport
        routed = client._client._transport_for_url(httpx2.URL("https://api.openai.com/v1/x"))
        assert isinstance(routed, ResilientTransport)
        assert len(transport._pool._requests) == 0


# --- what the swap keeps --------------------------------------------------------------------------


def test_disabled_is_the_official_client_sdk_retries_and_all(provider: FaultProvider) -> None:
    fast = {"retry-after-ms": "1"}
    provider.script(Fault.status(500, headers=fast), Fault.status(500, headers=fast), Fault.ok())
    with inproc(provider, policy=Policy(enabled=False)) as client:
        completion = client.chat.completions.create(model=GPT, messages=MSGS)
        raw = client.chat.completions.with_raw_response.create(model=GPT, messages=MSGS)
    requests = provider.requests
    assert len(requests) == 4, "the SDK's own two retries, then one more call"
    assert all("idempotency-key" not in r.headers for r in requests)
    assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "1", "2", "0"]
    assert raw.retries_taken == 0
    with pytest.raises(LookupError):
        outcome(completion)


def test_disabled_from_the_environment(provider: FaultProvider,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_ENABLED", "false")
    with inproc(provider) as client:
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert "idempotency-key" not in provider.requests[0].headers


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (2, 3), (5, 6)])
def test_explicit_max_retries_is_honoured(provider: FaultProvider, max_retries: int,
                                          attempts: int) -> None:
    provider.set_default(Fault.status(429))  # retried, and no breaker cuts the call short
    with inproc(provider, max_retries=max_retries) as client, \
            pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert len(provider.requests) == attempts


def test_per_request_max_retries_and_copies(provider: FaultProvider) -> None:
    provider.set_default(Fault.status(429))
    with inproc(provider, policy=Policy(max_attempts=4)) as client:
        with pytest.raises(openai.RateLimitError):
            client.with_options(max_retries=1).chat.completions.create(model=GPT,
                                                                       messages=MSGS)
        assert len(provider.requests) == 2
        copy = client.with_options(timeout=5)  # no max_retries: the policy's 4 attempts
        with pytest.raises(openai.RateLimitError):
            copy.chat.completions.create(model=GPT, messages=MSGS)
        assert len(provider.requests) == 6
        assert type(copy) is OpenAI and copy.policy is client.policy


@pytest.mark.parametrize("value", [None, "2", -1, 2.5])
def test_invalid_per_request_max_retries_is_rejected_before_sending(
    provider: FaultProvider, value: Any
) -> None:
    error = ValueError if isinstance(value, int) else TypeError
    with inproc(provider) as client, pytest.raises(error, match="max_retries"):
        client.get("/models", cast_to=object, options={"max_retries": value})
    assert provider.requests == []


@pytest.mark.parametrize("exc", [ssl.SSLError("bad record mac"), anyio.EndOfStream()])
def test_transport_errors_the_sdk_retries_are_retried(exc: Exception) -> None:
    calls: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        if len(calls) == 1:
            raise exc
        return httpx2.Response(200, json={"ok": True})

    client = OpenAI(api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    client._resilient_clock = FakeClock()
    with client:
        assert client.get("/test", cast_to=object) == {"ok": True}
    assert len(calls) == 2


def test_other_application_errors_propagate_unretried() -> None:
    calls: list[httpx2.Request] = []
    bug = RuntimeError("a bug in a hook")

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        raise bug

    client = OpenAI(api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with client, pytest.raises(RuntimeError) as info:
        client.get("/test", cast_to=object)
    assert info.value is bug and len(calls) == 1  # as openai 3.54 does


def test_the_applications_own_requests_through_a_shared_http_client_stay_as_they_were() -> None:
    """``http_client=`` the application also uses for its own requests (or shares with an
    official SDK client during a migration): those go out once, untouched; before, a 503 of
    another service was sent four times, each with an ``Idempotency-Key``."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path == "/payments/charge":
            return httpx2.Response(503, json={"error": "down"})
        if len([r for r in seen if r.url.path.endswith("/chat/completions")]) <= 2:
            return httpx2.Response(503, json={"error": {"message": "busy", "type": "server"}})
        return httpx2.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}]})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    client = OpenAI(api_key="k", base_url="http://llm.test/v1", http_client=http,
                    policy=Policy(deadline=10, max_attempts=3))
    client._resilient_clock = FakeClock()
    official = openai.OpenAI(api_key="k", base_url="http://llm.test/v1", http_client=http,
                             max_retries=0)
    assert http.post("http://pay.test/payments/charge", json={"cents": 5}).status_code == 503
    with pytest.raises(openai.InternalServerError):
        official.chat.completions.create(model="m", messages=[])
    answer = client.chat.completions.create(model="m", messages=[])  # the drop-in retries
    assert answer.choices[0].message.content == "ok"
    paths = [r.url.path for r in seen]
    # the application's once, the official client's once, the drop-in's twice (a retry)
    assert paths == ["/payments/charge"] + ["/v1/chat/completions"] * 3
    assert "idempotency-key" not in seen[0].headers


# --- async ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_retry_outcome_and_translated_deadline(provider: FaultProvider) -> None:
    provider.script(Fault.status(529), Fault.ok(text=TEXT),
                    Fault.status(429, headers={"retry-after": "60"}))
    async with ainproc(provider, policy=Policy(deadline=10)) as client:
        completion = await client.chat.completions.create(model=GPT, messages=MSGS)
        assert [a.failure for a in outcome(completion).attempts] == ["overloaded", None]
        with pytest.raises(DeadlineExceeded) as info:
            await client.chat.completions.create(model=GPT, messages=MSGS)
    assert isinstance(info.value.cause, openai.RateLimitError)


# --- closing upstream (loopback) ------------------------------------------------------------------


@pytest.mark.slow
def test_breaking_out_of_a_stream_closes_the_upstream_connection(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.ok(text=TEXT, chunk_delay=0.05))
    with OpenAI(base_url=server.openai_base_url, api_key="k") as client:
        with client.chat.completions.create(model=GPT, messages=MSGS, stream=True) as stream:
            for _ in stream:
                break
        for _ in client.chat.completions.create(model=GPT, messages=MSGS, stream=True):
            break  # the stream object is dropped here, unreferenced
        records = provider.wait_for(
            lambda rs: len(rs) == 2 and all(r.finished for r in rs), timeout=2.0)
    assert [r.client_disconnected for r in records] == [True, True]
    assert outcome(stream).finished


@pytest.mark.slow
@pytest.mark.anyio
async def test_async_early_exit_closes_the_upstream_connection(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.ok(text=TEXT, chunk_delay=0.05))
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k") as client:
        async with await client.chat.completions.create(model=GPT, messages=MSGS,
                                                        stream=True) as stream:
            async for _ in stream:
                break
        records = await anyio.to_thread.run_sync(lambda: provider.wait_for(
            lambda rs: len(rs) == 1 and rs[0].finished, timeout=2.0))
    assert records[0].client_disconnected


# --- rate-limit headers ---------------------------------------------------------------------------


def test_rate_limit_headers_are_parsed_per_dimension() -> None:
    found = rate_limits(httpx2.Headers({
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "1h2m3.5s",
        "x-ratelimit-limit-project-tokens": "-1",  # Azure: no such limit
        "x-ratelimit-remaining-project-tokens": "5",
    }))
    assert set(found) == {"requests", "tokens"}
    assert found["requests"].reset == pytest.approx(0.12)
    assert found["tokens"].reset == pytest.approx(3723.5)
    assert found["tokens"].remaining == 29000


def test_azure_integer_resets_and_garbage() -> None:
    found = rate_limits({
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "7",
        "x-ratelimit-limit-tokens": "lots", "x-ratelimit-remaining-tokens": "1",
    })
    assert found == {"requests": found["requests"]} and found["requests"].reset == 7.0


class _OneShot(io.RawIOBase):
    """A file that can be read once (a pipe, a socket): not seekable."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("kind", ["bytes", "bytesio", "file", "one-shot"])
def test_an_upload_is_retried_when_its_file_can_be_read_again(
    kind: str, tmp_path: Any,
) -> None:
    """The official client retries a multipart upload after a 500 (it rewinds the file);
    so does the drop-in, whenever httpx2 can render the body again."""
    content = b'{"custom_id": "1"}\n'
    bodies: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(request.read())
        if len(bodies) == 1:
            return httpx2.Response(500, json={"error": {"type": "server_error"}})
        return httpx2.Response(200, json={
            "id": "file-1", "object": "file", "bytes": len(content), "created_at": 0,
            "filename": "batch.jsonl", "purpose": "batch", "status": "processed"})

    path = tmp_path / "batch.jsonl"
    path.write_bytes(content)
    makers: dict[str, Any] = {
        "bytes": lambda: ("batch.jsonl", content), "bytesio": lambda: io.BytesIO(content),
        "file": lambda: path.open("rb"), "one-shot": lambda: io.BufferedReader(_OneShot(content)),
    }
    file = makers[kind]()
    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with OpenAI(base_url="http://fault.test/v1", api_key="k", http_client=http,
                policy=Policy(max_backoff=0.01)) as client:
        if kind == "one-shot":
            with pytest.raises(openai.InternalServerError):
                client.files.create(file=file, purpose="batch")
            assert len(bodies) == 1  # not sent again: it could not be read again
            return
        created = client.files.create(file=file, purpose="batch")
    assert created.id == "file-1" and len(bodies) == 2
    assert bodies[0] == bodies[1] and content in bodies[1]  # the same body, file and all
    if kind == "file":
        file.close()
