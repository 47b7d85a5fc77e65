"""Decoded response sizes are capped (issue 18 items 5 and 6): a gzip bomb or an absurd
``Content-Length`` fails fast with ``ResponseTooLarge`` and memory stays under the cap; a
gzip-compressed stream is decoded before it is inspected."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import ConfigError, Policy, ResponseTooLarge
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Hostile, HostileProvider
from resilient_llm.transport.decoding import EventView

MESSAGES: Any = [{"role": "user", "content": "hi"}]
CAP = 8 * 1024 * 1024


@pytest.fixture
def server() -> Iterator[HostileProvider]:
    with HostileProvider(max_seconds=15) as provider:
        yield provider


def ask(server: HostileProvider, mode: str, *, stream: bool = False, **policy: Any) -> str:
    """One chat completion (read to its end when streamed); its text."""
    settings = Policy(deadline=10, **policy)
    if mode == "sync":
        with OpenAI(base_url=server.base_url, api_key="k", policy=settings) as client:
            if not stream:
                answer = client.chat.completions.create(model="m", messages=MESSAGES)
                return answer.choices[0].message.content or ""
            return "".join(chunk.choices[0].delta.content or "" for chunk in
                           client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True) if chunk.choices)

    async def main() -> str:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k",
                               policy=settings) as client:
            if not stream:
                answer = await client.chat.completions.create(model="m", messages=MESSAGES)
                return answer.choices[0].message.content or ""
            events = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True)
            return "".join([chunk.choices[0].delta.content or "" async for chunk in events
                            if chunk.choices])

    return anyio.run(main)


def peak_of(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_gzip_bomb_fails_fast_with_memory_under_the_cap(server: HostileProvider,
                                                         mode: str) -> None:
    server.script(Hostile.gzip_bomb(size=64 * 1024 * 1024))  # inflates to 8 times the cap
    caught: list[ResponseTooLarge] = []

    def call() -> None:
        with pytest.raises(ResponseTooLarge) as info:
            ask(server, mode, max_response_bytes=CAP)
        caught.append(info.value)

    peak = peak_of(call)
    assert peak < CAP  # refused while decoding, not after
    assert caught[0].limit == CAP
    assert "max_response_bytes" in str(caught[0])
    assert "RESILIENT_LLM_MAX_RESPONSE_BYTES" in str(caught[0])
    assert len(server.requests) == 1  # not retried: the same request gets the same answer


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_huge_content_length_fails_before_reading(server: HostileProvider,
                                                    mode: str) -> None:
    server.script(Hostile.huge_content_length())
    with pytest.raises(ResponseTooLarge, match="Content-Length 107374182400"):
        ask(server, mode, max_response_bytes=CAP)  # refused on the header, before the body
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bodies_under_the_cap_still_read(server: HostileProvider, mode: str) -> None:
    server.script(Hostile.gzip(), Hostile.ok())
    assert ask(server, mode, max_response_bytes=64 * 1024) == "hello"
    assert ask(server, mode, max_response_bytes=64 * 1024) == "hello"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gzip_compressed_streams_are_decoded_before_inspection(server: HostileProvider,
                                                               mode: str) -> None:
    server.script(*[Hostile.gzip_stream()] * 5)
    for _ in range(5):  # every call succeeds at once: nothing retried, no breaker opened
        assert ask(server, mode, stream=True) == "hello"
    assert len(server.requests) == 5


def gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def view(encoding: str, limit: int) -> EventView:
    headers = {"content-encoding": encoding} if encoding else {}
    return EventView(httpx2.Response(200, headers=headers), limit)


def test_stream_events_are_bounded_each_not_in_total() -> None:
    limit = 64 * 1024
    event = b"data: " + b"x" * 1000 + b"\n\n"
    events = view("", limit)
    for _ in range(200):  # 200 kB of small events: fine
        assert b"".join(events(event)) == event
    one_huge = view("", limit)
    with pytest.raises(ResponseTooLarge, match="stream event"):
        for _ in range(100):
            list(one_huge(b"data: " + b"x" * 1000))  # never ends its event


def test_a_compressed_stream_is_decoded_in_bounded_pieces() -> None:
    text = b"".join(b"data: {\"n\": %d}\n\n" % n for n in range(5000))
    packed = gzip(text)
    decoded = view("gzip", 64 * 1024)
    assert b"".join(piece for i in range(0, len(packed), 100)
                    for piece in decoded(packed[i:i + 100])) == text
    bomb = gzip(bytes(64 * 1024 * 1024))
    bombed = view("gzip", 1024 * 1024)

    def explode() -> None:
        with pytest.raises(ResponseTooLarge):
            for piece in bombed(bomb):
                assert len(piece) <= 1024 * 1024

    assert peak_of(explode) < 4 * 1024 * 1024


def test_the_cap_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Policy().max_response_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("RESILIENT_LLM_MAX_RESPONSE_BYTES", "1048576")
    assert Policy.from_env().max_response_bytes == 1024 * 1024
    for bad in ("100", "1.5", "lots", "٣٣٣٣٣٣٣"):
        monkeypatch.setenv("RESILIENT_LLM_MAX_RESPONSE_BYTES", bad)
        with pytest.raises(ConfigError, match="RESILIENT_LLM_MAX_RESPONSE_BYTES"):
            Policy.from_env()


def test_anthropic_gzip_streams_and_bombs(server: HostileProvider) -> None:
    from resilient_llm.anthropic import Anthropic

    base = server.base_url.removesuffix("/v1")
    server.script(Hostile.gzip_stream(), Hostile.gzip_bomb(size=64 * 1024 * 1024))
    with Anthropic(base_url=base, api_key="k", policy=Policy(deadline=10,
                                                             max_response_bytes=CAP)) as client:
        with client.messages.stream(model="m", max_tokens=5,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            assert stream.get_final_text() == "hello"
        with pytest.raises(ResponseTooLarge):
            client.messages.create(model="m", max_tokens=5,
                                   messages=[{"role": "user", "content": "hi"}])
    assert len(server.requests) == 2  # neither retried


@settings(max_examples=150, deadline=timedelta(seconds=1))
@given(encoding=st.sampled_from(["", "identity", "gzip", "x-gzip", "deflate", "br", "GZIP "]),
       chunks=st.lists(st.binary(max_size=2048), max_size=8),
       compress=st.booleans())
def test_any_bytes_decode_or_fail_clearly(encoding: str, chunks: list[bytes],
                                          compress: bool) -> None:
    """Arbitrary (possibly corrupt) bodies give decoded bytes or ResponseTooLarge, nothing
    else, and every piece stays within the bound."""
    data = b"".join(chunks)
    wire = gzip(data) if compress and "gzip" in encoding.lower() else data
    events = view(encoding, 64 * 1024)
    try:
        out = [piece for i in range(0, len(wire), 512) for piece in events(wire[i:i + 512])]
    except ResponseTooLarge:
        return
    assert all(len(piece) <= 1024 * 1024 for piece in out)
    if compress and "gzip" in encoding.lower():
        assert b"".join(out) == data
