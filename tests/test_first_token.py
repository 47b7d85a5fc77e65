"""The first-token limit runs from the send (issue 16, item 3): connecting, the response headers
and the first event share it, and after it the call moves on like after any slow attempt. Over
loopback with the official SDKs under the drop-ins, sync and async, OpenAI and Anthropic."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from resilient_llm import Policy, outcome
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.engine.call import Send
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer
from resilient_llm.transport.shared import first_token_timeouts

GPT, GPT_FALLBACK = "gpt-4.1", "gpt-4.1-mini"
CLAUDE, CLAUDE_FALLBACK = "claude-sonnet-4-6", "claude-haiku-4-5"
TEXT = "The fallback answers the whole question, word for word."
MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running
    provider.reset()  # frees hung exchanges


@pytest.fixture
def acceptance_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's scenario, configured as a user would: the environment only."""
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "30")
    monkeypatch.setenv("RESILIENT_LLM_FIRST_TOKEN_TIMEOUT", "2")
    monkeypatch.setenv("RESILIENT_LLM_FALLBACKS", json.dumps(
        {GPT: [GPT_FALLBACK], CLAUDE: [CLAUDE_FALLBACK]}))


def openai_stream(server: FaultServer, mode: str, policy: Policy | None = None,
                  ) -> tuple[str, set[str], Any]:
    """The streamed answer's text, the models that sent it, and the stream (for outcome())."""

    def sync() -> tuple[str, set[str], Any]:
        with OpenAI(base_url=server.openai_base_url, api_key="k", policy=policy) as client:
            stream = client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
            chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, {c.model for c in chunks}, stream

    async def main() -> tuple[str, set[str], Any]:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=policy) as client:
            stream = await client.chat.completions.create(model=GPT, messages=MESSAGES,
                                                          stream=True)
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, {c.model for c in chunks}, stream

    return sync() if mode == "sync" else anyio.run(main)


def anthropic_stream(server: FaultServer, mode: str) -> tuple[str, str, Any]:
    """The streamed text, the final message's model, and the raw stream (for outcome())."""

    def sync() -> tuple[str, str, Any]:
        with Anthropic(base_url=server.anthropic_base_url, api_key="k") as client, \
                client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as s:
            text = "".join(s.text_stream)
            return text, s.get_final_message().model, s._raw_stream

    async def main() -> tuple[str, str, Any]:
        async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k") as client:
            async with client.messages.stream(model=CLAUDE, max_tokens=64,
                                              messages=MESSAGES) as s:
                text = "".join([piece async for piece in s.text_stream])
                final = await s.get_final_message()
                return text, final.model, s._raw_stream

    return sync() if mode == "sync" else anyio.run(main)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.usefixtures("acceptance_env")
