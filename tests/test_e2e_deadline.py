"""One deadline holds end to end: official SDK clients, real loopback HTTP, real sockets.

These tests take real (short) time on purpose: they prove wall-clock bounds against a server
that misbehaves, which no fake clock can.
"""

from __future__ import annotations

import time

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from resilient_llm import DeadlineExceeded, Policy, StreamInterrupted, deadline, outcome
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
SLACK = 0.3  # the acceptance bound: deadline + 0.3 s


def resilient(server: FaultServer, **policy: object) -> OpenAI:
    return OpenAI(base_url=server.openai_base_url, api_key="sk-test",
                  policy=Policy.from_env(**policy))


def test_env_deadline_bounds_a_slow_provider_where_the_official_client_does_not(
    provider: FaultProvider, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.default = Fault.ok(delay=5.0)
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "2")
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test") as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        took = time.monotonic() - start
    assert 1.9 <= took <= 2.0 + SLACK
    assert isinstance(info.value.cause, openai.APITimeoutError)
    assert isinstance(info.value, TimeoutError)

    official = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test", timeout=1,
                             max_retries=2)
    with official:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            official.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert time.monotonic() - start > 4.0


def test_stream_that_stalls_after_its_first_chunk(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.default = Fault.stream_stall(after_events=3, seconds=10.0)
    with resilient(server, deadline=2) as client:
        start = time.monotonic()
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
        seen: list[object] = []
        with pytest.raises(DeadlineExceeded) as info:
            seen.extend(stream)
        took = time.monotonic() - start
    assert seen, "output before the stall reached the caller"
    assert took <= 2.0 + SLACK
    assert isinstance(info.value.cause, StreamInterrupted)
    assert info.value.cause.partial_text  # nothing that was delivered is lost


def test_deadline_scope_bounds_a_call(provider: FaultProvider, server: FaultServer) -> None:
    provider.default = Fault.ok(delay=5.0)
    with resilient(server) as client:
        start = time.monotonic()
        with deadline(1.5), pytest.raises(DeadlineExceeded):
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert time.monotonic() - start <= 1.5 + SLACK


def test_retry_after_is_honoured_over_real_http(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.script(Fault.status(429, headers={"retry-after": "1"}), Fault.ok(text="done"))
    with resilient(server, deadline=10) as client:
        answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert answer.choices[0].message.content == "done"
    first, second = provider.requests
    assert second.started_at - first.started_at >= 0.9
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    report = outcome(answer)
    assert [a.status for a in report.attempts] == [429, 200] and report.finished


def test_invalid_request_is_not_retried(provider: FaultProvider, server: FaultServer) -> None:
    provider.default = Fault.status(400, message="bad parameter")
    with resilient(server) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert len(provider.requests) == 1


def test_hung_request_is_cut_at_the_deadline(provider: FaultProvider, server: FaultServer) -> None:
    provider.default = Fault.hang()
    with resilient(server, deadline=1) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert time.monotonic() - start <= 1.0 + SLACK


@pytest.mark.anyio
async def test_async_deadline_and_stream_stall(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.script(Fault.ok(delay=5.0), Fault.stream_stall(after_events=3, seconds=10.0))
    provider.default = Fault.stream_stall(after_events=3, seconds=10.0)
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test",
                           policy=Policy(deadline=1.5)) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert time.monotonic() - start <= 1.5 + SLACK

        start = time.monotonic()
        stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                      stream=True)
        with pytest.raises(DeadlineExceeded) as info:
            async for _ in stream:
                pass
        assert time.monotonic() - start <= 1.5 + SLACK
        assert isinstance(info.value.cause, StreamInterrupted)


def test_cut_stream_raises_with_partial_text(provider: FaultProvider, server: FaultServer) -> None:
    provider.default = Fault.stream_cut(after_events=4)
    with resilient(server) as client:
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
        with pytest.raises(StreamInterrupted) as info:
            for _ in stream:
                pass
    assert info.value.failure == "stream_cut"
    assert info.value.partial_text
    assert outcome(stream).finished and outcome(stream).error == "stream_cut"
