"""200 calls at once against a provider that admits 20 in flight: paced, not amplified.

    python -m pip install -e '.[openai]'
    python examples/backpressure.py
"""

from __future__ import annotations

import asyncio
import time

from resilient_llm import Policy, pressure_snapshot
from resilient_llm.openai import AsyncOpenAI
from resilient_llm.testing import FaultProvider

MESSAGES = [{"role": "user", "content": "ping"}]


async def burst(base_url: str, calls: int) -> float:
    async with AsyncOpenAI(base_url=base_url, api_key="sk-example",
                           policy=Policy(deadline=30)) as client:
        start = time.monotonic()
        await asyncio.gather(*(
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
            for _ in range(calls)
        ))
        return time.monotonic() - start


def main() -> None:
    provider = FaultProvider(capacity=20, service_time=0.2)
    calls = 200
    with provider.serve() as server:
        took = asyncio.run(burst(server.openai_base_url, calls))
    attempts = len(provider.requests)
    print(f"{calls} calls, {attempts} attempts ({attempts / calls:.2f} per call), "
          f"{took:.2f} s (ideal {calls * 0.2 / 20:.1f} s)")
    for state in pressure_snapshot():
        print(f"target {state.target}: limit {state.concurrency_limit}, "
              f"throttles {state.throttles}, pressure {state.pressure}")


if __name__ == "__main__":
    main()