def test_openai_primary_without_headers_answers_from_the_fallback_within_the_limit(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    provider.set_default(Fault.hang(), model=GPT)
    provider.set_default(Fault.ok(text=TEXT), model=GPT_FALLBACK)
    started = time.monotonic()
    text, models, stream = openai_stream(server, mode)
    took = time.monotonic() - started
    assert text == TEXT and models == {GPT_FALLBACK}
    assert 1.9 <= took <= 2.5
    report = outcome(stream)
    assert [(a.target, a.failure) for a in report.attempts] == [
        (GPT, "first_token_timeout"), (GPT_FALLBACK, None)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.usefixtures("acceptance_env")
def test_anthropic_primary_without_headers_answers_from_the_fallback_within_the_limit(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    provider.set_default(Fault.hang(), model=CLAUDE)
    provider.set_default(Fault.ok(text=TEXT), model=CLAUDE_FALLBACK)
    started = time.monotonic()
    text, model, raw = anthropic_stream(server, mode)
    took = time.monotonic() - started
    assert text == TEXT and model == CLAUDE_FALLBACK
    assert 1.9 <= took <= 2.5
    assert [a.failure for a in outcome(raw).attempts] == ["first_token_timeout", None]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slow_headers_count_against_the_first_token_limit(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    """Headers after 0.6 s and the first token 0.6 s later: each wait is within a 1 s limit,
    together they are not, so the fallback answers (the limit used to start at the headers)."""
    provider.set_default(Fault.first_token_delay(0.6, delay=0.6), model=GPT)
    provider.set_default(Fault.ok(text=TEXT), model=GPT_FALLBACK)
    policy = Policy(deadline=30, first_token_timeout=1.0, fallbacks={GPT: [GPT_FALLBACK]})
    started = time.monotonic()
    text, models, stream = openai_stream(server, mode, policy)
    took = time.monotonic() - started
    assert text == TEXT and models == {GPT_FALLBACK}
    assert took < 1.5
    assert [a.failure for a in outcome(stream).attempts] == ["first_token_timeout", None]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_after_the_first_event_only_the_idle_limit_bounds_the_reads(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    """A pause mid-answer longer than the first-token limit (but within the idle limit) is
    fine: the header wait's shorter timeouts do not carry over to the body."""
    provider.set_default(Fault.stream_stall(after_events=3, seconds=0.8, text=TEXT))
    policy = Policy(deadline=30, first_token_timeout=0.4, stream_idle_timeout=5, max_attempts=1)
    text, _, stream = openai_stream(server, mode, policy)
    assert text == TEXT
    assert [a.failure for a in outcome(stream).attempts] == [None]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_non_streaming_calls_are_not_bound_by_the_first_token_limit(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    provider.set_default(Fault.ok(text=TEXT, delay=0.8))
    policy = Policy(deadline=30, first_token_timeout=0.3, max_attempts=1)

    def sync() -> Any:
        with OpenAI(base_url=server.openai_base_url, api_key="k", policy=policy) as client:
            return client.chat.completions.create(model=GPT, messages=MESSAGES)

    async def main() -> Any:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=policy) as client:
            return await client.chat.completions.create(model=GPT, messages=MESSAGES)

    answer = sync() if mode == "sync" else anyio.run(main)
    assert answer.choices[0].message.content == TEXT


def test_header_wait_timeouts_are_clipped_to_the_first_token_limit() -> None:
    send = Send(1, {"connect": 5.0, "read": 600.0, "write": 1.0, "pool": None}, 2.0, 90.0)
    assert first_token_timeouts(send) == {"connect": 2.0, "read": 2.0, "write": 1.0,
                                          "pool": 2.0}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_the_first_token_limit_is_named_in_process_too(
    provider: FaultProvider, sdk: str, mode: str,
) -> None:
    """The in-process transport's own read timeout fires at the limit (the read timeout is
    clipped to it) before the watchdog does: still the limit's failure and message, not a
    bare "Request timed out." read as a stall; and not the SDK's 600 s either."""
    import httpx2

    provider.script(Fault.first_token_delay(5.0))
    policy = Policy(first_token_timeout=0.2, max_attempts=1)
    sync_http, async_http = httpx2.Client, httpx2.AsyncClient
    kinds: list[str] = []

    def create(client: Any) -> Any:
        if sdk == "openai":
            return client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
        return client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES,
                                      stream=True)

    def sync() -> BaseException:
        cls = OpenAI if sdk == "openai" else Anthropic
        base = "http://fault.test/v1" if sdk == "openai" else "http://fault.test"
        with cls(base_url=base, api_key="k", policy=policy,
                 http_client=sync_http(transport=provider.transport())) as client:
            try:
                create(client)
            except Exception as exc:  # the SDK's timeout error
                return exc
        raise AssertionError("the call did not fail")

    async def main() -> BaseException:
        cls = AsyncOpenAI if sdk == "openai" else AsyncAnthropic
        base = "http://fault.test/v1" if sdk == "openai" else "http://fault.test"
        async with cls(base_url=base, api_key="k", policy=policy,
                       http_client=async_http(transport=provider.transport())) as client:
            try:
                await create(client)
            except Exception as exc:
                return exc
        raise AssertionError("the call did not fail")

    from resilient_llm import subscribe

    def note(_record: Any, event: Any) -> None:
        if event.kind == "attempt_finished" and event.failure is not None:
            kinds.append(event.failure.kind.value)

    unsubscribe = subscribe(note)
    try:
        error = sync() if mode == "sync" else anyio.run(main)
    finally:
        unsubscribe()
    assert kinds == ["first_token_timeout"]
    message = str(error)
    assert "no stream output within the first-token limit of 0.2 s" in message
    assert "600" not in message
