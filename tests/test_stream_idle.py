"""Idle means no *event* (issue 18, item 4): SSE comments (``: keep-alive``) and blank lines do
not restart the stream idle limit, so a stream that sends nothing but keep-alives once output
has started ends at the idle limit, not at the deadline. Sync and async, against the hostile
provider's keep-alive stream on a real socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

from resilient_llm import DeadlineExceeded, Policy, StreamInterrupted
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.engine.call import end_call, start_call
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.providers import OPENAI
from resilient_llm.testing import Hostile, HostileProvider
from resilient_llm.transport.streams import StreamConsumer

MESSAGES: Any = [{"role": "user", "content": "hi"}]
IDLE = 0.5
# the deadline the stream used to run to; far above the idle limit
# recovery off: these tests are about where the idle limit ends a stream
POLICY = Policy(deadline=4, stream_idle_timeout=IDLE, first_token_timeout=3, max_attempts=1,
                stream_recovery="off")


@pytest.fixture
def server() -> Iterator[HostileProvider]:
    with HostileProvider(max_seconds=10) as provider:
        yield provider


def test_only_events_restart_the_idle_limit() -> None:
    call, token = start_call(Policy(), target="m")
    end_call(token)  # the consumer needs the call, not a current one
    consumer = StreamConsumer(call, OPENAI)
    assert not consumer.feed(b": keep-alive\n\n")
    assert not consumer.feed(b"\n\n\n")
    assert not consumer.feed(b'data: {"choices":[{"index":0,"delta":{"content":"h')  # unfinished
    assert consumer.feed(b'i"}}]}\n\n')
    assert consumer.feed(b': ping\n\ndata: {"choices":[]}\n\n')  # an event among comments
    assert consumer.scanner.text == "hi"


def openai_run(server: HostileProvider, mode: str, policy: Policy = POLICY) -> None:
    """Read a chat stream to its end (or its error)."""

    def sync() -> None:
        with OpenAI(base_url=server.base_url, api_key="k", policy=policy) as client:
            for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                pass

    async def main() -> None:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k", policy=policy) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True)
            async for _ in stream:
                pass

    sync() if mode == "sync" else anyio.run(main)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_keepalives_after_output_end_at_the_idle_limit(
    server: HostileProvider, mode: str
) -> None:
    server.script(Hostile.keepalive_stream(0.05, after_events=1))
    started = time.monotonic()
    with pytest.raises(StreamInterrupted) as info:
        openai_run(server, mode)
    took = time.monotonic() - started
    assert IDLE <= took < IDLE + 0.6  # not the 4 s deadline
    assert info.value.failure == "stream_stall" and info.value.partial_text == "hello"
    # Both drivers report a timeout: the sync watchdog's shutdown of the socket is not the
    # "peer closed the connection" it causes (that would blame the server).
    assert isinstance(info.value.cause, httpx2.ReadTimeout), repr(info.value.cause)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_anthropic_keepalives_after_output_end_at_the_idle_limit(
    server: HostileProvider, mode: str
) -> None:
    server.script(Hostile.keepalive_stream(0.05, after_events=3))

    def sync() -> None:
        with Anthropic(base_url=server.base_url, api_key="k", policy=POLICY) as client, \
                client.messages.stream(model="m", max_tokens=8, messages=MESSAGES) as stream:
            for _ in stream.text_stream:
                pass

    async def main() -> None:
        async with AsyncAnthropic(base_url=server.base_url, api_key="k",
                                  policy=POLICY) as client:
            async with client.messages.stream(model="m", max_tokens=8,
                                              messages=MESSAGES) as stream:
                async for _ in stream.text_stream:
                    pass

    started = time.monotonic()
    with pytest.raises(StreamInterrupted) as info:
        sync() if mode == "sync" else anyio.run(main)
    assert IDLE <= time.monotonic() - started < IDLE + 0.6
    assert info.value.failure == "stream_stall" and info.value.partial_text == "hello"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_keepalives_before_any_output_end_at_the_first_token_limit(
    server: HostileProvider, mode: str
) -> None:
    """Before the first output the first-token limit applies (comments are not output)."""
    server.script(Hostile.keepalive_stream(0.05))
    policy = POLICY.model_copy(update={"first_token_timeout": 0.8, "stream_idle_timeout": 90.0})

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        openai_run(server, mode, policy)
    assert 0.8 <= time.monotonic() - started < 1.4


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_deadline_that_ends_the_wait_for_the_first_output_names_it_as_the_cause(
    server: HostileProvider, mode: str,
) -> None:
    """The attempt failed (no output in time): the caller's ``DeadlineExceeded`` carries that
    failure as the SDK's timeout, not ``None``."""
    server.script(Hostile.keepalive_stream(0.05))
    policy = Policy(deadline=0.8, first_token_timeout=3, max_attempts=1)

    with pytest.raises(DeadlineExceeded) as info:
        openai_run(server, mode, policy)
    assert isinstance(info.value.cause, openai.APITimeoutError), repr(info.value.cause)
    assert [a.failure for a in info.value.attempts] == ["first_token_timeout"]


