"""Survive a primary outage: fallback answers, the breaker stops wasting attempts, recovery.

The primary model is down for the first 6 requests; a cheaper model stays healthy.
    python examples/degradation.py
"""

from __future__ import annotations

from resilient_llm import Policy, outcome
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES = [{"role": "user", "content": "Classify this ticket: 'refund not received'."}]


def main() -> None:
    provider = FaultProvider()
    provider.script(*[Fault.status(503)] * 6, model="gpt-4.1")
    policy = Policy(deadline=10, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with provider.serve() as server, OpenAI(base_url=server.openai_base_url,
                                            api_key="sk-example", policy=policy) as client:
        for n in range(8):
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
            report = outcome(answer)
            tried = " → ".join(f"{a.target}:{a.failure or 'ok'}" for a in report.attempts)
            print(f"request {n}: served by {report.served_by:<13} degraded={report.degraded!s:<5}"
                  f" reason={report.reason or '-':<13} attempts: {tried}")
    primary_hits = sum(1 for r in provider.requests if r.model == "gpt-4.1")
    print(f"the primary saw {primary_hits} requests for 8 calls: the open circuit sent the "
          "rest straight to the fallback")


if __name__ == "__main__":
    main()
