"""The fault-injecting provider, checked through the official SDKs over both drivers.

Every fault kind runs in-process (``provider.transport()``) and over the loopback server
(``provider.serve()``); the official ``openai`` and ``anthropic`` clients, with their own
retries off, must parse every answer exactly as they would parse the real APIs.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from resilient_llm.testing import (
    FakeClock,
    FakeRandom,
    Fault,
    FaultProvider,
    FaultServer,
    RecordedRequest,
    ToolCall,
    Usage,
)
from resilient_llm.testing._wire import go_duration, rfc3339_after

TEXT = "Hello from the fault provider."
MSGS: list[Any] = [{"role": "user", "content": "hi"}]
GPT = "gpt-4.1"
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------- environments


@dataclass
class Env:
    """A provider plus official clients wired to it through one of the two drivers."""

    provider: FaultProvider
    server: FaultServer | None
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "server" if self.server else "inproc"

    def openai_url(self) -> str:
        return self.server.openai_base_url if self.server else "http://fault.test/v1"

    def anthropic_url(self) -> str:
        return self.server.anthropic_base_url if self.server else "http://fault.test"

    def http(self) -> httpx2.Client:
        client = httpx2.Client(transport=None if self.server else self.provider.transport())
        self.closers.append(client.close)
        return client

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=self.openai_url(),
            api_key="test",
            max_retries=0,
            http_client=self.http(),
            **kwargs,
        )
        self.closers.append(client.close)
        return client

    def anthropic_client(self, **kwargs: Any) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.anthropic_url(),
            api_key="test",
            max_retries=0,
            http_client=self.http(),
            **kwargs,
        )
        self.closers.append(client.close)
        return client

    def async_http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=None if self.server else self.provider.transport(),
            limits=httpx2.Limits(max_connections=400, max_keepalive_connections=400),
        )

    def async_openai(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.openai_url(),
            api_key="test",
            max_retries=0,
            http_client=self.async_http(),
            **kwargs,
        )

    def async_anthropic(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=self.anthropic_url(),
            api_key="test",
            max_retries=0,
            http_client=self.async_http(),
            **kwargs,
        )

    def settled(self, count: int = 1, timeout: float = 2.0) -> list[RecordedRequest]:
        """The log once ``count`` requests have finished (server-side effects lag the client)."""
        return self.provider.wait_for(
            lambda rs: len(rs) >= count and all(r.finished for r in rs[:count]), timeout=timeout
        )


@pytest.fixture(params=["inproc", "server"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    provider = FaultProvider()
    server = provider.serve() if request.param == "server" else None
    e = Env(provider, server)
    try:
        yield e
    finally:
        for close in reversed(e.closers):
            close()
        if server is not None:
            server.stop()


def chat_stream_text(client: openai.OpenAI, **kwargs: Any) -> str:
    with client.chat.completions.create(model=GPT, messages=MSGS, stream=True, **kwargs) as s:
        return "".join(c.choices[0].delta.content or "" for c in s if c.choices)


def messages_stream_text(client: anthropic.Anthropic) -> str:
    with client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS, stream=True) as s:
        return "".join(
            e.delta.text
            for e in s
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )


def raw_sse(env: Env, path: str, body: dict[str, Any]) -> tuple[httpx2.Response, bytes]:
    """POST and read the raw body (tolerating a cut), for byte-level wire assertions."""
    base = (
        env.openai_url() if path.startswith(("/chat", "/resp")) else (env.anthropic_url() + "/v1")
    )
    client = env.http()
    chunks: list[bytes] = []
    with client.stream("POST", base + path, json=body) as response:
        try:
            chunks.extend(response.iter_raw())
        except httpx2.RemoteProtocolError:
            chunks.append(b"<cut>")
    return response, b"".join(chunks)


# ---------------------------------------------------------------- happy paths


def test_openai_chat_json_and_stream_parse(env: Env) -> None:
    client = env.openai_client()
    completion = client.chat.completions.create(model=GPT, messages=MSGS)
    assert completion.model == GPT
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.model for c in chunks} == {"gpt-4.1-mini"}
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 3
    assert "".join(deltas) == TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_tool_calls_parse_in_both_sdks_json_and_stream(env: Env) -> None:
    args = '{"city": "Paris", "days": 3}'
    env.provider.set_default(Fault.ok(text="Checking.", tool_calls=[ToolCall("weather", args)]))
    client = env.openai_client()
    message = client.chat.completions.create(model=GPT, messages=MSGS).choices[0].message
    assert message.content == "Checking."
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls or []
            if c.type == "function"] == [("weather", args)]
    with client.chat.completions.stream(model=GPT, messages=MSGS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls"
    (call,) = final.message.tool_calls or []
    assert call.function.arguments == args and call.id.startswith("call_fault")
    a_client = env.anthropic_client()
    with a_client.messages.stream(model=CLAUDE, max_tokens=64, messages=MSGS) as a_stream:
        for _ in a_stream:
            pass
        streamed = a_stream.get_final_message()
    created = a_client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    for answer in (streamed, created):
        assert answer.stop_reason == "tool_use"
        assert [block.type for block in answer.content] == ["text", "tool_use"]
        assert getattr(answer.content[1], "input", None) == json.loads(args)
    with pytest.raises(TypeError, match="ToolCall"):
        Fault.ok(tool_calls=[("weather", args)])  # type: ignore[list-item]


def test_openai_responses_json_and_stream_parse(env: Env) -> None:
    client = env.openai_client()
    response = client.responses.create(model="gpt-5", input="hi")
    assert response.model == "gpt-5"
    assert response.output_text == TEXT
    assert response.status == "completed"
    events = list(client.responses.create(model="gpt-5", input="hi", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == TEXT
    with client.responses.stream(model="gpt-5", input="hi") as stream:
        assert stream.get_final_response().output_text == TEXT


def test_openai_embeddings_are_deterministic(env: Env) -> None:
    client = env.openai_client()
    first = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    again = client.embeddings.create(
        model="text-embedding-3-small", input=["a"], encoding_format="float"
    )
    assert first.model == "text-embedding-3-small"
    assert len(first.data) == 2 and len(first.data[0].embedding) == 16
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)
    assert first.data[0].embedding != first.data[1].embedding
    assert math.isclose(sum(v * v for v in again.data[0].embedding), 1.0, rel_tol=1e-6)
    sized = client.embeddings.create(model="m", input="a", dimensions=4, encoding_format="float")
    assert len(sized.data[0].embedding) == 4


def test_anthropic_messages_json_and_stream_parse(env: Env) -> None:
    env.provider.default = Fault.ok(
        usage=Usage(
            input_tokens=100, output_tokens=7, cache_read_tokens=80, cache_creation_tokens=20
        )
    )
    client = env.anthropic_client()
    message = client.messages.create(model=CLAUDE, max_tokens=64, messages=MSGS)
    assert message.model == CLAUDE
    assert message.content[0].type == "text" and message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 100
    assert message.usage.cache_read_input_tokens == 80
    assert message.usage.cache_creation_input_tokens == 20

    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSGS) as s:
        assert s.get_final_text() == TEXT
        final = s.get_final_message()
    assert final.model == "claude-haiku-4-5"
    assert final.usage.output_tokens == 7 and final.usage.cache_read_input_tokens == 80

    response, raw = raw_sse(env, "/messages", {"model": CLAUDE, "stream": True, "max_tokens": 5})
    names = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert response.headers["content-type"].startswith("text/event-stream")


def test_scripted_text_and_usage_reach_openai_clients(env: Env) -> None:
    env.provider.script(
        Fault.ok(
            text="one two three four",
            usage=Usage(input_tokens=9, output_tokens=4, cache_read_tokens=5),
        ),
        Fault.ok(text="streamed answer", usage={"input_tokens": 3, "output_tokens": 2}),
    )
    client = env.openai_client()
    completion = client.chat.completions.create(model=GPT, messages=MSGS)
    assert completion.choices[0].message.content == "one two three four"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 9
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 5
    assert chat_stream_text(client) == "streamed answer"


def test_response_headers_look_real(env: Env) -> None:
    client = env.openai_client()
    raw = client.chat.completions.with_raw_response.create(model=GPT, messages=MSGS)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-limit-requests"].isdigit()
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert raw.parse().choices[0].message.content == TEXT
    araw = env.anthropic_client().messages.with_raw_response.create(
        model=CLAUDE, max_tokens=5, messages=MSGS
    )
    assert araw.headers["request-id"].startswith("req_")
    reset = araw.headers["anthropic-ratelimit-requests-reset"]
    assert dt.datetime.fromisoformat(reset.replace("Z", "+00:00")).tzinfo is not None


# ---------------------------------------------------------------- error statuses


def test_status_429_with_headers_and_openai_shape(env: Env) -> None:
    env.provider.script(Fault.status(429, headers={"retry-after": "1"}), Fault.ok())
    client = env.openai_client()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=GPT, messages=MSGS)
    err = info.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.response.headers["retry-after"] == "1"
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert client.chat.completions.create(model=GPT, messages=MSGS).model == GPT
    assert [r.status for r in env.settled(2)] == [429, 200]


@pytest.mark.parametrize(
    ("fault", "exc", "code"),
    [
        (Fault.context_length_exceeded(), openai.BadRequestError, "context_length_exceeded"),
        (Fault.insufficient_quota(), openai.RateLimitError, "insufficient_quota"),
        (Fault.content_policy(), openai.BadRequestError, "content_policy_violation"),
        (Fault.status(503), openai.InternalServerError, None),
        (Fault.status(401), openai.AuthenticationError, "invalid_api_key"),
    ],
)
def test_openai_error_codes(env: Env, fault: Any, exc: type[Exception], code: str | None) -> None:
    env.provider.script(fault)
    with pytest.raises(exc) as info:
        env.openai_client().chat.completions.create(model=GPT, messages=MSGS)
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.code == code
    body = info.value.body
    assert isinstance(body, dict) and {"message", "type", "param", "code"} <= body.keys()


@pytest.mark.parametrize(
    ("fault", "exc", "etype"),
    [
        (Fault.status(529), anthropic.OverloadedError, "overloaded_error"),
        (Fault.status(429), anthropic.RateLimitError, "rate_limit_error"),
        (Fault.status(400), anthropic.BadRequestError, "invalid_request_error"),
        (Fault.status(500), anthropic.InternalServerError, "api_error"),
        (Fault.insufficient_quota(), anthropic.RateLimitError, "rate_limit_error"),
    ],
)
def test_anthropic_error_types(env: Env, fault: Any, exc: type[Exception], etype: str) -> None:
    env.provider.script(fault)
    with pytest.raises(exc) as info:
        env.anthropic_client().messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)
    assert isinstance(info.value, anthropic.APIStatusError)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == etype
    assert info.value.request_id is not None


def test_custom_error_fields_and_body(env: Env) -> None:
    env.provider.script(
        Fault.status(
            400,
            error_type="invalid_request_error",
            error_code="bad_thing",
            message="nope",
            param="temperature",
        ),
        Fault.status(418, body={"weird": True}),
    )
    client = env.openai_client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert info.value.body == {
        "message": "nope",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "bad_thing",
    }
    with pytest.raises(openai.APIStatusError) as info2:
        client.chat.completions.create(model=GPT, messages=MSGS)
    assert info2.value.status_code == 418 and info2.value.body == {"weird": True}


def test_unknown_path_is_a_provider_shaped_404(env: Env) -> None:
    response = env.http().get(env.openai_url() + "/models")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    assert env.settled()[0].fault == "not_found"


# ---------------------------------------------------------------- latency, hang, reset


def test_delay_before_headers_and_read_timeout(env: Env) -> None:
    env.provider.script(Fault.ok(delay=0.15), Fault.ok(delay=0.5))
    client = env.openai_client()
    started = time.monotonic()
    client.chat.completions.create(model=GPT, messages=MSGS)
    assert time.monotonic() - started >= 0.15
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=GPT, messages=MSGS, timeout=0.1)
    first, second = env.settled(2)
    assert first.status == 200 and not first.client_disconnected
    assert second.status is None and second.client_disconnected


def test_hang_times_out_and_is_recorded(env: Env) -> None:
    env.provider.script(Fault.hang())
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        env.openai_client(timeout=0.15).chat.completions.create(model=GPT, messages=MSGS)
    assert 0.15 <= time.monotonic() - started < 1.5
    (record,) = env.settled()
    assert record.fault == "hang" and record.status is None and record.client_disconnected


def test_reset_is_a_connection_error(env: Env) -> None:
    env.provider.script(Fault.reset(), Fault.reset())
    with pytest.raises(openai.APIConnectionError):
        env.openai_client().chat.completions.create(model=GPT, messages=MSGS)
    with pytest.raises(anthropic.APIConnectionError):
        env.anthropic_client().messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)
    records = env.settled(2)
    assert [r.fault for r in records] == ["reset", "reset"]
    assert all(r.status is None for r in records)


def test_reset_sends_rst_on_the_socket() -> None:
    provider = FaultProvider()
    provider.script(Fault.reset())
    with provider.serve() as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        )
        with pytest.raises(ConnectionResetError):
            while sock.recv(1024):
                pass


# ---------------------------------------------------------------- stream faults


def test_stream_cut(env: Env) -> None:
    env.provider.script(Fault.stream_cut(after_events=3), Fault.stream_cut(after_events=4))
    seen: list[str] = []
    with (
        pytest.raises(openai.APIConnectionError),
        env.openai_client().chat.completions.create(model=GPT, messages=MSGS, stream=True) as s,
    ):
        for chunk in s:
            seen.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 (raises midway)
    assert "".join(seen) == "Hello from "
    # anthropic 2.12 lets the raw transport error escape (providers.md section 6)
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        messages_stream_text(env.anthropic_client())
    records = env.settled(2)
    assert [r.status for r in records] == [200, 200]
    assert not any(r.client_disconnected for r in records)


def test_stream_cut_on_a_json_request_breaks_the_body(env: Env) -> None:
    env.provider.script(Fault.stream_cut())
    with pytest.raises(openai.APIConnectionError):
        env.openai_client().chat.completions.create(model=GPT, messages=MSGS)


def test_stream_stall_finite_then_continues(env: Env) -> None:
    env.provider.script(Fault.stream_stall(after_events=2, seconds=0.2))
    client = env.openai_client()
    started = time.monotonic()
    stamps: list[float] = []
    text = []
    with client.chat.completions.create(model=GPT, messages=MSGS, stream=True) as s:
        for chunk in s:
            stamps.append(time.monotonic() - started)
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == TEXT
    assert stamps[2] >= 0.2  # the third event waited out the stall
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps.index(max(gaps)) == 1 and max(gaps) >= 0.1


@pytest.mark.parametrize("fault", [Fault.first_token_delay(0),
                                   Fault.stream_stall(after_events=2, seconds=0)],
                         ids=["first_token_delay", "stream_stall"])
def test_whole_seconds_are_a_pause_not_a_cut(env: Env, fault: Fault) -> None:
    env.provider.script(fault)  # an int step once read as a cut of the connection
    assert chat_stream_text(env.openai_client()) == TEXT


def test_seconds_are_stored_as_floats_and_flags_are_refused() -> None:
    assert Fault.ok(chunk_delay=1).chunk_delay == 1.0
    assert isinstance(Fault.stream_stall(seconds=2).seconds, float)
    with pytest.raises(TypeError, match="delay must be a number of seconds"):
        Fault.ok(delay=True)


def test_stream_stall_forever_trips_the_read_timeout(env: Env) -> None:
    env.provider.script(Fault.stream_stall(after_events=2), Fault.stream_stall(after_events=4))
    with pytest.raises(openai.APITimeoutError):
        chat_stream_text(env.openai_client(timeout=0.15))
    with pytest.raises((httpx2.ReadTimeout, anthropic.APITimeoutError)):
        messages_stream_text(env.anthropic_client(timeout=0.15))
    records = env.settled(2)
    assert all(r.status == 200 and r.client_disconnected for r in records)


def test_malformed_chunk(env: Env) -> None:
    env.provider.script(
        Fault.malformed_chunk(after_events=2), Fault.malformed_chunk(after_events=3)
    )
    with pytest.raises(ValueError, match="Expecting"):
        chat_stream_text(env.openai_client())
    with pytest.raises(ValueError, match="Expecting"):
        messages_stream_text(env.anthropic_client())
    env.provider.script(Fault.malformed_chunk(after_events=2))
    _, raw = raw_sse(env, "/chat/completions", {"model": GPT, "stream": True})
    assert raw.endswith(b"data: [DONE]\n\n")  # continues after the bad event
    env.provider.script(Fault.malformed_chunk())
    with pytest.raises(ValueError):
        env.openai_client().chat.completions.create(model=GPT, messages=MSGS)  # JSON body too


def test_missing_terminator_ends_silently(env: Env) -> None:
    env.provider.script(
        Fault.missing_terminator(),
        Fault.missing_terminator(after_events=3),
        Fault.missing_terminator(),
        Fault.missing_terminator(),
    )
    _, raw = raw_sse(env, "/chat/completions", {"model": GPT, "stream": True})
    assert b"[DONE]" not in raw and b"<cut>" not in raw and b'"finish_reason":"stop"' in raw
    assert chat_stream_text(env.openai_client()) == "Hello from "  # truncated, yet no error
    events = [
        e.type for e in env.openai_client().responses.create(model="gpt-5", input="x", stream=True)
    ]
    assert "response.completed" not in events and events[-1] == "response.output_item.done"
    _, raw = raw_sse(env, "/messages", {"model": CLAUDE, "stream": True, "max_tokens": 5})
    assert b"message_stop" not in raw and b"message_delta" in raw


def test_error_event(env: Env) -> None:
    env.provider.script(
        Fault.error_event(after_events=2),
        Fault.error_event(after_events=3),
        Fault.error_event(after_events=4),
    )
    with pytest.raises(openai.APIError) as info:
        chat_stream_text(env.openai_client())
    assert not isinstance(info.value, openai.APIStatusError)
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error"
    with pytest.raises(anthropic.APIStatusError) as ainfo:
        messages_stream_text(env.anthropic_client())
    assert ainfo.value.status_code == 200
    assert ainfo.value.type == "overloaded_error"
    events = list(env.openai_client().responses.create(model="gpt-5", input="x", stream=True))
    assert events[-1].type == "error"
    # without a stream the same failure arrives as a status
    env.provider.script(Fault.error_event())
    with pytest.raises(anthropic.OverloadedError):
        env.anthropic_client().messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)


def test_first_token_delay(env: Env) -> None:
    env.provider.script(Fault.first_token_delay(0.25), Fault.first_token_delay(0.2))
    started = time.monotonic()
    with env.openai_client().chat.completions.create(model=GPT, messages=MSGS, stream=True) as s:
        headers_at = time.monotonic() - started
        arrivals = [(time.monotonic() - started, c.choices[0].delta.content) for c in s]
    assert arrivals[0][1] == "" and arrivals[1][1] == "Hello "
    assert arrivals[1][0] >= 0.25  # the first content delta waited
    assert headers_at < arrivals[1][0] - 0.1  # headers and the role chunk did not
    assert arrivals[0][0] < arrivals[1][0] - 0.1
    started = time.monotonic()
    with env.anthropic_client().messages.create(
        model=CLAUDE, max_tokens=5, messages=MSGS, stream=True
    ) as astream:
        events = [(time.monotonic() - started, e.type) for e in astream]
    assert events[0][1] == "message_start"
    first_delta = next(t for t, name in events if name == "content_block_delta")
    assert first_delta >= 0.2 and events[0][0] < first_delta - 0.1


# ---------------------------------------------------------------- disconnects


def test_breaking_out_of_an_openai_stream_closes_upstream(env: Env) -> None:
    env.provider.default = Fault.ok(chunk_delay=0.05)
    client = env.openai_client()
    with client.chat.completions.create(model=GPT, messages=MSGS, stream=True) as s:
        for _ in s:
            break
    (record,) = env.settled()
    assert record.client_disconnected and record.status == 200
    assert record.ended_at is not None and record.ended_at - record.started_at < 1.0


def test_breaking_out_of_an_anthropic_stream_closes_upstream(env: Env) -> None:
    env.provider.default = Fault.ok(chunk_delay=0.05)
    with env.anthropic_client().messages.create(
        model=CLAUDE, max_tokens=5, messages=MSGS, stream=True
    ) as s:
        next(iter(s))
    assert env.settled()[0].client_disconnected


def test_a_streamed_status_is_logged_once_its_headers_are_out(env: Env) -> None:
    # A client that has read the status line finds it in the log while the body still flows.
    env.provider.default = Fault.stream_stall(after_events=1, seconds=0.5)
    body = {"model": GPT, "messages": MSGS, "stream": True}
    with env.http().stream("POST", env.openai_url() + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        (record,) = env.provider.requests
        assert record.status == 200 and not record.finished
    (record,) = env.settled()
    assert record.status == 200 and record.client_disconnected


def test_a_stream_read_to_the_end_is_not_a_disconnect(env: Env) -> None:
    env.provider.default = Fault.ok(chunk_delay=0.01)
    assert chat_stream_text(env.openai_client()) == TEXT
    (record,) = env.settled()
    assert not record.client_disconnected and record.status == 200


# ---------------------------------------------------------------- async clients


@pytest.mark.anyio
async def test_async_sdks_over_each_driver(env: Env) -> None:
    env.provider.script(Fault.first_token_delay(0.1), Fault.status(529))
    async with env.async_openai() as oc, env.async_anthropic() as ac:
        stream = await oc.chat.completions.create(model=GPT, messages=MSGS, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream]
        assert "".join(parts) == TEXT
        with pytest.raises(anthropic.OverloadedError):
            await ac.messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)
        message = await ac.messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)
        assert message.content[0].type == "text" and message.content[0].text == TEXT
        with pytest.raises(openai.APITimeoutError):
            env.provider.script(Fault.hang())
            await oc.chat.completions.create(model=GPT, messages=MSGS, timeout=0.1)
    assert env.settled(4)[3].client_disconnected


@pytest.mark.anyio
async def test_async_cancellation_counts_as_a_disconnect(env: Env) -> None:
    env.provider.script(Fault.hang(), Fault.stream_stall(after_events=1))
    async with env.async_openai() as client:
        with anyio.move_on_after(0.1) as scope:
            await client.chat.completions.create(model=GPT, messages=MSGS)
        assert scope.cancelled_caught
        with anyio.move_on_after(0.2) as scope:
            stream = await client.chat.completions.create(model=GPT, messages=MSGS, stream=True)
            async for _ in stream:
                pass
        assert scope.cancelled_caught
        await stream.close()
    records = env.settled(2)
    assert [r.client_disconnected for r in records] == [True, True]
    assert [r.status for r in records] == [None, 200]


@pytest.mark.anyio
async def test_many_concurrent_requests(env: Env) -> None:
    env.provider.default = Fault.ok(delay=0.2)
    started = time.monotonic()
    async with env.async_openai() as client:

        async def one() -> None:
            await client.chat.completions.create(model=GPT, messages=MSGS)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
    assert time.monotonic() - started < 5.0
    assert len(env.provider.requests) == 200
    assert all(r.status == 200 for r in env.settled(200))


# ---------------------------------------------------------------- capacity and limits


def _concurrently(n: int, call: Callable[[], httpx2.Response]) -> list[httpx2.Response]:
    out: list[httpx2.Response] = []
    lock = threading.Lock()

    def run() -> None:
        response = call()
        with lock:
            out.append(response)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _env_with(provider: FaultProvider, kind: str) -> Env:
    return Env(provider, provider.serve() if kind == "server" else None)


@pytest.mark.parametrize("kind", ["inproc", "server"])
def test_capacity_answers_429_with_real_rate_limit_headers(kind: str) -> None:
    provider = FaultProvider(capacity=2, service_time=0.3)
    e = _env_with(provider, kind)
    try:
        client = e.http()
        body = {"model": GPT, "messages": MSGS}
        responses = _concurrently(
            4, lambda: client.post(e.openai_url() + "/chat/completions", json=body)
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 429, 429]
        rejected = next(r for r in responses if r.status_code == 429)
        assert rejected.headers["x-ratelimit-limit-requests"] == "2"
        assert rejected.headers["x-ratelimit-remaining-requests"] == "0"
        reset = rejected.headers["x-ratelimit-reset-requests"]
        assert reset.endswith("ms") and 0 < int(reset[:-2]) <= 300
        assert "retry-after" not in rejected.headers
        assert rejected.json()["error"]["code"] == "rate_limit_exceeded"
        ok = client.post(e.openai_url() + "/chat/completions", json=body)
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "1"
        faults = sorted(r.fault for r in e.settled(5))
        assert faults == ["capacity", "capacity", "ok", "ok", "ok"]
    finally:
        for close in e.closers:
            close()
        if e.server:
            e.server.stop()


def test_capacity_anthropic_headers_and_retry_after() -> None:
    provider = FaultProvider(capacity=1, service_time=0.2, retry_after_header=True)
    provider.script(Fault.ok(text="scripted"))
    with provider.serve() as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="t", max_retries=0)
        with client:
            results: list[Any] = []

            def call() -> None:
                try:
                    results.append(
                        client.messages.create(model=CLAUDE, max_tokens=5, messages=MSGS)
                    )
                except anthropic.RateLimitError as exc:
                    results.append(exc)

            threads = [threading.Thread(target=call) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    errors = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    answers = [r for r in results if not isinstance(r, Exception)]
    assert len(errors) == 1 and len(answers) == 1
    assert answers[0].content[0].text == "scripted"  # the 429 did not consume the script
    headers = errors[0].response.headers
    assert headers["retry-after"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = dt.datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"][:-1] + "+00:00")
    assert 0 <= (reset - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 2


def test_request_rate_limit() -> None:
    provider = FaultProvider(rate_limit_rps=2)
    client = httpx2.Client(transport=provider.transport())
    with client:
        statuses = [
            client.post("http://x/v1/chat/completions", json={"model": GPT}).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        assert provider.requests[-1].fault == "rate_limit"
        time.sleep(0.55)
        assert client.post("http://x/v1/chat/completions", json={"model": GPT}).status_code == 200


def test_token_rate_limit() -> None:
    provider = FaultProvider(tokens_per_minute=1000)
    client = httpx2.Client(transport=provider.transport())
    with client:
        body = {"model": GPT, "max_tokens": 900}
        assert client.post("http://x/v1/chat/completions", json=body).status_code == 200
        rejected = client.post("http://x/v1/chat/completions", json=body)
    assert rejected.status_code == 429
    assert rejected.json()["error"]["type"] == "tokens"
    assert int(rejected.headers["x-ratelimit-remaining-tokens"]) == 0
    assert rejected.headers["x-ratelimit-limit-tokens"] == "1000"
    assert provider.requests[-1].fault == "token_limit"


# ---------------------------------------------------------------- scripting and the log


def test_queues_defaults_and_reset() -> None:
    provider = FaultProvider()
    provider.script(Fault.status(503), model=GPT)
    provider.script(Fault.status(500), Fault.status(502))
    provider.set_default(Fault.status(404), model="gpt-old")
    assert provider.pending() == 2 and provider.pending(model=GPT) == 1
    client = httpx2.Client(transport=provider.transport())
    with client:

        def status(model: str) -> int:
            return client.post("http://x/v1/chat/completions", json={"model": model}).status_code

        assert status("gpt-4.1-mini") == 500  # global queue
        assert status(GPT) == 503  # per-model queue first
        assert status(GPT) == 502  # then the global queue
        assert status(GPT) == 200  # then the default
        assert status("gpt-old") == 404  # per-model default
        provider.default = Fault.status(418)
        assert provider.default == Fault.status(418)
        assert status(GPT) == 418
        with pytest.raises(TypeError, match="Fault"):
            provider.default = "teapot"  # type: ignore[assignment]
        provider.reset()
        assert provider.requests == [] and provider.pending() == 0
        assert status("gpt-old") == 418  # per-model defaults cleared, default kept


def test_request_log_contents(env: Env) -> None:
    env.provider.script(Fault.ok(), Fault.status(500))
    client = env.openai_client()
    client.chat.completions.create(model=GPT, messages=MSGS, stream=True).close()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-x", messages=MSGS, temperature=0)
    first, second = env.settled(2)
    assert (first.index, second.index) == (0, 1)
    assert first.method == "POST" and first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer test"
    assert all(name == name.lower() for name in first.headers)
    assert first.stream and not second.stream
    assert first.model == GPT and second.model == "gpt-x"
    assert second.json == {"model": "gpt-x", "messages": MSGS, "temperature": 0}
    assert (first.fault, second.fault) == ("ok", "status")
    assert second.status == 500
    assert first.ended_at is not None and first.started_at <= first.ended_at
    assert first.started_at <= second.started_at
    with pytest.raises(dataclasses_frozen_error()):
        first.status = 1  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_wait_for_times_out_with_the_log() -> None:
    provider = FaultProvider()
    with pytest.raises(TimeoutError):
        provider.wait_for(lambda rs: len(rs) > 0, timeout=0.05)


def test_thread_safety_of_the_log() -> None:
    provider = FaultProvider()
    transport = provider.transport()

    def worker() -> None:
        with httpx2.Client(transport=transport) as client:
            for _ in range(50):
                client.post("http://x/v1/chat/completions", json={"model": GPT})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = provider.requests
    assert sorted(r.index for r in records) == list(range(400))
    assert all(r.status == 200 for r in records)


# ---------------------------------------------------------------- the server itself


def test_server_urls_keepalive_and_quick_stop_with_hung_requests() -> None:
    provider = FaultProvider(default=Fault.hang())
    server = provider.serve()
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    assert server.openai_base_url == server.url + "/v1"
    assert server.anthropic_base_url == server.url
    request = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(request)
        provider.wait_for(lambda rs: len(rs) == 200, timeout=5)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        assert not server.running
        assert all(r.finished and r.status is None for r in provider.requests)
        server.stop()  # idempotent
    finally:
        for sock in socks:
            sock.close()


def test_server_keeps_connections_alive_and_reads_chunked_bodies() -> None:
    provider = FaultProvider()
    with provider.serve() as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(2)
        body = json.dumps({"model": GPT}).encode()
        plain = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
            len(body),
            body,
        )
        chunked = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked"
            b"\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        )
        sock.sendall(plain + chunked)  # pipelined on one connection
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            data += sock.recv(65536)
    assert [r.model for r in provider.requests] == [GPT, GPT]


def test_sequential_requests_share_one_connection() -> None:
    provider = FaultProvider()
    with provider.serve() as server, httpx2.Client(base_url=server.openai_base_url) as client:
        for _ in range(300):
            assert client.post("/chat/completions", json={"model": GPT}).status_code == 200
    ports = {r.headers.get("host") for r in provider.requests}
    assert len(provider.requests) == 300 and len(ports) == 1


# ---------------------------------------------------------------- values and helpers


def test_fault_values_are_validated_and_frozen() -> None:
    with pytest.raises(ValueError):
        Fault.ok(delay=-1)
    with pytest.raises(ValueError):
        Fault.status(99)
    with pytest.raises(ValueError):
        Fault.stream_cut(after_events=-1)
    with pytest.raises(ValueError):
        Fault.first_token_delay(math.inf)
    with pytest.raises(TypeError):
        FaultProvider().script("not a fault")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FaultProvider(capacity=0)
    assert Fault.status(429) == Fault.status(429)
    assert Fault.hang().kind == "hang" and Fault.stream_stall().seconds == math.inf


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.12, "120ms"),
        (0.0004, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (17.28, "17.28s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_rfc3339_reset() -> None:
    stamp = rfc3339_after(2.0)
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert 1 <= (parsed - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 3.5


def test_embeddings_base64_wire_format() -> None:
    provider = FaultProvider()
    with httpx2.Client(transport=provider.transport()) as client:
        data = client.post(
            "http://x/v1/embeddings",
            json={"model": "e", "input": "a", "encoding_format": "base64", "dimensions": 3},
        ).json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert len(struct.unpack("<3f", raw)) == 3


def test_fake_clock_and_random_are_reexported() -> None:
    clock = FakeClock()
    clock.sleep(1.5)
    assert clock.sleeps == [1.5]
    assert FakeRandom(fixed=0.25).random() == 0.25


def test_command_line_server(tmp_path: Path) -> None:
    script = tmp_path / "faults.json"
    script.write_text(json.dumps({"faults": [{"kind": "status", "code": 503}]}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    environ = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resilient_llm.testing",
            "serve",
            "--port",
            "0",
            "--script",
            str(script),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].strip()
        with httpx2.Client() as client:
            first = client.post(url + "/v1/chat/completions", json={"model": GPT})
            second = client.post(url + "/v1/chat/completions", json={"model": GPT})
        assert (first.status_code, second.status_code) == (503, 200)
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_provider_reset_frees_in_process_hangs() -> None:
    provider = FaultProvider(default=Fault.hang())
    errors: list[Exception] = []

    def call() -> None:
        with httpx2.Client(transport=provider.transport(), timeout=None) as client:
            try:
                client.post("http://x/v1/chat/completions", json={"model": GPT})
            except httpx2.RemoteProtocolError as exc:
                errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    provider.wait_for(lambda rs: len(rs) == 1)
    provider.reset()
    thread.join(2)
    assert not thread.is_alive() and len(errors) == 1


def test_log_limit_keeps_the_latest_requests() -> None:
    provider = FaultProvider(log_limit=2)
    with httpx2.Client(transport=provider.transport()) as client:
        for _ in range(3):
            client.post("http://x/v1/embeddings", json={"model": "e", "input": "a"})
    assert [r.index for r in provider.requests] == [1, 2]


@pytest.mark.parametrize(("build", "error", "says"), [
    (lambda: FaultProvider(tokens_per_minute=math.nan), TypeError, "tokens_per_minute"),  # type: ignore[arg-type]
    (lambda: FaultProvider(rate_limit_rps=math.inf), ValueError, "rate_limit_rps"),
    (lambda: FaultProvider(rate_limit_rps=5, rate_limit_burst=math.inf), ValueError, "burst"),
    (lambda: FaultProvider(default="ok"), TypeError, "default must be a Fault"),  # type: ignore[arg-type]
    (lambda: Fault.stream_cut(after_events=1.5), TypeError, "after_events"),  # type: ignore[arg-type]
    (lambda: Fault.ok(text=5), TypeError, "text must be a string"),  # type: ignore[arg-type]
    (lambda: Fault.status(429.5), TypeError, "status code must be a whole number"),  # type: ignore[arg-type]
    (lambda: FaultProvider().script(Fault.ok(), model=123), TypeError, "model must be"),  # type: ignore[arg-type]
    (lambda: FaultProvider().set_default(Fault.ok(), model=1), TypeError, "model must be"),  # type: ignore[arg-type]
    (lambda: FaultProvider().wait_for(lambda log: False, timeout=math.nan), ValueError,
     "timeout"),
    (lambda: FakeClock().advance(math.nan), ValueError, "finite"),
    (lambda: FakeClock().sleep(math.inf), ValueError, "finite"),
])
def test_bad_arguments_are_refused_where_they_are_given(build: Any, error: type[Exception],
                                                       says: str) -> None:
    """Not at the request they would have broken (a nan token limit failed every request, a
    nan wait never ended), and not by meaning nothing (a model that is not a name)."""
    with pytest.raises(error, match=says):
        build()


def test_tool_calls_in_a_script_file_are_objects() -> None:
    from resilient_llm.testing.__main__ import fault_from_dict

    fault = fault_from_dict({"kind": "ok", "tool_calls": [{"name": "f", "arguments": "{}"}]})
    assert fault.tool_calls == (ToolCall("f", "{}"),)  # type: ignore[attr-defined]
