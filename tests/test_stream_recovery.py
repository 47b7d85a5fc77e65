"""Stream recovery (issue 16, item 1), end to end over loopback with the official SDKs under
the drop-ins, sync and async: OpenAI chat completions, OpenAI Responses and Anthropic messages,
each with a fallback configured. A stream that breaks after its first output (cut, stall past
the idle limit, clean end without a finish reason, malformed event, error event) goes on, and
the caller's text is the provider's full answer exactly once; a continuation that does not
reproduce what was delivered ends in ``StreamInterrupted`` with the delivered text and the
original cause, never with what a fallback answered instead."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from resilient_llm import ConfigError, DeadlineExceeded, Policy, StreamInterrupted, outcome
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.providers import ANTHROPIC, OPENAI, StreamScanner
from resilient_llm.testing import Fault, FaultProvider, FaultServer, ToolCall
from resilient_llm.transport.splice import Diverged, Splicer

WORDS = [f"w{i}" for i in range(60)]
ANSWER = " ".join(WORDS)  # 60 content events on every wire: one per word
DELIVERED = "".join(word + " " for word in WORDS[:40])  # what 40 content events carry
OTHER = " ".join(f"x{i}" for i in range(60))  # an answer that does not continue ANSWER
MESSAGES: Any = [{"role": "user", "content": "count"}]
PRIMARY = {"chat": "gpt-4.1", "responses": "gpt-4.1", "messages": "claude-sonnet-4-6"}
FALLBACK = {"chat": "gpt-4.1-mini", "responses": "gpt-4.1-mini",
            "messages": "claude-haiku-4-5"}
#: Events before the first content event of each API's stream (role chunk; created,
#: in_progress, item and part added; message_start, content_block_start, ping).
OPENING = {"chat": 1, "responses": 4, "messages": 3}
DEADLINE = 10.0
IDLE = 0.5


def policy(**changes: Any) -> Policy:
    values: dict[str, Any] = {
        "deadline": DEADLINE, "stream_idle_timeout": IDLE,
        "fallbacks": {PRIMARY["chat"]: [FALLBACK["chat"]],
                      PRIMARY["messages"]: [FALLBACK["messages"]]},
    }
    values.update(changes)
    return Policy(**values)


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider(default=Fault.ok(text=ANSWER))


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


def fault_after_40(kind: str, api: str) -> Fault:
    """``kind`` after 40 of the answer's 60 content events."""
    n = OPENING[api] + 40
    if kind == "cut":
        return Fault.stream_cut(after_events=n, text=ANSWER)
    if kind == "stall":
        return Fault.stream_stall(after_events=n, text=ANSWER)
    if kind == "incomplete":
        return Fault.missing_terminator(after_events=n, text=ANSWER)
    if kind == "malformed":
        return Fault.malformed_chunk(after_events=n, text=ANSWER)
    return Fault.error_event(after_events=n, text=ANSWER)


def break_primary(provider: FaultProvider, api: str, fault: Fault) -> None:
    """The primary breaks once, then is down (503): the fallback continues the answer."""
    provider.script(fault, model=PRIMARY[api])
    provider.set_default(Fault.status(503), model=PRIMARY[api])


# --- reading a stream as a user would --------------------------------------------------------


def read(server: FaultServer, api: str, mode: str, pol: Policy,
         seen: list[str] | None = None) -> tuple[str, Any, Any]:
    """Stream the answer with the SDK's stream helper: (text, accumulated object, stream)."""
    seen = [] if seen is None else seen
    if mode == "sync":
        result: tuple[str, Any, Any] = _read_sync(server, api, pol, seen)
        return result
    result = anyio.run(_read_async, server, api, pol, seen)
    return result


def _read_sync(server: FaultServer, api: str, pol: Policy, seen: list[str]) -> Any:
    if api == "messages":
        with Anthropic(base_url=server.anthropic_base_url, api_key="k", policy=pol) as client, \
                client.messages.stream(model=PRIMARY[api], max_tokens=200,
                                       messages=MESSAGES) as stream:
            for text in stream.text_stream:
                seen.append(text)  # noqa: PERF402 - kept as it arrives
            final = stream.get_final_message()
            return "".join(seen), getattr(final.content[0], "text", None), stream
    with OpenAI(base_url=server.openai_base_url, api_key="k", policy=pol) as openai_client:
        if api == "chat":
            with openai_client.chat.completions.stream(
                model=PRIMARY[api], messages=MESSAGES, stream_options={"include_usage": True},
            ) as chat:
                for event in chat:
                    if event.type == "content.delta":
                        seen.append(event.delta)  # noqa: PERF401 - kept as it arrives
                completion = chat.get_final_completion()
                return "".join(seen), completion.choices[0].message.content, chat
        with openai_client.responses.stream(model=PRIMARY[api], input="count") as responses:
            for item in responses:
                if item.type == "response.output_text.delta":
                    seen.append(item.delta)  # noqa: PERF401 - kept as it arrives
            return "".join(seen), responses.get_final_response().output_text, responses


