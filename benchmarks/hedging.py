"""Hedged first token under a 5 % slow tail: p99 time to first token with and without hedging.

The provider answers each request at once, or with probability 5 % after a 2 s first-token delay
(independent per request, hedges included: a hedge on the same slow tail is itself slow once in
twenty). 1 000 streaming calls run through the resilient AsyncOpenAI in 8 lanes of sequential
calls, once with ``hedge=False`` and once with ``hedge=True`` at the default 5 % budget; each seed
is a different draw of the tail. "extra" is requests beyond one per call; "slow" is how many
requests the provider made slow.

    python benchmarks/hedging.py [--calls 1000] [--lanes 8] [--seeds 1,2,3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from resilient_llm import Policy
from resilient_llm.engine.hedge import clear as clear_hedges
from resilient_llm.engine.registry import registry
from resilient_llm.openai import AsyncOpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]
SLOW_SHARE = 0.05
SLOW_SECONDS = 2.0


def script(provider: FaultProvider, requests: int, seed: int) -> list[bool]:
    rng = random.Random(seed)
    provider.reset()
    slow = [rng.random() < SLOW_SHARE for _ in range(requests)]
    provider.script(*(Fault.first_token_delay(SLOW_SECONDS) if s else Fault.ok() for s in slow))
    return slow


async def run(base_url: str, calls: int, lanes: int, hedge: bool) -> list[float]:
    registry.clear()
    clear_hedges()
    policy = Policy(hedge=hedge, deadline=30)
    ttfts: list[float] = []
    async with AsyncOpenAI(base_url=base_url, api_key="sk-bench", policy=policy) as client:

        async def lane(count: int) -> None:
            for _ in range(count):
                start = time.monotonic()
                stream = await client.chat.completions.create(
                    model="gpt-4.1", messages=MESSAGES, stream=True)
                first = None
                async for _chunk in stream:
                    if first is None:
                        first = time.monotonic() - start
                ttfts.append(first or 0.0)

        await asyncio.gather(*(lane(calls // lanes + (i < calls % lanes)) for i in range(lanes)))
    return ttfts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--quick", action="store_true", help="200 calls, one seed")
    args = parser.parse_args()
    calls = 200 if args.quick else args.calls
    seeds = [1] if args.quick else [int(s) for s in args.seeds.split(",")]
    provider = FaultProvider()
    print(f"{calls} streaming calls in {args.lanes} lanes, each request slow (2 s first token) "
          f"with probability {SLOW_SHARE:.0%}")
    print(f"{'seed':>4} {'hedging':<8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'slow':>5} {'extra':>12}")
    with provider.serve() as server:
        for seed in seeds:
            for hedge in (False, True):
                slow = script(provider, calls * 2, seed)
                ttfts = asyncio.run(run(server.openai_base_url, calls, args.lanes, hedge))
                sent = len(provider.requests)
                extra = sent - calls
                print(f"{seed:>4} {'on' if hedge else 'off':<8} "
                      f"{statistics.median(ttfts) * 1000:7.0f} {pct(ttfts, 0.95) * 1000:7.0f} "
                      f"{pct(ttfts, 0.99) * 1000:7.0f} {max(ttfts) * 1000:7.0f} "
                      f"{sum(slow[:sent]):>5} {extra:>5} ({100 * extra / calls:.1f} %)")


if __name__ == "__main__":
    main()