@pytest.mark.slow
@pytest.mark.parametrize("api", ["chat", "messages"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_keepalives_after_output_are_a_stall_that_recovery_resumes(
    server: HostileProvider, mode: str, api: str,
) -> None:
    """With stream recovery on (the default), a stream that sends only keep-alives once output
    has started is resumed at the idle limit: it used to run to the deadline (the comments,
    handed on with the events, restarted the limit)."""
    server.script(Hostile.keepalive_stream(0.05, after_events=1 if api == "chat" else 3))
    # restart: this provider answers a prefill with its whole answer again, as no model would
    policy = Policy(deadline=4, stream_idle_timeout=IDLE, first_token_timeout=3,
                    stream_continuation={"*": "restart"})

    def sync() -> str:
        if api == "chat":
            with OpenAI(base_url=server.base_url, api_key="k", policy=policy) as client:
                return "".join(chunk.choices[0].delta.content or "" for chunk in
                               client.chat.completions.create(model="m", messages=MESSAGES,
                                                              stream=True) if chunk.choices)
        with Anthropic(base_url=server.base_url, api_key="k", policy=policy) as messages, \
                messages.messages.stream(model="m", max_tokens=8, messages=MESSAGES) as stream:
            return "".join(stream.text_stream)

    async def main() -> str:
        text = ""
        if api == "chat":
            async with AsyncOpenAI(base_url=server.base_url, api_key="k",
                                   policy=policy) as client:
                async for chunk in await client.chat.completions.create(
                        model="m", messages=MESSAGES, stream=True):
                    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            return text
        async with AsyncAnthropic(base_url=server.base_url, api_key="k",
                                  policy=policy) as aclient, \
                aclient.messages.stream(model="m", max_tokens=8, messages=MESSAGES) as astream:
            async for piece in astream.text_stream:
                text += piece
        return text

    started = time.monotonic()
    text = sync() if mode == "sync" else anyio.run(main)
    assert IDLE <= time.monotonic() - started < IDLE + 1.0  # not the 4 s deadline
    assert text == "hello"  # the whole answer once: the continuation verified the delivered
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_idle_limit_holds_in_process_as_over_a_socket(mode: str) -> None:
    """``FaultProvider.transport()`` (no socket): a stall past the idle limit ends the stream
    there, as over a network (the sync client's watchdog shuts the in-process line down),
    not when the attempt's read timeout runs out minutes later."""
    import httpx2

    from resilient_llm.testing import Fault, FaultProvider

    provider = FaultProvider()
    provider.script(Fault.stream_stall(after_events=4))  # silent for ever after 4 events
    policy = Policy(stream_recovery="off", stream_idle_timeout=0.3, deadline=30)
    messages: Any = [{"role": "user", "content": "hi"}]

    def sync() -> None:
        with OpenAI(base_url="http://fault.test/v1", api_key="k", policy=policy,
                    http_client=httpx2.Client(transport=provider.transport())) as client:
            for _ in client.chat.completions.create(model="gpt-4.1", messages=messages,
                                                    stream=True):
                pass

    async def main() -> None:
        async with AsyncOpenAI(base_url="http://fault.test/v1", api_key="k", policy=policy,
                               http_client=httpx2.AsyncClient(
                                   transport=provider.transport())) as client:
            async for _ in await client.chat.completions.create(
                    model="gpt-4.1", messages=messages, stream=True):
                pass

    started = time.monotonic()
    with pytest.raises(StreamInterrupted) as info:
        sync() if mode == "sync" else anyio.run(main)
    assert info.value.failure == "stream_stall" and info.value.partial_text
    assert time.monotonic() - started < 3.0
    (request,) = provider.requests
    assert request.client_disconnected  # the provider saw the client leave