async def _read_async(server: FaultServer, api: str, pol: Policy, seen: list[str]) -> Any:
    if api == "messages":
        async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k",
                                  policy=pol) as client, \
                client.messages.stream(model=PRIMARY[api], max_tokens=200,
                                       messages=MESSAGES) as stream:
            async for text in stream.text_stream:
                seen.append(text)  # noqa: PERF401 - kept as it arrives
            final = await stream.get_final_message()
            return "".join(seen), getattr(final.content[0], "text", None), stream
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                           policy=pol) as openai_client:
        if api == "chat":
            async with openai_client.chat.completions.stream(
                model=PRIMARY[api], messages=MESSAGES, stream_options={"include_usage": True},
            ) as chat:
                async for event in chat:
                    if event.type == "content.delta":
                        seen.append(event.delta)  # noqa: PERF401 - kept as it arrives
                completion = await chat.get_final_completion()
                return "".join(seen), completion.choices[0].message.content, chat
        async with openai_client.responses.stream(model=PRIMARY[api],
                                                  input="count") as responses:
            async for item in responses:
                if item.type == "response.output_text.delta":
                    seen.append(item.delta)  # noqa: PERF401 - kept as it arrives
            response = await responses.get_final_response()
            return "".join(seen), response.output_text, responses


# --- the acceptance matrix --------------------------------------------------------------------

APIS = ["chat", "responses", "messages"]
MODES = ["sync", "async"]
FAULTS = {"cut": "stream_cut", "stall": "stream_stall", "incomplete": "stream_incomplete",
          "malformed": "stream_malformed"}


def fallbacks_for(api: str) -> Policy:
    if api == "responses":  # the Responses API names its model like chat does
        return policy(fallbacks={PRIMARY[api]: [FALLBACK[api]]})
    return policy()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_broken_stream_delivers_the_full_answer_exactly_once(
    provider: FaultProvider, server: FaultServer, kind: str, api: str, mode: str,
) -> None:
    break_primary(provider, api, fault_after_40(kind, api))
    started = time.monotonic()
    text, accumulated, stream = read(server, api, mode, fallbacks_for(api))
    took = time.monotonic() - started
    assert text == ANSWER, "the concatenated text is the answer, once"
    assert accumulated == ANSWER, "the SDK's accumulated object describes the whole answer"
    assert took < DEADLINE
    result = outcome(stream)
    (recovery,) = result.recoveries
    assert recovery.failure == FAULTS[kind]
    assert recovery.offset == len(DELIVERED)
    assert recovery.target == FALLBACK[api]
    expected_mode = "prefill" if api == "messages" else "restart"
    assert recovery.mode == expected_mode
    # a restart regenerated the 40 delivered words; a prefill only re-checked the space after
    # them (Anthropic refuses a prefill that ends in white space)
    assert recovery.regenerated_tokens == (1 if expected_mode == "prefill" else 40)
    assert result.finished and result.error is None and result.served_by == FALLBACK[api]
    assert [a.target for a in result.attempts] == [PRIMARY[api], PRIMARY[api], FALLBACK[api]]
    # the attempt that broke did not produce the answer: its class says how it ended
    assert [a.failure for a in result.attempts] == [FAULTS[kind], "overloaded", None]
    assert [a.ok for a in result.attempts] == [False, False, True]
    continued = provider.requests[-1]
    if expected_mode == "prefill":
        assert continued.prefill == DELIVERED.rstrip()
    else:
        assert continued.prefill is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", ["chat", "messages"])
def test_an_error_event_mid_answer_is_recovered(
    provider: FaultProvider, server: FaultServer, api: str, mode: str,
) -> None:
    break_primary(provider, api, fault_after_40("error", api))
    text, accumulated, stream = read(server, api, mode, fallbacks_for(api))
    assert text == accumulated == ANSWER
    assert outcome(stream).recoveries[0].target == FALLBACK[api]


