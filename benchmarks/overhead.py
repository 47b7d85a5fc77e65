"""Per-call overhead: raw httpx2 vs the official OpenAI client vs the resilient drop-in.

    python benchmarks/overhead.py [--quick] [--blocks B] [--block-size N] [--json PATH]
                                  [--no-pin] [--profile]

Chat completions (and Anthropic messages) against the fault provider running in a separate
process (on its own CPU when the machine has two), so this process's CPU time is the client's
alone.
All clients run in one process, side by side: after a warm-up of each, the calls are made in
blocks, the clients taking turns block by block (rotating who goes first) so machine drift
hits all of them alike. Per block: wall µs/call (``perf_counter``) and client CPU µs/call
(``process_time``: every thread of this process). Reported: the median over blocks, and the
ratios resilient/official and each vs raw httpx2 (median of the per-block paired ratios).
Sync (one thread, sequential) and async (one asyncio loop, 1, 16 and 64 calls in flight:
at 64 the wall ratio is the throughput ratio of a CPU-bound client), and
sync streamed calls read to their end (chat completions and messages with ``stream=True``).
``--profile`` adds a cProfile of the resilient sync client (top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _var in [v for v in os.environ if v.startswith("RESILIENT_LLM_")]:
    del os.environ[_var]  # the default policy, whatever the shell exports

import httpx2  # noqa: E402
import openai  # noqa: E402

import resilient_llm.openai as rl_openai  # noqa: E402
from benchmarks._common import (  # noqa: E402
    importable,
    load_note,
    median,
    provider_process,
    table,
    write_json,
)
from benchmarks._plot import grouped_bars, plot_dir  # noqa: E402

MODEL = "gpt-4.1"
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
BODY: Any = {"model": MODEL, "messages": MESSAGES}
A_MODEL = "claude-sonnet-4-6"
A_BODY: Any = {"model": A_MODEL, "max_tokens": 100, "messages": MESSAGES}
KEY = "sk-bench"

SyncCall = Callable[[], Any]
AsyncCall = Callable[[], Awaitable[Any]]


# --- the clients ----------------------------------------------------------------------------------


def sync_clients(base: str, with_anthropic: bool) -> tuple[dict[str, SyncCall], list[Any]]:
    raw = httpx2.Client(base_url=base, headers={"authorization": f"Bearer {KEY}"})
    official = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=2)
    ours = rl_openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)

    def raw_call() -> Any:
        response = raw.post("/v1/chat/completions", json=BODY)
        response.raise_for_status()
        return response.json()

    calls: dict[str, SyncCall] = {
        "raw httpx2.Client": raw_call,
        "openai.OpenAI": lambda: official.chat.completions.create(model=MODEL,
                                                                  messages=MESSAGES),
        "resilient_llm.openai.OpenAI": lambda: ours.chat.completions.create(
            model=MODEL, messages=MESSAGES),
    }
    closers: list[Any] = [raw, official, ours]
    if with_anthropic:
        import anthropic

        import resilient_llm.anthropic as rl_anthropic

        a_raw = httpx2.Client(base_url=base, headers={"x-api-key": KEY,
                                                      "anthropic-version": "2023-06-01"})
        a_official = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=2)
        a_ours = rl_anthropic.Anthropic(base_url=base, api_key=KEY)

        def a_raw_call() -> Any:
            response = a_raw.post("/v1/messages", json=A_BODY)
            response.raise_for_status()
            return response.json()

        calls["raw httpx2.Client /messages"] = a_raw_call
        calls["anthropic.Anthropic"] = lambda: a_official.messages.create(**A_BODY)
        calls["resilient_llm.anthropic.Anthropic"] = lambda: a_ours.messages.create(**A_BODY)
        closers += [a_raw, a_official, a_ours]
    return calls, closers


def stream_clients(base: str, with_anthropic: bool) -> tuple[dict[str, SyncCall], list[Any]]:
    """Streamed calls read to their end: what stream inspection (and recovery's whole-event
    delivery) costs on a healthy stream."""
    raw = httpx2.Client(base_url=base, headers={"authorization": f"Bearer {KEY}"})
    official = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=2)
    ours = rl_openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    body = {**BODY, "stream": True}

    def raw_call() -> Any:
        with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            return list(response.iter_lines())

    calls: dict[str, SyncCall] = {
        "raw httpx2.Client stream": raw_call,
        "openai.OpenAI stream": lambda: list(official.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True)),
        "resilient_llm.openai.OpenAI stream": lambda: list(ours.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True)),
    }
    closers: list[Any] = [raw, official, ours]
    if with_anthropic:
        import anthropic

        import resilient_llm.anthropic as rl_anthropic

        a_raw = httpx2.Client(base_url=base, headers={"x-api-key": KEY,
                                                      "anthropic-version": "2023-06-01"})
        a_official = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=2)
        a_ours = rl_anthropic.Anthropic(base_url=base, api_key=KEY)
        a_body = {**A_BODY, "stream": True}

        def a_raw_call() -> Any:
            with a_raw.stream("POST", "/v1/messages", json=a_body) as response:
                response.raise_for_status()
                return list(response.iter_lines())

        calls["raw httpx2.Client /messages stream"] = a_raw_call
        calls["anthropic.Anthropic stream"] = lambda: list(
            a_official.messages.create(**A_BODY, stream=True))
        calls["resilient_llm.anthropic.Anthropic stream"] = lambda: list(
            a_ours.messages.create(**A_BODY, stream=True))
        closers += [a_raw, a_official, a_ours]
    return calls, closers


def async_clients(base: str, with_anthropic: bool) -> tuple[dict[str, AsyncCall], list[Any]]:
    raw = httpx2.AsyncClient(base_url=base, headers={"authorization": f"Bearer {KEY}"})
    official = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=2)
    ours = rl_openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY)

    async def raw_call() -> Any:
        response = await raw.post("/v1/chat/completions", json=BODY)
        response.raise_for_status()
        return response.json()

    calls: dict[str, AsyncCall] = {
        "raw httpx2.AsyncClient": raw_call,
        "openai.AsyncOpenAI": lambda: official.chat.completions.create(model=MODEL,
                                                                       messages=MESSAGES),
        "resilient_llm.openai.AsyncOpenAI": lambda: ours.chat.completions.create(
            model=MODEL, messages=MESSAGES),
    }
    closers: list[Any] = [raw, official, ours]
    if with_anthropic:
        import anthropic

        import resilient_llm.anthropic as rl_anthropic

        a_raw = httpx2.AsyncClient(base_url=base, headers={"x-api-key": KEY,
                                                           "anthropic-version": "2023-06-01"})
        a_official = anthropic.AsyncAnthropic(base_url=base, api_key=KEY, max_retries=2)
        a_ours = rl_anthropic.AsyncAnthropic(base_url=base, api_key=KEY)

        async def a_raw_call() -> Any:
            response = await a_raw.post("/v1/messages", json=A_BODY)
            response.raise_for_status()
            return response.json()

        calls["raw httpx2.AsyncClient /messages"] = a_raw_call
        calls["anthropic.AsyncAnthropic"] = lambda: a_official.messages.create(**A_BODY)
        calls["resilient_llm.anthropic.AsyncAnthropic"] = lambda: a_ours.messages.create(
            **A_BODY)
        closers += [a_raw, a_official, a_ours]
    return calls, closers


# --- the runs -----------------------------------------------------------------------------------


def _rotations(names: list[str], blocks: int) -> list[list[str]]:
    k = len(names)
    return [names[b % k:] + names[:b % k] for b in range(blocks)]


def run_sync(calls: dict[str, SyncCall], warmup: int, blocks: int, size: int
             ) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for order in _rotations(list(calls), blocks):
        for name in order:
            call = calls[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(size):
                call()
            t1, c1 = time.perf_counter(), time.process_time()
            samples[name]["wall"].append((t1 - t0) / size * 1e6)
            samples[name]["cpu"].append((c1 - c0) / size * 1e6)
    return samples


async def _run_block(call: AsyncCall, calls: int, concurrency: int) -> None:
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, calls))))


async def run_async(base: str, with_anthropic: bool, warmup: int, blocks: int, size: int,
                    concurrency: int) -> dict[str, dict[str, list[float]]]:
    calls, closers = async_clients(base, with_anthropic)
    try:
        samples: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in calls}
        for call in calls.values():
            await _run_block(call, warmup, concurrency)
        for order in _rotations(list(calls), blocks):
            for name in order:
                c0, t0 = time.process_time(), time.perf_counter()
                await _run_block(calls[name], size, concurrency)
                t1, c1 = time.perf_counter(), time.process_time()
                samples[name]["wall"].append((t1 - t0) / size * 1e6)
                samples[name]["cpu"].append((c1 - c0) / size * 1e6)
        return samples
    finally:
        for client in closers:
            await client.aclose() if hasattr(client, "aclose") else await client.close()


# --- reporting ----------------------------------------------------------------------------------


def plot(results: dict[str, Any], blocks: int, size: int, directory: Any) -> None:
    """Median wall µs per call: raw httpx2, official and resilient, for each configuration."""
    parts = {"sync": "sync", "async_1": "async, 1 in flight", "async_16": "async, 16 in flight",
             "async_64": "async, 64 in flight"}
    groups: list[str] = []
    series: dict[str, list[float]] = {"raw httpx2": [], "official SDK": [],
                                      "resilient drop-in": []}
    for part, label in parts.items():
        names = list(results[part]["clients"])  # (raw, official, resilient) per provider
        for start in range(0, len(names), 3):
            provider = "anthropic" if "nthropic" in names[start + 1] else "openai"
            groups.append(f"{provider}\n{label}")
            for key, name in zip(series, names[start:start + 3], strict=True):
                series[key].append(results[part]["clients"][name]["wall_us_median"])
    grouped_bars(directory / "bench-overhead.svg",
                 title="Client time per call against a loopback provider",
                 ylabel="wall µs per call (median)", groups=groups, series=series, fmt="{:.0f}",
                 note=f"benchmarks/overhead.py --blocks {blocks} --block-size {size}: medians "
                      "of blocks on a shared 2-core machine; ±10 % run to run")


def _paired(samples: dict[str, dict[str, list[float]]], a: str, b: str, metric: str) -> float:
    return median([x / y for x, y in zip(samples[a][metric], samples[b][metric], strict=True)])


def summarise(title: str, samples: dict[str, dict[str, list[float]]],
              groups: list[tuple[str, str, str]]) -> dict[str, Any]:
    """``groups``: (raw, official, resilient) names."""
    figures: dict[str, Any] = {"clients": {}, "ratios": {}}
    rows = []
    for raw, official, ours in groups:
        for name in (raw, official, ours):
            wall, cpu = median(samples[name]["wall"]), median(samples[name]["cpu"])
            vs_raw_wall = _paired(samples, name, raw, "wall")
            vs_raw_cpu = _paired(samples, name, raw, "cpu")
            figures["clients"][name] = {
                "wall_us_median": wall, "cpu_us_median": cpu,
                "wall_us_blocks": samples[name]["wall"], "cpu_us_blocks": samples[name]["cpu"],
                "wall_vs_raw": vs_raw_wall, "cpu_vs_raw": vs_raw_cpu,
            }
            rows.append([name, wall, min(samples[name]["wall"]), cpu, vs_raw_wall, vs_raw_cpu])
        figures["ratios"][f"{ours} / {official}"] = {
            "wall": _paired(samples, ours, official, "wall"),
            "cpu": _paired(samples, ours, official, "cpu"),
            "added_cpu_us": median([x - y for x, y in zip(samples[ours]["cpu"],
                                                          samples[official]["cpu"],
                                                          strict=True)]),
            "added_wall_us": median([x - y for x, y in zip(samples[ours]["wall"],
                                                           samples[official]["wall"],
                                                           strict=True)]),
        }
    print(f"\n{title}")
    print(table(["client", "wall µs/call", "best block", "CPU µs/call", "wall vs raw",
                 "CPU vs raw"], rows))
    for label, r in figures["ratios"].items():
        verdict = "met" if r["wall"] <= 1.15 else "NOT met"
        print(f"  {label}: wall {r['wall']:.3f}, CPU {r['cpu']:.3f} "
              f"(added per call: {r['added_wall_us']:+.0f} µs wall, "
              f"{r['added_cpu_us']:+.0f} µs CPU)  target ≤ 1.15 (wall): {verdict}")
    return figures


def profile_resilient(base: str, calls: int) -> str:
    client = rl_openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    for _ in range(50):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    profiler = cProfile.Profile(time.process_time)  # CPU time: robust on a busy machine
    profiler.enable()
    for _ in range(calls):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    profiler.disable()
    client.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats("resilient_llm", 30)
    return out.getvalue()


def sustained(base: str, calls: int, limit_s: float) -> dict[str, Any]:
    """Many sequential calls through one resilient client (one target): does pacing ever stall?

    A provider that reports ample headroom (``remaining`` ≈ ``limit``) should never make the
    client wait for admission, however many calls it has made.
    """
    from resilient_llm import outcome

    client = rl_openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    waits: list[float] = []
    t0 = time.perf_counter()
    stalls, first_stall = 0, None
    try:
        for i in range(calls):
            response = client.chat.completions.create(model=MODEL, messages=MESSAGES)
            wait = outcome(response).queue_wait
            waits.append(wait)
            if wait > 0.05:
                stalls += 1
                first_stall = i if first_stall is None else first_stall
            if time.perf_counter() - t0 > limit_s:
                break
    finally:
        client.close()
    elapsed = time.perf_counter() - t0
    made = len(waits)
    tail = waits[-min(made, 500):]
    result = {"calls": made, "seconds": elapsed, "calls_per_s": made / elapsed,
              "stalls_over_50ms": stalls, "first_stall_at_call": first_stall,
              "max_queue_wait_s": max(waits) if waits else 0.0,
              "tail_calls_per_s": None}
    if first_stall is not None:
        result["mean_queue_wait_last_500_s"] = sum(tail) / len(tail)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--blocks", type=int, default=None, help="blocks per client (12)")
    parser.add_argument("--block-size", type=int, default=None, help="calls per block (100)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (150)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client/server CPUs")
    parser.add_argument("--profile", action="store_true", help="cProfile the resilient client")
    parser.add_argument("--sustained", type=int, default=None,
                        help="sequential resilient calls in the pacing check (12000; 0 = skip)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help="write the per-call overhead chart (default DIR: docs/img)")
    args = parser.parse_args(argv)
    blocks = args.blocks or (3 if args.quick else 12)
    size = args.block_size or (30 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (10 if args.quick else 150)

    with_anthropic, why = importable("resilient_llm.anthropic")
    notes = [] if with_anthropic else [
        f"anthropic pair skipped: resilient_llm.anthropic does not import ({why})"]
    for note in notes:
        print(f"note: {note}")
    print(f"{blocks} blocks × {size} calls per client after {warmup} warm-up calls each "
          f"({blocks * size} timed calls per client); {load_note()}")

    results: dict[str, Any] = {}
    with provider_process(pin=not args.no_pin) as server:
        base = server.url
        print(f"provider process on {base}" + ("" if args.no_pin else
                                                 " (server on CPU 1, client on CPU 0)"))
        calls, closers = sync_clients(base, with_anthropic)
        try:
            sync = run_sync(calls, warmup, blocks, size)
        finally:
            for client in closers:
                client.close()
        groups = [("raw httpx2.Client", "openai.OpenAI", "resilient_llm.openai.OpenAI")]
        if with_anthropic:
            groups.append(("raw httpx2.Client /messages", "anthropic.Anthropic",
                           "resilient_llm.anthropic.Anthropic"))
        results["sync"] = summarise("sync, sequential", sync, groups)

        calls, closers = stream_clients(base, with_anthropic)
        try:
            streamed = run_sync(calls, warmup, blocks, size)
        finally:
            for client in closers:
                client.close()
        sgroups = [tuple(f"{name} stream" for name in group) for group in groups]
        results["sync_stream"] = summarise("sync, streamed (read to the end)", streamed,
                                           sgroups)  # type: ignore[arg-type]

        agroups = [("raw httpx2.AsyncClient", "openai.AsyncOpenAI",
                    "resilient_llm.openai.AsyncOpenAI")]
        if with_anthropic:
            agroups.append(("raw httpx2.AsyncClient /messages", "anthropic.AsyncAnthropic",
                            "resilient_llm.anthropic.AsyncAnthropic"))
        for concurrency in (1, 16, 64):
            samples = asyncio.run(run_async(base, with_anthropic, warmup, blocks, size,
                                            concurrency))
            results[f"async_{concurrency}"] = summarise(
                f"async, {concurrency} in flight (one loop)", samples, agroups)

        expected = len(groups) * 3 * (warmup + blocks * size) * 5
        seen = server.count()
        extra = seen - expected
        print(f"\nprovider saw {seen} requests for {expected} calls"
              + ("" if extra == 0 else f" ({extra:+d}: retries or lost calls!)"))
        results["provider_requests"] = {"seen": seen, "calls": expected}
        sustained_calls = args.sustained if args.sustained is not None else (
            0 if args.quick else 12_000)
        if sustained_calls:
            # A fresh target key: nothing learned above carries over.
            from resilient_llm.engine.registry import registry

            registry.clear()
            print(f"\nsustained pacing check: up to {sustained_calls} sequential calls "
                  f"(≤ 60 s), one resilient client")
            s = sustained(base, sustained_calls, 60.0)
            verdict = "no stall" if s["first_stall_at_call"] is None else (
                f"STALLS from call {s['first_stall_at_call']}: {s['stalls_over_50ms']} calls "
                f"waited > 50 ms for admission (max {s['max_queue_wait_s']:.2f} s)")
            print(f"  {s['calls']} calls in {s['seconds']:.1f} s ({s['calls_per_s']:.0f}/s): "
                  f"{verdict}")
            results["sustained"] = s
        if args.profile:
            print("\ncProfile of the resilient sync client:\n")
            print(profile_resilient(base, 2000 if not args.quick else 200))

    directory = plot_dir(args.plot)
    if directory is not None:
        plot(results, blocks, size, directory)
    ok = all(r["wall"] <= 1.15 for part in ("sync", "async_1", "async_16")
             for r in results[part]["ratios"].values())
    write_json(args.json, {"benchmark": "overhead", "blocks": blocks, "block_size": size,
                           "warmup": warmup, "notes": notes, "results": results,
                           "target_met": ok})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
