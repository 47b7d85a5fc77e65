"""Hedged first token: a late first output races a second attempt, within a budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from resilient_llm import Policy, outcome
from resilient_llm._hedge import HedgeStats
from resilient_llm.openai import AsyncOpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def test_delay_is_twice_the_p90_once_enough_is_known() -> None:
    stats = HedgeStats()
    assert stats.delay(None) is None
    for ms in range(1, 101):
        stats.record(ms / 1000)
    assert stats.delay(None) == pytest.approx(0.182)  # twice the p90
    assert stats.delay(0.5) == 0.5


def test_budget_allows_a_share_of_calls() -> None:
    stats = HedgeStats()
    spent = 0
    for _ in range(200):
        stats.deposit(0.05)
        spent += stats.try_spend()
    assert spent == 12  # a full budget, then 5 % of 200 (what the cap of 3 drops is lost)


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


@pytest.mark.anyio
async def test_late_first_token_is_hedged_and_the_loser_closed(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.script(Fault.first_token_delay(5.0), Fault.ok(text="fast answer"))
    policy = Policy(hedge=True, hedge_delay=0.3, hedge_budget=0.5, deadline=10)
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test",
                           policy=policy) as client:
        start = time.monotonic()
        stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        took = time.monotonic() - start
    assert text == "fast answer"
    assert took < 2.0
    report = outcome(stream)
    assert report.reason == "hedge" and len(provider.requests) == 2
    provider.wait_for(lambda log: log[0].client_disconnected, timeout=2.0)
    assert provider.requests[0].client_disconnected  # the slow attempt was cut, not left running


@pytest.mark.anyio
async def test_hedges_stay_within_the_budget(provider: FaultProvider, server: FaultServer) -> None:
    provider.default = Fault.first_token_delay(0.25)
    policy = Policy(hedge=True, hedge_delay=0.05, hedge_budget=0.1, deadline=10)
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test",
                           policy=policy) as client:
        for _ in range(20):
            stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                          stream=True)
            async for _chunk in stream:
                pass
    extra = len(provider.requests) - 20
    assert 1 <= extra <= 5  # a full budget of 3, then 10 % of 20 calls