def test_the_same_target_continues_when_its_failure_allows_a_retry(
    provider: FaultProvider, server: FaultServer,
) -> None:
    provider.script(fault_after_40("cut", "chat"), model=PRIMARY["chat"])
    text, _, stream = read(server, "chat", "sync", policy())
    assert text == ANSWER
    (recovery,) = outcome(stream).recoveries
    assert recovery.target == PRIMARY["chat"] and recovery.attempt == 2


# --- usage ------------------------------------------------------------------------------------


def test_usage_counts_every_attempt_and_the_final_objects_the_whole_answer(
    provider: FaultProvider, server: FaultServer,
) -> None:
    break_primary(provider, "chat", fault_after_40("cut", "chat"))
    _, _, stream = read(server, "chat", "sync", policy())
    completion = stream.get_final_completion()
    billed = outcome(stream).usage
    # the SDK's object: the answer's 60 tokens; outcome(): the 40 the broken attempt
    # generated plus the 60 the fallback generated again, and the prompt twice
    assert completion.usage.completion_tokens == 60
    assert billed["completion_tokens"] == 100
    assert billed["prompt_tokens"] == 2 * completion.usage.prompt_tokens
    assert billed["total_tokens"] == billed["prompt_tokens"] + billed["completion_tokens"]


def test_a_prefill_bills_the_continuation_only(
    provider: FaultProvider, server: FaultServer,
) -> None:
    break_primary(provider, "messages", fault_after_40("cut", "messages"))
    _, _, stream = read(server, "messages", "sync", policy())
    message = stream.get_final_message()
    billed = outcome(stream).usage
    assert message.usage.output_tokens == 60  # 40 before the break, 20 after
    assert billed["output_tokens"] == 60  # nothing was generated twice


# --- prefill: declared, rejected, remembered --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_fallback_that_rejects_prefill_restarts_and_verifies(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    break_primary(provider, "messages", fault_after_40("cut", "messages"))
    provider.set_prefill("reject", model=FALLBACK["messages"])
    text, accumulated, stream = read(server, "messages", mode, policy())
    assert text == accumulated == ANSWER
    (recovery,) = outcome(stream).recoveries
    assert (recovery.target, recovery.mode) == (FALLBACK["messages"], "restart")
    statuses = [(r.model, r.status, r.prefill is not None) for r in provider.requests]
    assert statuses[-2:] == [(FALLBACK["messages"], 400, True),
                             (FALLBACK["messages"], 200, False)]
    # remembered for the process: the next recovery there restarts at once
    provider.reset()
    break_primary(provider, "messages", fault_after_40("cut", "messages"))
    provider.set_prefill("reject", model=FALLBACK["messages"])
    text, _, _ = read(server, "messages", mode, policy())
    assert text == ANSWER
    assert all(r.status != 400 for r in provider.requests)


