"""A stream is complete when it delivered its finish reason, not when ``[DONE]`` arrives (issue
16, item 2): over loopback, with the official SDKs under the drop-ins, sync and async, OpenAI
chat completions, OpenAI Responses and Anthropic messages. A clean end *without* a finish
reason stays a truncation (``StreamInterrupted``, ``stream_incomplete``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import openai
import pytest

from resilient_llm import Policy, StreamInterrupted, outcome
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.providers import ANTHROPIC, OPENAI, StreamScanner
from resilient_llm.testing import Fault, FaultProvider, FaultServer

GPT = "gpt-4.1"
CLAUDE = "claude-sonnet-4-6"
TEXT = "Every word of this answer arrives, then the sentinel does not."
MESSAGES: Any = [{"role": "user", "content": "hi"}]
POLICY = Policy(deadline=10, max_attempts=1)
# what differs between two exchanges of the same script: ids, clocks, and the prompt's token
# estimate (the drop-in adds a prompt-cache key to the request body)
VOLATILE = {"id", "created", "usage"}


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


def chat_dumps(chunks: list[Any]) -> list[dict[str, Any]]:
    return [chunk.model_dump(exclude=VOLATILE) for chunk in chunks]


def chat_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def anthropic_text(events: list[Any]) -> str:
    return "".join(e.delta.text for e in events
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")


# --- the scanner: what counts as complete ------------------------------------------------------


def scan(wire: Any, raw: bytes) -> StreamScanner:
    scanner = StreamScanner(wire)
    scanner.feed(raw)
    scanner.finish()
    return scanner


def chat_event(index: int, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def test_a_finish_reason_completes_a_chat_stream_without_the_sentinel() -> None:
    done = scan(OPENAI, chat_event(0, "Hi") + chat_event(0, None, "stop"))
    assert done.complete and done.finished and not done.terminal and done.text == "Hi"
    cut = scan(OPENAI, chat_event(0, "Hi"))
    assert not cut.complete
    # the finish reason may ride on the last content chunk (vLLM and others do that)
    assert scan(OPENAI, chat_event(0, "Hi", "length")).complete


def test_every_choice_must_finish() -> None:
    half = scan(OPENAI, chat_event(0, "a") + chat_event(1, "b") + chat_event(0, None, "stop"))
    assert not half.complete
    both = scan(OPENAI, chat_event(0, "a") + chat_event(1, "b") + chat_event(0, None, "stop")
                + chat_event(1, None, "tool_calls"))
    assert both.complete


def test_anthropic_stop_reason_completes_the_message() -> None:
    head = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"Hi"}}\n\n')
    stop = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
            b'"end_turn"},"usage":{"output_tokens":2}}\n\n')
    assert scan(ANTHROPIC, head + stop).complete
    assert not scan(ANTHROPIC, head).complete
    no_reason = stop.replace(b'"end_turn"', b"null")
    assert not scan(ANTHROPIC, head + no_reason).complete


# --- OpenAI chat completions ---------------------------------------------------------------------


def official_chat(server: FaultServer) -> list[Any]:
    with openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0) as client:
        return list(client.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}))


def test_chat_without_done_is_a_success_identical_to_the_official_client_sync(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.missing_terminator(text=TEXT))
    expected = official_chat(server)
    with OpenAI(base_url=server.openai_base_url, api_key="k", policy=POLICY) as client:
        stream = client.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    assert chat_dumps(chunks) == chat_dumps(expected)
    assert chat_text(chunks) == TEXT
    assert chunks[-1].usage is not None and expected[-1].usage is not None
    report = outcome(stream)
    assert report.finished and report.reason is None
    assert [a.failure for a in report.attempts] == [None]
    assert report.usage is not None


def test_chat_without_done_is_a_success_async(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.missing_terminator(text=TEXT))
    expected = official_chat(server)

    async def main() -> tuple[list[Any], Any]:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=POLICY) as client:
            stream = await client.chat.completions.create(
                model=GPT, messages=MESSAGES, stream=True,
                stream_options={"include_usage": True})
            return [chunk async for chunk in stream], stream

    chunks, stream = anyio.run(main)
    assert chat_dumps(chunks) == chat_dumps(expected)
    assert outcome(stream).finished and outcome(stream).reason is None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_chat_clean_end_without_a_finish_reason_is_still_a_truncation(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    provider.set_default(Fault.missing_terminator(after_events=3, text=TEXT))
    seen: list[Any] = []

    def sync() -> None:
        with OpenAI(base_url=server.openai_base_url, api_key="k", policy=POLICY) as client:
            seen.extend(client.chat.completions.create(model=GPT, messages=MESSAGES,
                                                       stream=True))  # keeps what came

    async def main() -> None:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=POLICY) as client:
            stream = await client.chat.completions.create(model=GPT, messages=MESSAGES,
                                                          stream=True)
            async for chunk in stream:
                seen.append(chunk)  # noqa: PERF401 - keep each chunk before the error

    with pytest.raises(StreamInterrupted) as info:
        sync() if mode == "sync" else anyio.run(main)
    assert info.value.failure == "stream_incomplete"
    assert info.value.partial_text == chat_text(seen) and TEXT.startswith(chat_text(seen))
    assert chat_text(seen) != TEXT


# --- OpenAI Responses ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_responses_complete_by_their_terminal_status(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    """``response.completed`` is both the finish and the end; without it the stream is cut."""
    provider.script(Fault.ok(text=TEXT), Fault.missing_terminator(text=TEXT))

    def sync() -> list[list[Any]]:
        runs: list[list[Any]] = []
        with OpenAI(base_url=server.openai_base_url, api_key="k", policy=POLICY) as client:
            runs.append(list(client.responses.create(model=GPT, input="x", stream=True)))
            try:
                runs.append(list(client.responses.create(model=GPT, input="x", stream=True)))
            except StreamInterrupted as exc:
                runs.append([exc])
        return runs

    async def main() -> list[list[Any]]:
        runs: list[list[Any]] = []
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=POLICY) as client:
            for _ in range(2):
                try:
                    stream = await client.responses.create(model=GPT, input="x", stream=True)
                    runs.append([event async for event in stream])
                except StreamInterrupted as exc:
                    runs.append([exc])
        return runs

    complete, truncated = sync() if mode == "sync" else anyio.run(main)
    assert complete[-1].type == "response.completed"
    assert complete[-1].response.output_text == TEXT
    (error,) = truncated
    assert isinstance(error, StreamInterrupted) and error.failure == "stream_incomplete"
    assert error.partial_text == TEXT  # every delta came; the completion did not


# --- Anthropic messages --------------------------------------------------------------------------


def test_anthropic_without_message_stop_is_a_success_identical_to_the_official_client_sync(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.missing_terminator(text=TEXT))
    with anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k",
                             max_retries=0) as official:
        expected = list(official.messages.create(model=CLAUDE, max_tokens=64,
                                                 messages=MESSAGES, stream=True))
    with Anthropic(base_url=server.anthropic_base_url, api_key="k", policy=POLICY) as client:
        stream = client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES,
                                        stream=True)
        events = list(stream)
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as helper:
            final = helper.get_final_message()
    assert [e.model_dump(exclude={"message"}) for e in events] == \
        [e.model_dump(exclude={"message"}) for e in expected]
    assert anthropic_text(events) == TEXT and events[-1].type == "message_delta"
    assert final.stop_reason == "end_turn" and final.content[0].text == TEXT  # type: ignore[union-attr]
    assert outcome(stream).finished and outcome(stream).reason is None


def test_anthropic_without_message_stop_is_a_success_async(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.set_default(Fault.missing_terminator(text=TEXT))

    async def main() -> tuple[str, Any]:
        async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k",
                                  policy=POLICY) as client:
            async with client.messages.stream(model=CLAUDE, max_tokens=64,
                                              messages=MESSAGES) as helper:
                text = "".join([piece async for piece in helper.text_stream])
                final = await helper.get_final_message()
            return text, final

    text, final = anyio.run(main)
    assert text == TEXT and final.stop_reason == "end_turn"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_anthropic_clean_end_without_a_stop_reason_is_still_a_truncation(
    provider: FaultProvider, server: FaultServer, mode: str
) -> None:
    provider.set_default(Fault.missing_terminator(after_events=5, text=TEXT))

    def sync() -> None:
        with Anthropic(base_url=server.anthropic_base_url, api_key="k", policy=POLICY) as c:
            list(c.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES, stream=True))

    async def main() -> None:
        async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k",
                                  policy=POLICY) as client:
            stream = await client.messages.create(model=CLAUDE, max_tokens=64,
                                                  messages=MESSAGES, stream=True)
            async for _ in stream:
                pass

    with pytest.raises(StreamInterrupted) as info:
        sync() if mode == "sync" else anyio.run(main)
    assert info.value.failure == "stream_incomplete"
    assert info.value.partial_text and TEXT.startswith(info.value.partial_text)
    assert info.value.partial_text != TEXT
