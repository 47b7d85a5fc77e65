"""What a finished call leaves behind: nothing for the garbage collector.

A call whose objects form a reference cycle is freed only when the collector runs: its
response, request, buffered chunks and record stay in memory until then, and every survivor
is promoted towards the full collections that pause a large process. The official clients
leave no cycle; neither may the drop-ins. Each check runs with the collector off, so a call
that relies on it shows up as garbage found afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from resilient_llm import Policy
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.engine.call import Call, current_call
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
CHAT: Any = {"model": "gpt-4.1", "messages": MESSAGES}
MESSAGE: Any = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": MESSAGES}


@pytest.fixture
def collector_off() -> Iterator[Callable[[], list[str]]]:
    """Turns the collector off; the fixture's value collects and names what it found that the
    clients made (this package's objects and httpx2's, not the loopback server's)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def found() -> list[str]:
        gc.collect()
        garbage = list(gc.garbage)
        gc.garbage.clear()
        names = []
        for obj in garbage:
            module = getattr(type(obj), "__module__", "") or ""
            if (module.startswith("resilient_llm.") and not module.startswith(
                    "resilient_llm.testing")) or module.startswith("httpx2"):
                names.append(f"{module}.{type(obj).__qualname__}")
        return sorted(names)

    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    """Closes the clients a test opens when it ends (after its checks: they stay reachable)."""
    with contextlib.ExitStack() as stack:
        yield stack


def _sync_calls(server: FaultServer,
                closing: contextlib.ExitStack) -> dict[str, Callable[[], Any]]:
    chat = closing.enter_context(OpenAI(base_url=server.openai_base_url, api_key="k"))
    messages = closing.enter_context(
        Anthropic(base_url=server.anthropic_base_url, api_key="k"))

    def chat_stream() -> None:
        for _ in chat.chat.completions.create(**CHAT, stream=True):
            pass

    def chat_abandoned() -> None:
        for _ in chat.chat.completions.create(**CHAT, stream=True):
            break

    def message_stream() -> None:
        with messages.messages.stream(**MESSAGE) as stream:
            for _ in stream.text_stream:
                pass

    return {
        "chat": lambda: chat.chat.completions.create(**CHAT),
        "chat stream": chat_stream,
        "chat stream abandoned": chat_abandoned,
        "message": lambda: messages.messages.create(**MESSAGE),
        "message stream": message_stream,
    }


#: What the call meets before its answer. A retried call keeps its attempts' errors as causes,
#: and an error's traceback holds the frames of its attempt (the call's state in their
#: locals): the call lets go of them once served, and of a cause as soon as another
#: replaces it. A stream resumed after a break refers to its continuation request and back
#: until the stream ends.
BEFORE: dict[str, Callable[[], tuple[Fault, ...]]] = {
    "ok": lambda: (),
    "503": lambda: (Fault.status(503),),
    "reset": lambda: (Fault.reset(),),
    "two resets": lambda: (Fault.reset(), Fault.reset()),
    "stream cut": lambda: (Fault.stream_cut(after_events=3),),
}


@pytest.mark.parametrize(("kind", "first"), [
    (kind, first)
    for kind in ("chat", "chat stream", "chat stream abandoned", "message", "message stream")
    for first in ("ok", "503", "reset", "two resets")
] + [("chat stream", "stream cut"), ("message stream", "stream cut")])
def test_a_sync_call_leaves_no_reference_cycle(
    server: FaultServer, provider: FaultProvider, collector_off: Callable[[], list[str]],
    closing: contextlib.ExitStack,
    kind: str, first: str,
) -> None:
    call = _sync_calls(server, closing)[kind]
    call()  # the first call of a client builds what every later one shares
    collector_off()  # (and what the warm-up left is not this test's business)
    before = BEFORE[first]()
    provider.script(*before, Fault.ok())
    call()
    assert collector_off() == []
    assert len(provider.requests) == 2 + len(before)


@pytest.mark.parametrize(("kind", "first"), [
    (kind, first) for kind in ("chat", "chat stream", "message", "message stream")
    for first in ("503", "reset", "two resets")
] + [("chat stream", "stream cut"), ("message stream", "stream cut")])
def test_an_async_call_leaves_no_reference_cycle(
    server: FaultServer, provider: FaultProvider, collector_off: Callable[[], list[str]],
    kind: str, first: str,
) -> None:
    async def run() -> list[str]:
        chat = AsyncOpenAI(base_url=server.openai_base_url, api_key="k")
        messages = AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k")

        async def once() -> None:
            if kind == "chat":
                await chat.chat.completions.create(**CHAT)
            elif kind == "chat stream":
                async for _ in await chat.chat.completions.create(**CHAT, stream=True):
                    pass
            elif kind == "message":
                await messages.messages.create(**MESSAGE)
            else:
                async with messages.messages.stream(**MESSAGE) as stream:
                    async for _ in stream.text_stream:
                        pass

        await once()
        collector_off()
        provider.script(*BEFORE[first](), Fault.ok())
        await once()
        found = collector_off()
        await chat.close()
        await messages.close()
        return found

    assert asyncio.run(run()) == []


FAILURES: dict[str, tuple[Callable[[], tuple[Fault, ...]], Policy]] = {
    # the SDK's error for a status nothing retries
    "400": (lambda: (Fault.status(400),), Policy(deadline=5)),
    # retried until the plan gives up (its Raise action ends the driver's loop)
    "503 until the deadline": (lambda: (Fault.status(503, headers={"retry-after": "0.2"}),) * 5,
                               Policy(deadline=0.3)),
    # the deadline ends an attempt that hangs
    "no answer in time": (lambda: (Fault.ok(delay=2),), Policy(deadline=0.2)),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_call_leaves_no_reference_cycle(
    server: FaultServer, provider: FaultProvider, collector_off: Callable[[], list[str]],
    closing: contextlib.ExitStack,
    failure: str, stream: bool,
) -> None:
    """The error's traceback holds the frames it passed through: none of them may hold the
    error (the official clients' frames do not)."""
    faults, policy = FAILURES[failure]
    client = closing.enter_context(
        OpenAI(base_url=server.openai_base_url, api_key="k", policy=policy))

    def call() -> None:
        if stream:
            for _ in client.chat.completions.create(**CHAT, stream=True):
                pass
        else:
            client.chat.completions.create(**CHAT)

    call()
    collector_off()
    provider.script(*faults())
    try:
        call()
    except Exception as error:  # (pytest.raises keeps the error's frames in a cycle of its own)
        name = type(error).__name__
    else:
        pytest.fail("the call did not fail")
    left = collector_off()
    assert left == [], f"{name}: {left}"


def test_the_official_clients_leave_none_either(
    server: FaultServer, collector_off: Callable[[], list[str]],
    closing: contextlib.ExitStack,
) -> None:
    """The measure the drop-ins are held to (and a check that the fixture sees cycles at all:
    a deliberate one is found)."""
    chat = closing.enter_context(openai.OpenAI(base_url=server.openai_base_url, api_key="k"))
    messages = closing.enter_context(
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k"))
    for _ in range(2):
        for _ in chat.chat.completions.create(**CHAT, stream=True):
            pass
        messages.messages.create(**MESSAGE)
        collector_off()
    for _ in chat.chat.completions.create(**CHAT, stream=True):
        pass
    messages.messages.create(**MESSAGE)
    assert collector_off() == []

    response = httpx2.Response(200)
    response.extensions = {"self": response}  # a cycle through an httpx2 object
    del response
    assert "httpx2.Response" in collector_off()


def test_a_context_copied_during_a_call_does_not_keep_the_call() -> None:
    """asyncio keeps a cancelled timer, and the context copied with it, until the loop purges
    it; tasks keep theirs. Such a context sees no call once the call is over, and holds none
    of its objects."""
    kept: list[contextvars.Context] = []
    calls: list[Call] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        running = current_call()
        assert running is not None
        calls.append(running)
        kept.append(contextvars.copy_context())
        return httpx2.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello"}}],
        })

    with OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k",
                http_client=httpx2.Client(transport=httpx2.MockTransport(handler))) as client:
        client.chat.completions.create(**CHAT)
    assert len(kept) == 1
    assert kept[0].run(current_call) is None
    held = list(kept[0].values())
    held += [part for value in held for part in gc.get_referents(value)]
    assert not any(part is calls[0] for part in held)
    assert current_call() is None
