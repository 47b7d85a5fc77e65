"""Hedged first token: a late first output races a second attempt, within a budget."""

from __future__ import annotations

import time
from typing import Any

import pytest

from resilient_llm import Policy, outcome
from resilient_llm.engine.hedge import HedgeStats
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


def test_with_few_samples_the_delay_is_twice_the_slowest() -> None:
    stats = HedgeStats()
    for ms in (30, 10, 20, 40):
        stats.record(ms / 1000)
    assert stats.delay(None) is None  # four samples: too little to hedge on
    stats.record(0.025)
    assert stats.delay(None) == pytest.approx(0.080)  # five: the p90 index is the maximum


def test_budget_allows_a_share_of_calls() -> None:
    stats = HedgeStats()
    spent = 0
    for _ in range(200):
        stats.deposit(0.05)
        spent += stats.try_spend()
    # A full budget of 10 (the first call's deposit is lost at the cap), then 5 % of 199 calls.
    assert spent == 19
    assert stats.hedges == 19


def test_a_refunded_hedge_is_not_counted() -> None:
    stats = HedgeStats()
    assert stats.try_spend()
    stats.refund()
    assert stats.hedges == 0 and stats.tokens == 10.0


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
    # every attempt sent is in the outcome, the one cancelled too
    assert sorted((a.number, a.failure) for a in report.attempts) == [(1, "hedge_lost"),
                                                                      (2, None)]
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
    # Every call is late, so each would race MAX_RACERS attempts: the budget (10 to start,
    # then 10 % of the 19 calls after the first) is what stops them.
    assert extra == 11


@pytest.mark.anyio
async def test_a_slow_hedge_is_raced_by_a_third_attempt(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.script(Fault.first_token_delay(5.0), Fault.first_token_delay(5.0),
                    Fault.ok(text="third"))
    policy = Policy(hedge=True, hedge_delay=0.2, deadline=10)
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test",
                           policy=policy) as client:
        start = time.monotonic()
        stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        took = time.monotonic() - start
    assert text == "third" and took < 2.0
    assert len(provider.requests) == 3  # MAX_RACERS: never a fourth
    provider.wait_for(lambda log: all(r.client_disconnected for r in log[:2]), timeout=2.0)


@pytest.mark.anyio
async def test_no_more_than_max_racers_however_late(
    provider: FaultProvider, server: FaultServer
) -> None:
    provider.default = Fault.first_token_delay(0.8)
    policy = Policy(hedge=True, hedge_delay=0.1, deadline=10)
    async with AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test",
                           policy=policy) as client:
        stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                      stream=True)
        async for _chunk in stream:
            pass
    assert len(provider.requests) == 3