@pytest.mark.parametrize("mode", MODES)
def test_rejected_prefill_then_divergence_raises_the_original_fault_never_the_400(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    break_primary(provider, "messages", fault_after_40("cut", "messages"))
    provider.set_prefill("reject", model=FALLBACK["messages"])
    provider.set_default(Fault.ok(text=OTHER), model=FALLBACK["messages"])
    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        read(server, "messages", mode, policy(), seen)
    error = info.value
    assert error.failure == "stream_cut"
    assert isinstance(error.cause, httpx2.TransportError), "the cut, not the 400"
    assert not isinstance(error.__cause__, anthropic.BadRequestError)
    assert error.partial_text == DELIVERED == "".join(seen)
    assert 400 in [r.status for r in provider.requests]


@pytest.mark.parametrize("mode", MODES)
def test_a_declared_prefill_continues_an_openai_compatible_stream(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    break_primary(provider, "chat", fault_after_40("cut", "chat"))
    provider.set_prefill("continue", model=FALLBACK["chat"])
    pol = policy(stream_continuation={"gpt-4.1-*": "prefill"})
    text, accumulated, stream = read(server, "chat", mode, pol)
    assert text == accumulated == ANSWER
    (recovery,) = outcome(stream).recoveries
    assert (recovery.mode, recovery.regenerated_tokens) == ("prefill", 0)
    assert provider.requests[-1].prefill == DELIVERED


# --- divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_diverging_regeneration_raises_with_the_delivered_text_only(
    provider: FaultProvider, server: FaultServer, api: str, mode: str,
) -> None:
    break_primary(provider, api, fault_after_40("cut", api))
    provider.set_default(Fault.ok(text=OTHER), model=FALLBACK[api])
    pol = fallbacks_for(api).replace(stream_continuation={"*": "restart"})
    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        read(server, api, mode, pol, seen)
    assert info.value.partial_text == DELIVERED
    assert "".join(seen) == DELIVERED, "nothing beyond the delivered text reached the caller"
    assert info.value.failure == "stream_cut"
    assert isinstance(info.value.cause, httpx2.TransportError)


def test_an_answer_that_ends_before_reproducing_the_prefix_diverges(
    provider: FaultProvider, server: FaultServer,
) -> None:
    break_primary(provider, "chat", fault_after_40("cut", "chat"))
    provider.set_default(Fault.ok(text=" ".join(WORDS[:20])), model=FALLBACK["chat"])
    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        read(server, "chat", "sync", policy(), seen)
    assert info.value.partial_text == "".join(seen) == DELIVERED


# --- off, and the settings --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_recovery_off_restores_stream_interrupted(
    provider: FaultProvider, server: FaultServer, mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_STREAM_RECOVERY", "off")
    break_primary(provider, "chat", fault_after_40("cut", "chat"))
    pol = Policy.from_env(deadline=DEADLINE, fallbacks={PRIMARY["chat"]: [FALLBACK["chat"]]})
    assert pol.stream_recovery == "off"
    with pytest.raises(StreamInterrupted) as info:
        read(server, "chat", mode, pol)
    assert info.value.partial_text == DELIVERED
    assert len(provider.requests) == 1
    (attempt,) = info.value.attempts
    assert attempt.failure == "stream_cut" and not attempt.ok


def test_the_recovery_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Policy().stream_recovery == "continue"
    for same in ("on", "true", "1", True, " Continue "):  # "on": its earlier name
        assert Policy(stream_recovery=same).stream_recovery == "continue"
    assert Policy(stream_recovery=False).stream_recovery == "off"
    monkeypatch.setenv("RESILIENT_LLM_STREAM_RECOVERY", "sometimes")
    with pytest.raises(ConfigError, match="RESILIENT_LLM_STREAM_RECOVERY"):
        Policy.from_env()
    monkeypatch.delenv("RESILIENT_LLM_STREAM_RECOVERY")
    for bad in ('{"gpt-*": "resume"}', '{"g*t": "prefill"}', '["prefill"]',
                '{"gpt-4.1@eu": "prefill"}'):
        monkeypatch.setenv("RESILIENT_LLM_STREAM_CONTINUATION", bad)
        with pytest.raises(ConfigError, match="RESILIENT_LLM_STREAM_CONTINUATION"):
            Policy.from_env()


def test_continuation_patterns_pick_the_longest_match() -> None:
    pol = Policy(stream_continuation={"deepseek-*": "prefill", "deepseek-r*": "restart",
                                      "*": "restart", "my-model": "prefill"})
    assert pol.continuation("deepseek-chat") == "prefill"
    assert pol.continuation("deepseek-reasoner") == "restart"
    assert pol.continuation("my-model") == "prefill"
    assert pol.continuation("gpt-4.1") == "restart"
    assert Policy().continuation("claude-sonnet-4-6") is None


def test_a_stream_without_a_fallback_retries_its_own_target_then_gives_up(
    provider: FaultProvider, server: FaultServer,
) -> None:
    provider.set_default(fault_after_40("cut", "chat"), model="solo")
    seen: list[str] = []
    with OpenAI(base_url=server.openai_base_url, api_key="k",
                policy=Policy(deadline=DEADLINE, max_attempts=3)) as client, \
            pytest.raises(StreamInterrupted) as info:
        for chunk in client.chat.completions.create(model="solo", messages=MESSAGES,
                                                    stream=True):
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - kept as it arrives
    assert info.value.partial_text == "".join(seen) == DELIVERED
    assert len(provider.requests) == 3  # the attempt cap holds
    assert info.value.failure == "stream_cut"


def test_official_client_sees_the_same_chunks_on_a_healthy_stream(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Whole-event delivery changes nothing the SDK parses."""
    def chunks(client: Any) -> list[Any]:
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                stream=True)
        return [c.model_dump(exclude={"id", "created"}) for c in stream]

    with openai.OpenAI(base_url=server.openai_base_url, api_key="k") as official, \
            OpenAI(base_url=server.openai_base_url, api_key="k") as ours:
        assert chunks(ours) == chunks(official)


# --- the splicer, without I/O -----------------------------------------------------------------


def chat_event(content: str, finish: str | None = None) -> bytes:
    import json

    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n"


def restart_splicer(delivered: str) -> Splicer:
    return Splicer("chat", "restart", expected=[("text", None, delivered)], slot=0, prior=0,
                   sequence=None)


def test_the_event_that_crosses_the_delivered_text_is_cut_there() -> None:
    splicer = restart_splicer("Hello wor")
    assert splicer.feed(chat_event("Hel")) == []
    assert splicer.feed(chat_event("lo w")) == []
    (passed,) = splicer.feed(chat_event("orld"))
    assert b'"content":"ld"' in passed and splicer.verified and splicer.regenerated == 3
    assert splicer.feed(chat_event("!")) == [chat_event("!")]


def test_a_change_inside_an_event_is_divergence() -> None:
    splicer = restart_splicer("Hello wor")
    splicer.feed(chat_event("Hello"))
    with pytest.raises(Diverged):
        splicer.feed(chat_event(" wot"))


def test_an_event_split_across_chunks_is_read_whole() -> None:
    splicer = restart_splicer("ab")
    event = chat_event("abc")
    assert splicer.feed(event[:7]) == []
    (passed,) = splicer.feed(event[7:])
    assert b'"content":"c"' in passed


# --- tool calls and content blocks ------------------------------------------------------------

ARGS = '{"city": "Paris", "unit": "celsius", "days": 3, "hourly": false}'
SAY = "Let me check."
TOOL = [ToolCall("get_weather", ARGS)]


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_call_cut_mid_arguments_is_restarted_and_verified(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    # role, 3 words, the call's opening, 3 of its 8-character argument pieces
    provider.script(Fault.stream_cut(after_events=8, text=SAY, tool_calls=TOOL),
                    model=PRIMARY["chat"])
    provider.set_default(Fault.status(503), model=PRIMARY["chat"])
    provider.set_default(Fault.ok(text=SAY, tool_calls=TOOL), model=FALLBACK["chat"])

    async def run() -> Any:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                               policy=policy()) as client, \
                client.chat.completions.stream(model=PRIMARY["chat"],
                                               messages=MESSAGES) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_completion(), stream

    if mode == "sync":
        with OpenAI(base_url=server.openai_base_url, api_key="k", policy=policy()) as client, \
                client.chat.completions.stream(model=PRIMARY["chat"],
                                               messages=MESSAGES) as stream:
            for _ in stream:
                pass
            completion, handle = stream.get_final_completion(), stream
    else:
        completion, handle = anyio.run(run)
    message = completion.choices[0].message
    assert message.content == SAY
    (call,) = message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == ARGS
    assert call.id == "call_fault0_0", "the id the caller received first, not a new one"
    assert completion.choices[0].finish_reason == "tool_calls"
    (recovery,) = outcome(handle).recoveries
    assert (recovery.mode, recovery.target) == ("restart", FALLBACK["chat"])


@pytest.mark.parametrize("mode", MODES)
def test_an_anthropic_tool_use_block_cut_mid_input_is_restarted(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    # message_start, text block (start, ping, 3 words, stop), tool_use start, 3 input pieces
    provider.script(Fault.stream_cut(after_events=11, text=SAY, tool_calls=TOOL),
                    model=PRIMARY["messages"])
    provider.set_default(Fault.status(529), model=PRIMARY["messages"])
    provider.set_default(Fault.ok(text=SAY, tool_calls=TOOL), model=FALLBACK["messages"])
    message, stream = _anthropic_final(server, mode)
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert getattr(message.content[0], "text", None) == SAY
    tool = message.content[1]
    assert getattr(tool, "input", None) == json.loads(ARGS)
    assert getattr(tool, "id", None) == "toolu_fault0_0"
    assert message.stop_reason == "tool_use"
    (recovery,) = outcome(stream).recoveries
    assert recovery.mode == "restart", "a tool call's input is never prefilled"
    assert provider.requests[-1].prefill is None


@pytest.mark.parametrize("mode", MODES)
def test_text_cut_before_a_tool_use_block_continues_by_prefill(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    text = " ".join(WORDS[:10])
    # message_start, content_block_start, ping, 6 words
    provider.script(Fault.stream_cut(after_events=9, text=text, tool_calls=TOOL),
                    model=PRIMARY["messages"])
    provider.set_default(Fault.status(529), model=PRIMARY["messages"])
    provider.set_default(Fault.ok(text=text, tool_calls=TOOL), model=FALLBACK["messages"])
    message, stream = _anthropic_final(server, mode)
    assert getattr(message.content[0], "text", None) == text
    assert getattr(message.content[1], "input", None) == json.loads(ARGS)
    (recovery,) = outcome(stream).recoveries
    assert recovery.mode == "prefill"
    assert provider.requests[-1].prefill == " ".join(WORDS[:6])


def _anthropic_final(server: FaultServer, mode: str) -> tuple[Any, Any]:
    async def run() -> tuple[Any, Any]:
        async with AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k",
                                  policy=policy()) as client, \
                client.messages.stream(model=PRIMARY["messages"], max_tokens=200,
                                       messages=MESSAGES) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_message(), stream

    if mode == "async":
        result: tuple[Any, Any] = anyio.run(run)
        return result
    with Anthropic(base_url=server.anthropic_base_url, api_key="k",
                   policy=policy()) as client, \
            client.messages.stream(model=PRIMARY["messages"], max_tokens=200,
                                   messages=MESSAGES) as stream:
        for _ in stream:
            pass
        return stream.get_final_message(), stream


def test_thinking_is_never_resumed() -> None:
    """Thinking cannot be verified (it differs on every run) and is never replayed as a
    prefill: a stream whose delivered output holds it is not resumable."""
    scanner = StreamScanner(ANTHROPIC)
    scanner.feed(
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"thinking","thinking":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"Hmm"}}\n\n')
    assert scanner.committed and not scanner.resumable and not scanner.plain


def test_tool_calls_are_resumable_but_not_prefilled() -> None:
    scanner = StreamScanner(OPENAI)
    scanner.feed(
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"f","arguments":"{\\"a"}}]}}]}\n\n')
    assert scanner.resumable and not scanner.plain
    assert [(p.kind, p.name, p.text) for p in scanner.parts] == [
        ("text", None, "Hi"), ("tool", "f", '{"a')]


@pytest.mark.parametrize("mode", MODES)
def test_the_deadline_bounds_a_recovery(
    provider: FaultProvider, server: FaultServer, mode: str,
) -> None:
    """A continuation that never answers: the call ends at its deadline, with the text the
    caller received on the StreamInterrupted that DeadlineExceeded carries."""
    break_primary(provider, "chat", fault_after_40("cut", "chat"))
    provider.set_default(Fault.hang(), model=FALLBACK["chat"])
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        read(server, "chat", mode, policy(deadline=1.5), seen)
    assert time.monotonic() - started < 1.5 + 0.5
    interrupted = info.value.cause
    assert isinstance(interrupted, StreamInterrupted)
    assert interrupted.partial_text == "".join(seen) == DELIVERED
    assert interrupted.failure == "stream_cut"


def test_a_break_nothing_resumed_keeps_the_traceback_of_its_cause() -> None:
    """The stream ends with the break's error, its cause as it was raised: the continuations
    that failed after it (on the same target) do not take its traceback away."""
    import traceback

    import httpx2

    from resilient_llm.openai import OpenAI

    def chunk(text: str) -> bytes:
        return ("data: " + json.dumps({
            "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                         "finish_reason": None}]}) + "\n\n").encode()

    class Broken(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield chunk("Hello")
            raise httpx2.ReadError("connection reset mid-stream")

    sent: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(1)
        if len(sent) == 1:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   stream=Broken())
        return httpx2.Response(500, json={"error": {"message": "boom", "type": "server_error"}})

    with OpenAI(api_key="k", base_url="http://llm.test/v1",
                http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
                policy=Policy(deadline=10, max_attempts=3, max_backoff=0.01)) as client:
        with pytest.raises(StreamInterrupted) as info:
            for _ in client.chat.completions.create(model="m", stream=True, messages=[
                    {"role": "user", "content": "hi"}]):
                pass
    assert len(sent) == 3 and info.value.partial_text == "Hello"
    cause = info.value.cause
    assert isinstance(cause, httpx2.ReadError) and cause.__traceback__ is not None
    assert 'raise httpx2.ReadError("connection reset mid-stream")' in "".join(
        traceback.format_exception(cause))  # the line that raised it
