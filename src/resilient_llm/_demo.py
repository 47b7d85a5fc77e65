"""``python -m resilient_llm demo``: the official client and the resilient one, side by side.

A local fault-injecting provider plays a brownout (slow answers, 429 bursts with Retry-After,
503s, hung requests, cut streams) on the primary model; a cheaper fallback model stays
healthy. The same workload runs through ``openai.OpenAI(timeout=D, max_retries=2)`` (what
users write when they mean "give up after D seconds") and through
``resilient_llm.openai.OpenAI`` with ``RESILIENT_LLM_DEADLINE=D`` and one fallback. The table
shows what each user would have seen. No API key, no network: everything is on 127.0.0.1.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

PRIMARY = "gpt-4.1"
FALLBACK = "gpt-4.1-mini"
MESSAGES = [{"role": "user", "content": "Summarise the incident report in one line."}]


@dataclass(frozen=True, slots=True)
class CallResult:
    ok: bool
    seconds: float
    error: str | None
    degraded: bool


@dataclass(frozen=True, slots=True)
class Summary:
    name: str
    calls: int
    succeeded: int
    p50: float
    p99: float
    worst_overshoot: float
    attempts_per_call: float
    degraded: int
    errors: dict[str, int]


def brownout(seed: int, count: int) -> list[Any]:
    """The primary model's misbehaviour, one fault per request, the same for both clients."""
    from .testing import Fault

    rng = random.Random(seed)
    faults: list[Any] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.50:
            faults.append(Fault.ok(delay=0.05))
        elif roll < 0.64:
            faults.append(Fault.status(429, headers={"retry-after": "1"}))
        elif roll < 0.76:
            faults.append(Fault.status(503))
        elif roll < 0.86:
            faults.append(Fault.ok(delay=6.0))  # slower than anyone's deadline
        elif roll < 0.92:
            faults.append(Fault.stream_cut(after_events=3))
        else:
            faults.append(Fault.hang())
    return faults


def _run(
    name: str,
    make_call: Callable[[int], Any],
    *,
    calls: int,
    workers: int,
    deadline: float,
    provider: Any,
) -> Summary:
    requests_before = len(provider.requests)

    def one(index: int) -> CallResult:
        start = time.monotonic()
        try:
            degraded = make_call(index)
        except Exception as exc:
            return CallResult(False, time.monotonic() - start, type(exc).__name__, False)
        return CallResult(True, time.monotonic() - start, None, bool(degraded))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(calls)))
    latencies = sorted(r.seconds for r in results)
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return Summary(
        name=name,
        calls=calls,
        succeeded=sum(r.ok for r in results),
        p50=statistics.median(latencies),
        p99=latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        worst_overshoot=max(0.0, latencies[-1] - deadline),
        attempts_per_call=(len(provider.requests) - requests_before) / calls,
        degraded=sum(r.degraded for r in results),
        errors=errors,
    )


def _official_call(client: Any) -> Callable[[int], Any]:
    def call(index: int) -> bool:
        if index % 4 == 3:
            stream = client.chat.completions.create(model=PRIMARY, messages=MESSAGES, stream=True)
            for _ in stream:
                pass
            return False
        client.chat.completions.create(model=PRIMARY, messages=MESSAGES)
        return False

    return call


def _resilient_call(client: Any) -> Callable[[int], Any]:
    from .events.outcome import outcome

    def call(index: int) -> bool:
        if index % 4 == 3:
            stream = client.chat.completions.create(model=PRIMARY, messages=MESSAGES, stream=True)
            for _ in stream:
                pass
            return outcome(stream).degraded
        answer = client.chat.completions.create(model=PRIMARY, messages=MESSAGES)
        return outcome(answer).degraded

    return call


def _table(rows: list[Summary], deadline: float) -> str:
    header = ("client", "success", "p50 s", "p99 s", f"worst overshoot of {deadline:g} s",
              "attempts/call", "served by fallback")
    lines = [header]
    lines.extend(
        (
            row.name,
            f"{row.succeeded}/{row.calls} ({100 * row.succeeded / row.calls:.0f} %)",
            f"{row.p50:.2f}",
            f"{row.p99:.2f}",
            f"{row.worst_overshoot:.2f} s",
            f"{row.attempts_per_call:.2f}",
            str(row.degraded),
        )
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_demo(*, calls: int = 40, deadline: float = 3.0, workers: int = 10, seed: int = 7) -> int:
    """Run the side-by-side demo and print the table; returns a process exit code."""
    import openai

    from ._policy import Policy
    from .openai import OpenAI as ResilientOpenAI
    from .testing import Fault, FaultProvider

    if calls < 1 or deadline <= 0:
        print("demo: --calls must be ≥ 1 and --deadline > 0", file=sys.stderr)
        return 2
    provider = FaultProvider()
    print(f"resilient-llm demo: {calls} calls per client, {workers} at a time, a "
          f"{deadline:g} s deadline, against a local provider in a brownout\n"
          "(primary model: 50 % fine, then 429 bursts, 503s, 6 s answers, cut streams and "
          "hung requests;\n fallback model: healthy). Nothing leaves 127.0.0.1.\n")
    rows = []
    with provider.serve() as server:
        provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
        provider.script(*brownout(seed, calls * 6), model=PRIMARY)
        started = time.monotonic()
        with openai.OpenAI(base_url=server.openai_base_url, api_key="sk-demo",
                           timeout=deadline, max_retries=2) as official:
            rows.append(_run(f"openai.OpenAI(timeout={deadline:g})", _official_call(official),
                             calls=calls, workers=workers, deadline=deadline,
                             provider=provider))
        print(f"  official client done in {time.monotonic() - started:.1f} s")

        provider.reset()
        provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
        provider.script(*brownout(seed, calls * 6), model=PRIMARY)
        policy = Policy(deadline=deadline, fallbacks={PRIMARY: [FALLBACK]})
        started = time.monotonic()
        with ResilientOpenAI(base_url=server.openai_base_url, api_key="sk-demo",
                             policy=policy) as resilient:
            rows.append(_run("resilient_llm.openai.OpenAI", _resilient_call(resilient),
                             calls=calls, workers=workers, deadline=deadline,
                             provider=provider))
        print(f"  resilient client done in {time.monotonic() - started:.1f} s\n")
    print(_table(rows, deadline))
    for row in rows:
        if row.errors:
            shown = ", ".join(f"{name} ×{count}" for name, count in sorted(row.errors.items()))
            print(f"\n{row.name} errors: {shown}")
    print("\nThe official client's timeout applies per attempt, so retries stack past the "
          "deadline;\nresilient-llm holds one deadline across attempts, backoff and streams, "
          "and degrades\nto the fallback model instead of failing. outcome(response) tells "
          "which model served.")
    return 0
