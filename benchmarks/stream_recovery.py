"""Stream recovery: the official client vs the drop-in on streams that break mid-answer.

    python benchmarks/stream_recovery.py [--calls 20] [--quick] [--json PATH]

The loopback fault provider answers 60 words (60 content events). In every call the stream
breaks after 40 of them, once: the connection is cut, the stream stalls (silence, forever), or
it ends cleanly without a finish reason (truncated); the next request is answered normally.
The official client gets what users write to bound a call (``timeout=2, max_retries=2``); the
drop-in its defaults plus ``deadline=10`` and ``stream_idle_timeout=1``. Both run side by side
in one process, call for call, on OpenAI chat completions (the drop-in restarts and verifies)
and Anthropic messages (it continues by prefill).

Columns: ``full answer`` is the share of calls whose concatenated text is the whole answer;
``looks complete`` the share that ended without an error but with a partial answer (the worst
outcome: a truncation presented as success); p50/p99 the time per call; ``out tokens`` the
output tokens the provider generated per call, over every request (what is billed: a restart
generates the delivered words again, a prefill does not).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anthropic
import openai

from benchmarks._common import percentile, table, write_json
from resilient_llm import Policy
from resilient_llm.anthropic import Anthropic
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider

WORDS = [f"w{i}" for i in range(60)]
ANSWER = " ".join(WORDS)
MESSAGES: Any = [{"role": "user", "content": "count to sixty"}]
#: Opening events before the first content event: chat's role chunk; Anthropic's
#: message_start, content_block_start and ping.
OPENING = {"chat": 1, "messages": 3}
BROKEN_AT = 40


def fault(kind: str, api: str) -> Fault:
    after = OPENING[api] + BROKEN_AT
    if kind == "cut":
        return Fault.stream_cut(after_events=after, text=ANSWER)
    if kind == "stalled":
        return Fault.stream_stall(after_events=after, text=ANSWER)
    return Fault.missing_terminator(after_events=after, text=ANSWER)


def read_chat(client: Any, model: str) -> str:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def read_messages(client: Any, model: str) -> str:
    with client.messages.stream(model=model, max_tokens=200, messages=MESSAGES) as stream:
        return "".join(stream.text_stream)


def generated(provider: FaultProvider, since: int) -> int:
    """Output tokens the provider generated for the requests from index ``since`` on."""
    tokens = 0
    for request in provider.requests[since:]:
        if request.fault in ("stream_cut", "stream_stall", "missing_terminator"):
            tokens += BROKEN_AT  # sent before the break (a stall's client may hang up)
        elif request.status == 200:  # a whole answer, or what follows a prefill
            done = len((request.prefill or "").split())
            tokens += len(WORDS) - done
    return tokens


def one_call(provider: FaultProvider, read: Callable[[Any, str], str], client: Any,
             model: str, broken: Fault) -> dict[str, Any]:
    provider.script(broken, model=model)
    since = len(provider.requests)
    started = time.perf_counter()
    text, error = "", None
    try:
        text = read(client, model)
    except Exception as exc:  # what the caller got instead of an answer
        error = type(exc).__name__
    took = time.perf_counter() - started
    return {"seconds": took, "full": text == ANSWER and error is None,
            "looks_complete": error is None and text != ANSWER,
            "requests": len(provider.requests) - since,
            "tokens": generated(provider, since), "error": error}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    seconds = [r["seconds"] for r in results]
    return {
        "calls": n,
        "full_answer": sum(r["full"] for r in results) / n,
        "looks_complete": sum(r["looks_complete"] for r in results) / n,
        "p50_s": percentile(seconds, 50), "p99_s": percentile(seconds, 99),
        "requests_per_call": sum(r["requests"] for r in results) / n,
        "tokens_per_call": sum(r["tokens"] for r in results) / n,
        "errors": sorted({r["error"] for r in results if r["error"]}),
    }


def run(base: str, anthropic_base: str, provider: FaultProvider, calls: int
        ) -> dict[str, dict[str, Any]]:
    policy = Policy(deadline=10, stream_idle_timeout=1)
    clients: dict[tuple[str, str], Any] = {
        ("chat", "official"): openai.OpenAI(base_url=base, api_key="k", timeout=2,
                                            max_retries=2),
        ("chat", "resilient"): OpenAI(base_url=base, api_key="k", policy=policy),
        ("messages", "official"): anthropic.Anthropic(base_url=anthropic_base, api_key="k",
                                                      timeout=2, max_retries=2),
        ("messages", "resilient"): Anthropic(base_url=anthropic_base, api_key="k",
                                             policy=policy),
    }
    readers = {"chat": read_chat, "messages": read_messages}
    models = {"chat": "gpt-4.1", "messages": "claude-sonnet-4-6"}
    figures: dict[str, dict[str, Any]] = {}
    try:
        for kind in ("cut", "stalled", "truncated"):
            for api in ("chat", "messages"):
                samples: dict[str, list[dict[str, Any]]] = {"official": [], "resilient": []}
                for i in range(calls):  # call for call, alternating who goes first
                    order = ("official", "resilient") if i % 2 == 0 else ("resilient",
                                                                           "official")
                    for who in order:
                        samples[who].append(one_call(provider, readers[api],
                                                     clients[(api, who)], models[api],
                                                     fault(kind, api)))
                for who, results in samples.items():
                    figures[f"{kind} / {api} / {who}"] = summarise(results)
    finally:
        for client in clients.values():
            client.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per client and case (20)")
    parser.add_argument("--quick", action="store_true", help="4 calls per client and case")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    calls = 4 if args.quick else args.calls
    provider = FaultProvider(default=Fault.ok(text=ANSWER))
    with provider.serve() as server:
        figures = run(server.openai_base_url, server.anthropic_base_url, provider, calls)
    rows = [[name, f["full_answer"] * 100, f["looks_complete"] * 100, f["p50_s"], f["p99_s"],
             f["requests_per_call"], f["tokens_per_call"], ", ".join(f["errors"]) or "-"]
            for name, f in figures.items()]
    print(f"{calls} calls per client and case; each stream breaks once after {BROKEN_AT} of "
          f"{len(WORDS)} words")
    print(table(["case / API / client", "full answer %", "looks complete %", "p50 s", "p99 s",
                 "requests/call", "out tokens/call", "errors"], rows))
    write_json(args.json, {"benchmark": "stream_recovery", "calls": calls, "results": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
