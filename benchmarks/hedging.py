"""Hedged first token under a 5 % slow tail: p99 time to first token with and without hedging.

The provider answers 95 % of streams at once and 5 % after a 2 s first-token delay (seeded, the
same sequence for both runs). Calls are sequential through the resilient AsyncOpenAI, once with
``hedge=False``, then with ``hedge=True`` (delay = p90 of observed TTFT) at a 5 % and a 10 %
budget.

    python benchmarks/hedging.py [--calls 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from resilient_llm import Policy
from resilient_llm._hedge import clear as clear_hedges
from resilient_llm._pressure import registry
from resilient_llm.openai import AsyncOpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def script(provider: FaultProvider, calls: int, seed: int) -> None:
    rng = random.Random(seed)
    provider.reset()
    faults = [Fault.first_token_delay(2.0) if rng.random() < 0.05 else Fault.ok()
              for _ in range(calls * 2)]
    provider.script(*faults)


async def run(base_url: str, calls: int, hedge: bool, budget: float) -> list[float]:
    registry.clear()
    clear_hedges()
    policy = Policy(hedge=hedge, hedge_budget=budget, deadline=30)
    ttfts = []
    async with AsyncOpenAI(base_url=base_url, api_key="sk-bench", policy=policy) as client:
        for _ in range(calls):
            start = time.monotonic()
            stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                          stream=True)
            first = None
            async for _chunk in stream:
                if first is None:
                    first = time.monotonic() - start
            ttfts.append(first or 0.0)
    return ttfts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="60 calls")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    calls = 60 if args.quick else args.calls
    provider = FaultProvider()
    rows = []
    with provider.serve() as server:
        for hedge, budget in ((False, 0.05), (True, 0.05), (True, 0.10)):
            script(provider, calls, seed=args.seed)
            ttfts = asyncio.run(run(server.openai_base_url, calls, hedge, budget))
            label = f"on, budget {budget:.0%}" if hedge else "off"
            rows.append((label, ttfts, len(provider.requests) - calls))
    print(f"{calls} sequential streaming calls, 5 % slow tail (2 s first token)")
    print(f"{'hedging':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'extra':>6}")
    for label, ttfts, extra in rows:
        print(f"{label:<16} {statistics.median(ttfts) * 1000:8.0f} "
              f"{pct(ttfts, 0.95) * 1000:8.0f} {pct(ttfts, 0.99) * 1000:8.0f} "
              f"{max(ttfts) * 1000:8.0f} {extra:>6} ({100 * extra / calls:.1f} %)")


if __name__ == "__main__":
    main()
