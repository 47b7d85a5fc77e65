"""An enclosing anyio cancel scope's deadline ends the call as the scope ends it: a
``move_on_after`` block is left silently (``cancelled_caught``), a ``fail_after`` raises its
``TimeoutError``, as with the official clients. Before, the drop-ins raised
``DeadlineExceeded`` out of a ``move_on_after`` (a task group around it failed with it) when
less than an attempt's time was left, when a ``Retry-After`` passed the scope's deadline, or
when admission could not come in time. A ``deadline()`` of the caller's own that ends first
still raises ``DeadlineExceeded`` at once.

These take real (short) time: the cancellation is the event loop's.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from resilient_llm import DeadlineExceeded, Policy, deadline
from resilient_llm.anthropic import AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]
FLAVORS = ["openai", "anthropic"]
BACKENDS = ["asyncio", "trio"]


def client_for(flavor: str, provider: FaultProvider) -> Any:
    import httpx2

    http = httpx2.AsyncClient(transport=provider.transport())
    if flavor == "openai":
        return AsyncOpenAI(base_url="http://fault.test/v1", api_key="k", http_client=http,
                           policy=Policy(deadline=60))
    return AsyncAnthropic(base_url="http://fault.test", api_key="k", http_client=http,
                          policy=Policy(deadline=60))


async def call(client: Any, flavor: str) -> Any:
    if flavor == "openai":
        return await client.chat.completions.create(model="m", messages=MESSAGES)
    return await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flavor", FLAVORS)
def test_move_on_after_leaves_silently_when_no_attempt_fits(flavor: str, backend: str) -> None:
    provider = FaultProvider(default=Fault.ok(delay=0.05))

    async def main() -> bool:
        with anyio.move_on_after(0.03) as scope:
            await call(client_for(flavor, provider), flavor)
        return scope.cancelled_caught

    assert anyio.run(main, backend=backend) is True


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_retry_after_past_the_scope_is_cancelled_by_the_scope(flavor: str,
                                                                 backend: str) -> None:
    """A ``Retry-After`` longer than the scope leaves: the scope ends the call at its
    deadline, without an error (the official client sleeps into the same cancellation)."""
    provider = FaultProvider()
    provider.script(Fault.status(429, headers={"retry-after": "3"}), Fault.ok())

    async def main() -> tuple[bool, float]:
        start = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await call(client_for(flavor, provider), flavor)
        return scope.cancelled_caught, time.monotonic() - start

    caught, took = anyio.run(main, backend=backend)
    assert caught and 0.25 <= took < 1.5


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_task_group_under_move_on_after_is_not_failed(flavor: str) -> None:
    provider = FaultProvider()
    provider.default = Fault.status(429, headers={"retry-after": "3"})

    async def main() -> tuple[bool, int]:
        client = client_for(flavor, provider)
        # The process's first call imports and builds what later ones reuse: outside the
        # scope, so that a loaded machine does not spend the scope's time on it.
        provider.script(Fault.ok())
        await call(client, flavor)
        with anyio.move_on_after(0.3) as scope:
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(call, client, flavor)
        return scope.cancelled_caught, len(provider.requests) - 1

    caught, sent = anyio.run(main)
    assert caught and sent == 5


@pytest.mark.parametrize("flavor", FLAVORS)
def test_fail_after_raises_its_timeout_error_at_its_deadline(flavor: str) -> None:
    provider = FaultProvider()
    provider.script(Fault.status(503, headers={"retry-after": "3"}), Fault.ok())

    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(TimeoutError), anyio.fail_after(0.3):
            await call(client_for(flavor, provider), flavor)
        return time.monotonic() - start

    assert 0.25 <= anyio.run(main) < 1.5


@pytest.mark.parametrize("flavor", FLAVORS)
def test_an_own_deadline_that_ends_first_still_fails_fast(flavor: str) -> None:
    """``deadline(0.5)`` inside ``move_on_after(5)``: the call's own deadline binds, and a
    ``Retry-After`` past it fails at once with ``DeadlineExceeded``, as before."""
    provider = FaultProvider()
    provider.script(Fault.status(429, headers={"retry-after": "3"}), Fault.ok())

    async def main() -> float:
        start = time.monotonic()
        with anyio.move_on_after(5), pytest.raises(DeadlineExceeded):
            async with deadline(0.5):
                await call(client_for(flavor, provider), flavor)
        return time.monotonic() - start

    assert anyio.run(main) < 0.4


def test_a_stream_read_past_the_scope_is_cancelled_by_the_scope() -> None:
    provider = FaultProvider(default=Fault.stream_stall(after_events=3, seconds=5.0))

    async def main() -> tuple[bool, int]:
        client = client_for("openai", provider)
        seen = 0
        with anyio.move_on_after(0.5) as scope:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True)
            async for _ in stream:
                seen += 1
        return scope.cancelled_caught, seen

    caught, seen = anyio.run(main)
    assert caught and seen >= 1
