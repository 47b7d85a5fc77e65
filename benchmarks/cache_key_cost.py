"""Cost of prompt-cache key computation on a ~20k-token request, next to a client call.

Run: ``python benchmarks/cache_key_cost.py [--runs 2000]``

Times (median µs per call, one process, same bodies):

* ``prompt_cache_key`` and ``prepare_openai_body`` when the system prompt is the same string
  object on every call (a module constant: the usual case, long texts are hashed once), and
  when it is a new string each call (an f-string template: hashed every call);
* ``lint_prompt`` and ``conversation_signature``, which the drop-ins also run per call;
* for scale, one official ``openai`` client call on the same body against an in-memory
  transport (no network): the client-side cost every call pays. The drop-in client is that
  plus resilience, so the ratio printed is an upper bound on the key's share of its overhead.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from resilient_llm import Policy
from resilient_llm.caching.health import conversation_signature
from resilient_llm.caching.keys import prepare_openai_body, prompt_cache_key
from resilient_llm.caching.lint import lint_prompt

WORDS = " ".join([
    "the customer order refund policy shipping answer politely warehouse invoice",
    "carrier tracking return label damaged replacement warranty account billing",
    "subscription cancel upgrade downgrade support escalate manager discount voucher",
    "product size colour stock delivery address postcode country region tax receipt",
]).split(" ")


def make_text(chars: int, seed: int) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    size = i = 0
    while size < chars:
        word = rnd.choice(WORDS) if i % 17 else f"rule {i // 17}."
        out.append(word)
        size += len(word) + 1
        i += 1
    return " ".join(out)


def make_body(system: str) -> dict[str, Any]:
    tools = [
        {"type": "function", "function": {
            "name": f"tool_{i}", "description": "Look up a record in the back office. " * 4,
            "parameters": {"type": "object", "required": ["id"], "properties": {
                f"field_{j}": {"type": "string", "description": "A field of the record."}
                for j in range(8)}}}}
        for i in range(8)
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for turn in range(6):
        messages += [{"role": "user", "content": f"Question {turn} about my order."},
                     {"role": "assistant", "content": f"Answer {turn}: it ships tomorrow."}]
    messages.append({"role": "user", "content": "And the refund?"})
    return {"model": "gpt-4.1", "messages": messages, "tools": tools, "temperature": 0}


def median_us(fn: Callable[[], object], runs: int) -> float:
    for _ in range(min(50, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


class Fresh:
    """A body whose system prompt is a new string each call, like an f-string template.

    Building it costs a string copy; ``baseline_us`` measures that so it can be subtracted.
    """

    def __init__(self, system: str) -> None:
        self.body = make_body(system)
        self.system = system
        self.count = 0

    def __call__(self) -> dict[str, Any]:
        self.count += 1
        self.body["messages"][0] = {"role": "system",
                                    "content": f"{self.system} (variant {self.count})"}
        return self.body


def sdk_client(body: dict[str, Any]) -> Callable[[], object] | None:
    """One official openai client call on ``body`` against an in-memory transport."""
    try:
        import httpx2
        import openai
    except ImportError:
        return None
    answer = json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 20000, "completion_tokens": 1, "total_tokens": 20001,
                  "prompt_tokens_details": {"cached_tokens": 19968}},
    }).encode()
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=answer,
                                        headers={"content-type": "application/json"}))
    client = openai.OpenAI(api_key="sk-bench", base_url="http://bench.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=transport))
    return lambda: client.chat.completions.create(**body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    runs: int = args.runs

    system = make_text(80_000, seed=1)  # ≈ 20 000 tokens at ~4 characters per token
    body = make_body(system)
    chars = len(json.dumps(body))
    print(f"request body: {chars} characters of JSON, ≈ {chars // 4} tokens "
          f"(system prompt {len(system)} characters)")
    policy = Policy(cache_namespace="acme", cache_secret="bench-secret-0123456789")
    fresh = Fresh(system)
    base = median_us(fresh, runs)  # the string copy alone, subtracted below

    def minus_base(us: float) -> float:
        return max(0.0, us - base)

    rows = [
        ("prompt_cache_key (same prompt string)",
         median_us(lambda: prompt_cache_key(body, namespace="acme"), runs)),
        ("prepare_openai_body (same prompt string)",
         median_us(lambda: prepare_openai_body(body, policy), runs)),
        ("prompt_cache_key (new prompt string each call)",
         minus_base(median_us(lambda: prompt_cache_key(fresh(), namespace="acme"), runs))),
        ("prepare_openai_body (new prompt string each call)",
         minus_base(median_us(lambda: prepare_openai_body(fresh(), policy), runs))),
        ("lint_prompt (same prompt string)", median_us(lambda: lint_prompt(body), runs)),
        ("lint_prompt (new prompt string each call)",
         minus_base(median_us(lambda: lint_prompt(fresh()), max(100, runs // 10)))),
        ("conversation_signature (same prompt string)",
         median_us(lambda: conversation_signature(body), runs)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:9.1f} µs/call")

    call = sdk_client(body)
    if call is None:
        print("openai not installed: no client reference")
        return
    # Ratios are taken round by round, key and client timed side by side, so a busy machine
    # moves both; the median over rounds is reported.
    same, new, sdk = [], [], []
    for _ in range(15):
        same.append(median_us(lambda: prepare_openai_body(body, policy), runs // 10))
        new.append(minus_base(median_us(lambda: prepare_openai_body(fresh(), policy),
                                        runs // 10)))
        sdk.append(median_us(call, 20))
    client_us = statistics.median(sdk)
    print(f"{'official openai client call (in-memory transport)':<{width}}  "
          f"{client_us:9.1f} µs/call")
    print("prepare_openai_body (key included) / client call, median of 15 rounds: "
          f"{statistics.median(100 * a / c for a, c in zip(same, sdk, strict=True)):.1f} % "
          "same prompt string, "
          f"{statistics.median(100 * a / c for a, c in zip(new, sdk, strict=True)):.1f} % "
          "new prompt string each call")


if __name__ == "__main__":
    main()
