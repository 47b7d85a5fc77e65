"""What a call leaves for the garbage collector: the official clients vs the drop-ins.

    python benchmarks/memory.py [--quick] [--calls N] [--heap N] [--json PATH]

In one process, side by side, against an in-process transport (httpx2's ``MockTransport``: no
sockets, so the collector's work is the clients'). Two measures per client and call shape:

- **cyclic garbage per call**: with the collector off (``gc.DEBUG_SAVEALL``), the objects one
  call leaves that only the collector can free (reference cycles), averaged over 20 calls;
- **collections and time in the collector** over ``--calls`` calls (5 000) in a process that
  also holds ``--heap`` long-lived objects (a million: an application's own data), read from
  ``gc.get_stats()`` and ``gc.callbacks``; and the wall µs per call.

Shapes: a chat completion, a streamed one read to its end, an Anthropic message, async chat
completions 16 at a time (``--calls`` / 16 rounds), and a chat completion retried once after
a connection reset (``--calls`` / 25: each backs off before its retry; the shape the drop-ins
still leave cycles in, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _var in [v for v in os.environ if v.startswith("RESILIENT_LLM_")]:
    del os.environ[_var]  # the default policy, whatever the shell exports

import anthropic  # noqa: E402
import httpx2  # noqa: E402
import openai  # noqa: E402

import resilient_llm.anthropic as rl_anthropic  # noqa: E402
import resilient_llm.openai as rl_openai  # noqa: E402
from benchmarks._common import load_note, table, write_json  # noqa: E402

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
CHAT: Any = {"model": "gpt-4.1", "messages": MESSAGES}
MESSAGE: Any = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": MESSAGES}

_COMPLETION = json.dumps({
    "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}).encode()
_MESSAGE = json.dumps({
    "id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1},
}).encode()
_CHUNKS = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
           for word in ["Hel", "lo", " the", "re", " fri", "end", "!"]]
_CHUNKS.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
_SSE = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in _CHUNKS) \
    + b"data: [DONE]\n\n"


class _Provider:
    """Answers every request; with ``resets``, the first of every two is a connection reset."""

    def __init__(self) -> None:
        self.resets = False
        self._seen = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self._seen += 1
        if self.resets and self._seen % 2 == 1:
            raise httpx2.ReadError("connection reset by peer", request=request)
        if request.url.path.endswith("/messages"):
            return httpx2.Response(200, headers={"content-type": "application/json"},
                                   content=_MESSAGE)
        if b'"stream":true' in request.content or b'"stream": true' in request.content:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   content=_SSE)
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=_COMPLETION)


Call = Callable[[], Any]


def _shapes(provider: _Provider) -> dict[str, dict[str, Call]]:
    """Each shape's call, per client: ``{shape: {client: call}}``."""
    def sync(cls: Any, url: str, **options: Any) -> Any:
        return cls(base_url=url, api_key="k", **options,
                   http_client=httpx2.Client(transport=httpx2.MockTransport(provider)))

    def asynchronous(cls: Any, **options: Any) -> Any:
        return cls(base_url="http://127.0.0.1:9/v1", api_key="k", **options,
                   http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(provider)))

    chat_url, messages_url = "http://127.0.0.1:9/v1", "http://127.0.0.1:9"
    chats = {"official": sync(openai.OpenAI, chat_url, max_retries=2),
             "resilient": sync(rl_openai.OpenAI, chat_url)}
    messages = {"official": sync(anthropic.Anthropic, messages_url, max_retries=2),
                "resilient": sync(rl_anthropic.Anthropic, messages_url)}
    async_chats = {"official": asynchronous(openai.AsyncOpenAI, max_retries=2),
                   "resilient": asynchronous(rl_openai.AsyncOpenAI)}
    loop = asyncio.new_event_loop()

    def chat(client: Any) -> Call:
        return lambda: client.chat.completions.create(**CHAT)

    def stream(client: Any) -> Call:
        return lambda: list(client.chat.completions.create(**CHAT, stream=True))

    def message(client: Any) -> Call:
        return lambda: client.messages.create(**MESSAGE)

    def sixteen(client: Any) -> Call:
        async def run() -> None:
            await asyncio.gather(*(client.chat.completions.create(**CHAT) for _ in range(16)))
        return lambda: loop.run_until_complete(run())

    def after_reset(client: Any) -> Call:
        def run() -> Any:
            provider.resets = True
            try:
                return client.chat.completions.create(**CHAT)
            finally:
                provider.resets = False
        return run

    return {
        "chat": {name: chat(c) for name, c in chats.items()},
        "chat stream": {name: stream(c) for name, c in chats.items()},
        "message": {name: message(c) for name, c in messages.items()},
        "async chat, 16 at a time": {name: sixteen(c) for name, c in async_chats.items()},
        "chat after a reset": {name: after_reset(c) for name, c in chats.items()},
    }


def cyclic_garbage(call: Call, calls: int = 20) -> float:
    """Objects per call that only the collector frees."""
    for _ in range(5):
        call()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(calls):
            call()
        gc.collect()
        found = len(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    return found / calls


def collections(call: Call, calls: int) -> dict[str, float]:
    """Collections per generation, time in the collector and wall time, over ``calls``."""
    spent = [0.0]
    began = [0.0]

    def timing(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - began[0]

    for _ in range(min(200, calls)):
        call()
    gc.collect()
    before = [g["collections"] for g in gc.get_stats()]
    gc.callbacks.append(timing)
    try:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        wall = time.perf_counter() - start
    finally:
        gc.callbacks.remove(timing)
    after = [g["collections"] for g in gc.get_stats()]
    young, middle, full = (b - a for a, b in zip(before, after, strict=True))
    return {"young": young, "middle": middle, "full": full,
            "collector_ms": spent[0] * 1e3, "us_per_call": wall / calls * 1e6}


def _calls_for(shape: str, calls: int) -> int:
    """Rounds of 16 for the async shape; a twenty-fifth for the reset (the official client
    sleeps about 0.4 s before its retry)."""
    if "16" in shape or shape == "async":
        return max(1, calls // 16)
    if "reset" in shape:
        return max(10, calls // 25)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--calls", type=int, default=None, help="calls per client (5000)")
    parser.add_argument("--heap", type=int, default=None,
                        help="long-lived objects the process holds (1000000)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    calls = args.calls or (300 if args.quick else 5000)
    heap_size = args.heap if args.heap is not None else (100_000 if args.quick else 1_000_000)

    heap = [{"i": i} for i in range(heap_size)]  # held for the run's length
    shapes = _shapes(_Provider())
    rows, figures = [], {}
    for shape, clients in shapes.items():
        for name, call in clients.items():
            garbage = cyclic_garbage(call)
            counted = collections(call, _calls_for(shape, calls))
            figures[f"{shape} / {name}"] = {"cyclic_garbage_per_call": garbage, **counted}
            rows.append([shape, name, f"{garbage:.0f}",
                         f"{counted['young']} / {counted['middle']} / {counted['full']}",
                         f"{counted['collector_ms']:.1f}", f"{counted['us_per_call']:,.0f}"])
    print(f"{calls} calls per client (async: {_calls_for('async', calls)} rounds of 16; "
          f"after a reset: {_calls_for('reset', calls)}, each backs off before its retry), "
          f"{heap_size:,} long-lived objects held\n")
    print(table(["shape", "client", "cyclic garbage / call",
                 "young / middle / full collections", "in the collector, ms",
                 "µs per call (or round)"], rows))
    print(load_note())
    write_json(args.json, {"calls": calls, "heap": heap_size, "figures": figures})
    del heap


if __name__ == "__main__":
    main()
