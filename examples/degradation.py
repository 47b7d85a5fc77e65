"""Survive a primary outage: fallback answers, the breaker stops wasting attempts, recovery.

The primary model answers its first 5 requests with 503 and is healthy after that; a cheaper
model stays healthy throughout. No network, no API key. Install and run (from a checkout):

    python -m pip install -e '.[openai]'
    python examples/degradation.py

What it shows: the first calls try the primary, fail over to the fallback and report
``degraded=True, reason=overloaded``; once 5 of them failed the circuit opens and calls go
straight to the fallback (``reason=circuit_open``) without touching the primary. After the
breaker's break (5 s, jittered up to 7.5 s) one probe goes to the primary, succeeds, the
circuit closes, and calls are served by the primary again (``degraded=False``).
"""

from __future__ import annotations

import time

from resilient_llm import Policy, outcome
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider

PRIMARY, FALLBACK = "gpt-4.1", "gpt-4.1-mini"
MESSAGES = [{"role": "user", "content": "Classify this ticket: 'refund not received'."}]


def ask(client: OpenAI, n: int) -> str:
    answer = client.chat.completions.create(model=PRIMARY, messages=MESSAGES)  # type: ignore[arg-type]
    report = outcome(answer)
    tried = " → ".join(f"{a.target}:{a.failure or 'ok'}" for a in report.attempts)
    print(f"call {n:>2}: served by {report.served_by:<13} degraded={report.degraded!s:<5} "
          f"reason={report.reason or '-':<13} attempts: {tried}")
    return report.served_by or ""


def main() -> None:
    provider = FaultProvider()
    provider.script(*[Fault.status(503)] * 5, model=PRIMARY)  # then the default: healthy
    policy = Policy(deadline=10, fallbacks={PRIMARY: [FALLBACK]})
    with provider.serve() as server, OpenAI(base_url=server.openai_base_url,
                                            api_key="sk-example", policy=policy) as client:
        print("-- the primary is down: fallback answers, then the circuit opens")
        for n in range(8):
            ask(client, n)
        print("-- waiting for the breaker's break to end (one call a second)")
        served_by_primary, n = 0, 8
        started = time.monotonic()
        while served_by_primary < 2 and time.monotonic() - started < 15:
            time.sleep(1.0)
            if ask(client, n) == PRIMARY:
                served_by_primary += 1
            n += 1
    primary_hits = sum(1 for r in provider.requests if r.model == PRIMARY)
    print(f"the primary saw {primary_hits} requests for {n} calls: the open circuit sent the "
          "others straight to the fallback")
    if served_by_primary:
        print("recovered: the probe succeeded, the circuit closed, the primary serves again")
    else:
        raise SystemExit("the primary did not recover within 15 s")


if __name__ == "__main__":
    main()
