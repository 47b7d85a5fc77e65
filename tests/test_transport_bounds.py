"""Every wait of the transport ends by the deadline, against a hostile provider (issue 18:
items 1, 2, 6 and 14): dripped headers and bodies, non-JSON 200s, gzip-compressed streams,
and the errors a caller sees when first-token limits or malformed streams use every attempt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

from resilient_llm import DeadlineExceeded, Policy, ResilientTransport
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider, Hostile, HostileProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]
SLACK = 0.3


@pytest.fixture
def server() -> Iterator[HostileProvider]:
    with HostileProvider(max_seconds=15) as provider:
        yield provider


def sync_call(server: HostileProvider, deadline: float, **policy: Any) -> Any:
    with OpenAI(base_url=server.base_url, api_key="k",
                policy=Policy(deadline=deadline, **policy)) as client:
        return client.chat.completions.create(model="m", messages=MESSAGES)


def async_call(server: HostileProvider, deadline: float, **policy: Any) -> Any:
    async def main() -> Any:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k",
                               policy=Policy(deadline=deadline, **policy)) as client:
            return await client.chat.completions.create(model="m", messages=MESSAGES)

    return anyio.run(main)


CALLS = {"sync": sync_call, "async": async_call}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_headers_end_by_the_deadline(server: HostileProvider, mode: str) -> None:
    server.script(*[Hostile.drip_headers(0.2)] * 5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        CALLS[mode](server, 1.5)
    assert time.monotonic() - started < 1.5 + SLACK


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", ""])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_non_json_200_ends_by_the_deadline(server: HostileProvider, mode: str,
                                                   content_type: str) -> None:
    server.script(*[Hostile.not_json(content_type=content_type, interval=0.2)] * 5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        CALLS[mode](server, 1.5)
    assert time.monotonic() - started < 1.5 + SLACK


def stream_call(base_url: str, mode: str, **policy: Any) -> None:
    """Start a stream (the first attempt's failures surface here) and read it to its end."""
    if mode == "sync":
        with OpenAI(base_url=base_url, api_key="k", policy=Policy(**policy)) as client:
            for _ in client.chat.completions.create(model="m", messages=MESSAGES,
                                                    stream=True):
                pass
        return

    async def main() -> None:
        async with AsyncOpenAI(base_url=base_url, api_key="k", policy=Policy(**policy)) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True)
            async for _ in stream:
                pass

    anyio.run(main)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_first_token_timeouts_on_every_attempt_say_so(server: HostileProvider,
                                                      mode: str) -> None:
    server.script(*[Hostile.keepalive_stream(0.05)] * 2)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as info:
        stream_call(server.base_url, mode, deadline=5, max_attempts=2, first_token_timeout=0.4)
    assert time.monotonic() - started < 0.8 + 2 + SLACK  # two limits and one backoff at most
    message = str(info.value)
    assert "timed out" in message.lower()
    assert "first-token limit" in message and "first_token_timeout" in message
    assert "peer closed" not in message


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_malformed_first_event_says_it_was_malformed(mode: str) -> None:
    provider = FaultProvider()
    provider.default = Fault.malformed_chunk(after_events=0)
    with provider.serve() as running:
        with pytest.raises(openai.APIConnectionError) as info:
            stream_call(running.openai_base_url, mode, deadline=5, max_attempts=2,
                        max_backoff=0.1)
    message = str(info.value)
    assert "malformed" in message and message != "Connection error."


def test_a_callers_trace_extension_still_runs_and_is_given_back(server: HostileProvider) -> None:
    seen: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    transport = ResilientTransport(policy=Policy(deadline=5))
    with httpx2.Client(transport=transport) as client:
        request = client.build_request("POST", server.base_url + "/chat/completions",
                                       json={"model": "m", "messages": MESSAGES},
                                       extensions={"trace": trace})
        response = client.send(request)
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    assert "connection.connect_tcp.complete" in seen
    assert "http11.receive_response_headers.complete" in seen
    assert request.extensions["trace"] is trace


def test_the_send_guard_leaves_no_trace_extension_behind(server: HostileProvider) -> None:
    transport = ResilientTransport(policy=Policy(deadline=5))
    with httpx2.Client(transport=transport) as client:
        request = client.build_request("POST", server.base_url + "/chat/completions",
                                       json={"model": "m", "messages": MESSAGES})
        assert client.send(request).status_code == 200
    assert "trace" not in request.extensions
