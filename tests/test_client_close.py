"""Closing a client while its calls are in flight: nothing more is sent, as with the official
client. Before, every call whose attempt the close aborted was retried through the closed pool
(a broken stream was resumed), and the connections it opened there were never closed."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest

from resilient_llm import Policy
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]
POLICY = Policy(deadline=10)


def call(client: Any, flavor: str) -> Any:
    if flavor == "openai":
        return client.chat.completions.create(model="m", messages=MESSAGES)
    return client.messages.create(model="m", max_tokens=5, messages=MESSAGES)


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_closing_a_sync_client_sends_nothing_more(flavor: str) -> None:
    provider = FaultProvider(default=Fault.ok(delay=0.6))
    with provider.serve() as server:
        client: Any = OpenAI(base_url=server.openai_base_url, api_key="k", policy=POLICY) \
            if flavor == "openai" else Anthropic(base_url=server.anthropic_base_url,
                                                 api_key="k", policy=POLICY)
        outcomes: list[BaseException | None] = []

        def one() -> None:
            try:
                call(client, flavor)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(500):  # until the three first attempts are out (bounded)
            if len(provider.requests) >= 3:
                break
            time.sleep(0.01)
        client.close()
        for thread in threads:
            thread.join(10)
        sent = len(provider.requests)
    assert sent == 3  # the three first attempts, no retry after the close
    assert len(outcomes) == 3 and all(isinstance(o, Exception) for o in outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_closing_an_async_client_sends_nothing_more(flavor: str) -> None:
    provider = FaultProvider(default=Fault.ok(delay=0.6))

    async def main() -> tuple[int, list[Any]]:
        with provider.serve() as server:
            client: Any = AsyncOpenAI(base_url=server.openai_base_url, api_key="k",
                                      policy=POLICY) if flavor == "openai" else \
                AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k", policy=POLICY)
            outcomes: list[Any] = []

            async def one() -> None:
                try:
                    outcomes.append(await call(client, flavor))
                except Exception as exc:
                    outcomes.append(exc)

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(one)
                for _ in range(500):
                    if len(provider.requests) >= 3:
                        break
                    await anyio.sleep(0.01)
                await client.close()
            await anyio.sleep(0.2)
            return len(provider.requests), outcomes

    sent, outcomes = anyio.run(main)
    assert sent == 3
    assert len(outcomes) == 3 and all(isinstance(o, Exception) for o in outcomes)


def test_a_transport_reused_by_a_new_client_after_a_close_serves_it() -> None:
    """httpx2 lets a transport outlive a client that closed it (its pool opens new
    connections): a call of the next client is sent, and retried, as before."""
    import httpx2

    from resilient_llm import ResilientTransport
    from resilient_llm.testing import FakeClock

    answers = iter([503, 200, 200])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(next(answers), json={})

    transport = ResilientTransport(httpx2.MockTransport(handler), policy=POLICY,
                                   clock=FakeClock())  # (no real sleep for the backoff)
    with httpx2.Client(transport=transport) as first:
        assert first.get("http://llm.test/v1/models").status_code == 200  # 503, then retried
    with httpx2.Client(transport=transport) as second:
        assert second.get("http://llm.test/v1/models").status_code == 200
