"""Retry amplification under overload, and a noisy neighbour, against a capacity-limited provider.

    python benchmarks/overload.py [--quick] [--reps R] [--calls N] [--retry-after]
                                  [--no-sensitivity] [--json PATH] [--plot [DIR]]

The fault provider (in a separate process) admits ``capacity`` requests in flight (default 20),
each taking ``service_time`` (0.2 s), and answers an immediate 429 with rate-limit headers
(remaining 0, reset = time until a slot frees; no ``retry-after`` unless ``--retry-after``)
beyond that. Ideal makespan of N calls: N × service_time / capacity.

1. **Burst**: N = 200 calls fired at once from one asyncio loop, by the official
   ``openai.AsyncOpenAI()`` (defaults) and by ``resilient_llm.openai.AsyncOpenAI()`` (default
   policy, deadline 30 s). Per client: successes, attempts per call (from the provider's request
   log), makespan vs ideal, p50/p99 latency of successes. Each repetition runs each client in a
   fresh event loop with the pressure registry cleared and the provider reset, so repetitions
   are independent; medians and ranges over repetitions are reported. A sensitivity pass repeats
   the burst with capacity 10 and 40. The client has no concurrency limit until the provider
   pushes back, so a cold burst meets one wave of 429s: attempts per call are at least
   1 + (N − capacity) / N; what follows the wave is what the controllers decide.
2. **Warm bursts**: the burst again, four times from one client one second apart (a periodic
   batch job), so that each burst after the first meets what the earlier ones taught the
   client: attempts per call, 429s and makespan of those warm bursts. The official client
   starts each burst as cold as the first.
3. **Noisy neighbour**: one provider limit; a batch job floods it (400 calls at once) while an
   interactive caller makes 20 sequential calls through another client of the same process and
   the same target (base URL, API key, model), starting 1.5 s into the flood, once this event
   loop has worked through the flood's cold wave of sends and 429s. Interactive p50/p99:
   unloaded (no flood), loaded with priorities (flood ``Policy(priority="batch")``), loaded
   without (flood marked ``interactive``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _var in [v for v in os.environ if v.startswith("RESILIENT_LLM_")]:
    del os.environ[_var]  # the default policy, whatever the shell exports

import openai  # noqa: E402

import resilient_llm.openai as rl_openai  # noqa: E402
from benchmarks._common import (  # noqa: E402
    ProviderProcess,
    load_note,
    median,
    percentile,
    spread,
    table,
    write_json,
)
from benchmarks._plot import grouped_bars, plot_dir  # noqa: E402
from resilient_llm import Policy  # noqa: E402
from resilient_llm.engine.registry import registry  # noqa: E402

# Failed calls are counted in the tables; the library's per-call failure log lines would only
# interleave with them.
logging.getLogger("resilient_llm").setLevel(logging.CRITICAL)

MODEL = "gpt-4.1"
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
KEY = "sk-bench"
SERVICE_TIME = 0.2

OFFICIAL = "openai.AsyncOpenAI() defaults"
RESILIENT = "resilient_llm AsyncOpenAI (deadline 30 s)"


def _official(base: str) -> Any:
    return openai.AsyncOpenAI(base_url=base, api_key=KEY)


def _resilient(base: str) -> Any:
    return rl_openai.AsyncOpenAI(base_url=base, api_key=KEY, policy=Policy(deadline=30))


CLIENTS = {OFFICIAL: _official, RESILIENT: _resilient}


# --- the burst ------------------------------------------------------------------------------------


async def _burst(factory: Any, base: str, calls: int) -> dict[str, Any]:
    client = factory(base)
    try:
        t0 = time.perf_counter()

        async def one() -> tuple[str, float, float]:
            started = time.perf_counter()
            try:
                await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                kind = "ok"
            except Exception as exc:  # the official client gives up with RateLimitError
                kind = type(exc).__name__
            ended = time.perf_counter()
            return kind, ended - started, ended - t0

        results = await asyncio.gather(*(one() for _ in range(calls)))
    finally:
        await client.close()
    ok = [r for r in results if r[0] == "ok"]
    errors: dict[str, int] = {}
    for kind, _, _ in results:
        if kind != "ok":
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "successes": len(ok),
        "errors": errors,
        "makespan": max(r[2] for r in results),
        "p50": percentile([r[1] for r in ok], 50),
        "p99": percentile([r[1] for r in ok], 99),
    }


def burst_once(server: ProviderProcess, name: str, calls: int) -> dict[str, Any]:
    registry.clear()
    server.reset()
    result = asyncio.run(_burst(CLIENTS[name], server.openai_base_url, calls))
    log = server.log()
    result["attempts"] = len(log)
    result["throttled"] = sum(1 for r in log if r["status"] == 429)
    result["attempts_per_call"] = len(log) / calls
    return result


def burst(server: ProviderProcess, calls: int, reps: int, capacity: int) -> dict[str, Any]:
    ideal = calls * SERVICE_TIME / capacity
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
    for _ in range(reps):
        for name in CLIENTS:  # same order each rep; each run is independent (see reset)
            runs[name].append(burst_once(server, name, calls))
    summary: dict[str, Any] = {"ideal": ideal, "calls": calls, "capacity": capacity,
                               "clients": {}}
    for name, rs in runs.items():
        agg: dict[str, Any] = {"runs": rs}
        for field in ("successes", "attempts", "attempts_per_call", "makespan", "p50", "p99",
                      "throttled"):
            values = [float(r[field]) for r in rs]
            agg[field] = {"median": median(values), "range": spread(values)}
        agg["makespan_vs_ideal"] = agg["makespan"]["median"] / ideal
        summary["clients"][name] = agg
    return summary


def print_burst(summary: dict[str, Any], reps: int) -> None:
    calls, ideal = summary["calls"], summary["ideal"]
    print(f"\nburst: {calls} calls at once, capacity {summary['capacity']} × "
          f"{SERVICE_TIME * 1000:.0f} ms, ideal makespan {ideal:.2f} s; "
          f"median [range] of {reps} repetition{'s' if reps != 1 else ''}")

    def mr(agg: dict[str, Any], fmt: str) -> str:
        lo, hi = agg["range"]
        text = format(agg["median"], fmt)
        return text if reps == 1 else f"{text} [{format(lo, fmt)}–{format(hi, fmt)}]"

    rows = []
    for name, agg in summary["clients"].items():
        rows.append([name, f"{mr(agg['successes'], '.0f')}/{calls}",
                     mr(agg["attempts_per_call"], ".2f"), mr(agg["throttled"], ".0f"),
                     mr(agg["makespan"], ".2f"), f"{agg['makespan_vs_ideal']:.2f}×",
                     mr(agg["p50"], ".2f"), mr(agg["p99"], ".2f"),
                     _errors(agg["runs"])])
    print(table(["client", "successes", "attempts/call", "429s", "makespan s", "vs ideal",
                 "p50 s", "p99 s", "errors (per run)"], rows))


def _errors(runs: list[dict[str, Any]]) -> str:
    kinds = sorted({kind for r in runs for kind in r["errors"]})
    if not kinds:
        return "-"
    return "; ".join(f"{kind} " + "/".join(str(r["errors"].get(kind, 0)) for r in runs)
                     for kind in kinds)


def burst_targets(summary: dict[str, Any]) -> dict[str, bool]:
    agg = summary["clients"][RESILIENT]
    calls = summary["calls"]
    return {
        "all_succeed": agg["successes"]["median"] == calls,
        "attempts_per_call_le_1.3": agg["attempts_per_call"]["median"] <= 1.3,
        "makespan_le_1.5x_ideal": agg["makespan_vs_ideal"] <= 1.5,
    }


# --- warm bursts: the same burst again, on what the first one taught ------------------------------


async def _bursts(factory: Any, server: ProviderProcess, calls: int, rounds: int,
                  pause: float) -> list[dict[str, Any]]:
    """``rounds`` bursts of ``calls`` from one client, ``pause`` seconds apart (a periodic
    batch job): each round's successes, attempts per call (from the provider's log), 429s and
    makespan."""
    client = factory(server.openai_base_url)
    out: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            before = len(server.log())
            t0 = time.perf_counter()

            async def one() -> bool:
                try:
                    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                    return True
                except Exception:  # the official client gives up with RateLimitError
                    return False

            ok = sum(await asyncio.gather(*(one() for _ in range(calls))))
            makespan = time.perf_counter() - t0
            log = server.log()[before:]
            out.append({"successes": ok, "attempts_per_call": len(log) / calls,
                        "throttled": sum(1 for r in log if r["status"] == 429),
                        "makespan": makespan})
            await asyncio.sleep(pause)
    finally:
        await client.close()
    return out


def warm(server: ProviderProcess, calls: int, reps: int, capacity: int, rounds: int = 4,
         pause: float = 1.0) -> dict[str, Any]:
    """The rounds after the first (warm), pooled over repetitions: medians and ranges."""
    ideal = calls * SERVICE_TIME / capacity
    summary: dict[str, Any] = {"ideal": ideal, "calls": calls, "capacity": capacity,
                               "rounds": rounds, "pause": pause, "clients": {}}
    for name, factory in CLIENTS.items():
        runs = []
        for _ in range(reps):
            registry.clear()
            server.reset()
            runs += asyncio.run(_bursts(factory, server, calls, rounds, pause))[1:]
        agg: dict[str, Any] = {"runs": runs}
        for field in ("successes", "attempts_per_call", "throttled", "makespan"):
            values = [float(r[field]) for r in runs]
            agg[field] = {"median": median(values), "range": spread(values)}
        agg["makespan_vs_ideal"] = agg["makespan"]["median"] / ideal
        agg["worst_vs_ideal"] = agg["makespan"]["range"][1] / ideal
        summary["clients"][name] = agg
    return summary


def print_warm(summary: dict[str, Any]) -> None:
    calls = summary["calls"]
    print(f"\nwarm bursts: {summary['rounds']} bursts of {calls} from one client, "
          f"{summary['pause']:g} s apart; the {summary['rounds'] - 1} after the first, over "
          f"every repetition: median [range]; ideal makespan {summary['ideal']:.2f} s")
    rows = []
    for name, agg in summary["clients"].items():
        def mr(field: str, fmt: str, agg: dict[str, Any] = agg) -> str:
            lo, hi = agg[field]["range"]
            return (f"{format(agg[field]['median'], fmt)} "
                    f"[{format(lo, fmt)}–{format(hi, fmt)}]")
        rows.append([name, f"{mr('successes', '.0f')}/{calls}",
                     mr("attempts_per_call", ".2f"), mr("throttled", ".0f"),
                     mr("makespan", ".2f"), f"{agg['makespan_vs_ideal']:.2f}×",
                     f"{agg['worst_vs_ideal']:.2f}×"])
    print(table(["client", "successes", "attempts/call", "429s", "makespan s", "vs ideal",
                 "worst vs ideal"], rows))


def warm_targets(summary: dict[str, Any]) -> dict[str, bool]:
    agg = summary["clients"][RESILIENT]
    return {
        "all_succeed": agg["successes"]["range"][0] == summary["calls"],
        "attempts_per_call_le_1.3": agg["attempts_per_call"]["range"][1] <= 1.3,
        "makespan_le_1.5x_ideal": agg["worst_vs_ideal"] <= 1.5,
    }


# --- the noisy neighbour ------------------------------------------------------------------------


#: Seconds the flood runs before the interactive caller starts.
FLOOD_HEAD_START = 1.5


async def _neighbour(base: str, flood: int, interactive: int, mode: str) -> dict[str, Any]:
    """``mode``: ``unloaded``, ``priorities`` (flood is batch) or ``no_priorities``."""
    caller = rl_openai.AsyncOpenAI(base_url=base, api_key=KEY,
                                   policy=Policy(priority="interactive", deadline=60))
    flood_priority = "batch" if mode == "priorities" else "interactive"
    job = rl_openai.AsyncOpenAI(base_url=base, api_key=KEY,
                                policy=Policy(priority=flood_priority, deadline=120))
    flood_end: list[float] = []
    flood_ok = 0

    async def flood_call() -> None:
        nonlocal flood_ok
        try:
            await job.chat.completions.create(model=MODEL, messages=MESSAGES)
            flood_ok += 1
        except Exception:
            pass
        flood_end.append(time.perf_counter())

    try:
        t0 = time.perf_counter()
        flood_task = None
        if mode != "unloaded":
            flood_task = asyncio.gather(*(flood_call() for _ in range(flood)))
            # Let the flood fill the provider and the queue, and let this loop get through the
            # cold wave (400 sends and 380 429s: ~1 s of CPU, during which any callback here,
            # whichever client made it, waits up to 0.5 s): what is measured is the queue's
            # priority, not the event loop's backlog.
            await asyncio.sleep(FLOOD_HEAD_START)
        latencies: list[float] = []
        ends: list[float] = []
        failures = 0
        for _ in range(interactive):
            started = time.perf_counter()
            try:
                await caller.chat.completions.create(model=MODEL, messages=MESSAGES)
                latencies.append(time.perf_counter() - started)
                ends.append(time.perf_counter())
            except Exception:
                failures += 1
        if flood_task is not None:
            await flood_task
        flood_done = max(flood_end) if flood_end else t0
        overlapped = sum(1 for end in ends if end <= flood_done) if flood_task else 0
    finally:
        await caller.close()
        await job.close()
    return {
        "mode": mode,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "interactive_ok": len(latencies),
        "interactive_failed": failures,
        "under_flood": overlapped,
        "flood_ok": flood_ok if mode != "unloaded" else 0,
        "flood_makespan": (flood_done - t0) if mode != "unloaded" else 0.0,
    }


def neighbour(server: ProviderProcess, flood: int, interactive: int, reps: int
              ) -> dict[str, Any]:
    modes = ("unloaded", "priorities", "no_priorities")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(reps):
        for mode in modes:
            registry.clear()
            server.reset()
            result = asyncio.run(_neighbour(server.openai_base_url, flood, interactive, mode))
            log = server.log()
            result["attempts"] = len(log)
            result["throttled"] = sum(1 for r in log if r["status"] == 429)
            runs[mode].append(result)
    summary: dict[str, Any] = {"flood": flood, "interactive": interactive, "modes": {}}
    for mode, rs in runs.items():
        agg: dict[str, Any] = {"runs": rs}
        for field in ("p50", "p99", "flood_makespan", "flood_ok", "under_flood", "throttled",
                      "attempts", "interactive_ok"):
            values = [float(r[field]) for r in rs]
            agg[field] = {"median": median(values), "range": spread(values)}
        summary["modes"][mode] = agg
    unloaded = summary["modes"]["unloaded"]["p99"]["median"]
    loaded = summary["modes"]["priorities"]["p99"]["median"]
    summary["p99_ratio_priorities"] = loaded / unloaded
    summary["p99_ratio_no_priorities"] = summary["modes"]["no_priorities"]["p99"]["median"] \
        / unloaded
    return summary


def print_neighbour(summary: dict[str, Any], capacity: int, reps: int) -> None:
    print(f"\nnoisy neighbour: capacity {capacity} × {SERVICE_TIME * 1000:.0f} ms; flood of "
          f"{summary['flood']} calls vs {summary['interactive']} sequential interactive calls "
          f"(same target); median of {reps}")
    labels = {"unloaded": "unloaded (no flood)",
              "priorities": "flood marked batch (priorities)",
              "no_priorities": "flood marked interactive (no priorities)"}
    rows = []
    for mode, agg in summary["modes"].items():
        p99 = agg["p99"]["median"]
        rows.append([labels[mode], agg["p50"]["median"] * 1000, p99 * 1000,
                     p99 / summary["modes"]["unloaded"]["p99"]["median"],
                     f"{agg['interactive_ok']['median']:.0f}/{summary['interactive']}",
                     f"{agg['under_flood']['median']:.0f}",
                     "-" if mode == "unloaded" else
                     f"{agg['flood_ok']['median']:.0f}/{summary['flood']}",
                     "-" if mode == "unloaded" else f"{agg['flood_makespan']['median']:.2f}",
                     f"{agg['throttled']['median']:.0f}"])
    print(table(["interactive caller", "p50 ms", "p99 ms", "p99 vs unloaded", "ok",
                 "under flood", "flood ok", "flood s", "429s"], rows))


def plot(bursts: dict[int, dict[str, Any]], calls: int, reps: int, directory: Any) -> None:
    """Makespan (with the ideal) and attempts per call, official vs resilient, per capacity."""
    capacities = sorted(bursts)
    groups = [f"capacity {c} (ideal {bursts[c]['ideal']:.1f} s)" for c in capacities]
    note = (f"benchmarks/overload.py: {calls} calls at once, median of {reps} run(s) on a "
            "shared 2-core machine; loopback provider, 200 ms per request")
    names = {OFFICIAL: OFFICIAL, RESILIENT: RESILIENT}
    grouped_bars(directory / "bench-overload-makespan.svg",
                 title=f"Time until the last of {calls} calls returned",
                 ylabel="makespan, s", groups=groups, note=note,
                 series={label: [bursts[c]["clients"][key]["makespan"]["median"]
                                 for c in capacities] for label, key in names.items()})
    grouped_bars(directory / "bench-overload-attempts.svg",
                 title="Requests sent per call under overload (retry amplification)",
                 ylabel="attempts per call", groups=groups, note=note,
                 series={label: [bursts[c]["clients"][key]["attempts_per_call"]["median"]
                                 for c in capacities] for label, key in names.items()})
    grouped_bars(directory / "bench-overload-success.svg",
                 title=f"Calls that succeeded out of {calls}", ylabel="successes",
                 groups=groups, note=note, fmt="{:.0f}",
                 series={label: [bursts[c]["clients"][key]["successes"]["median"]
                                 for c in capacities] for label, key in names.items()})


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3)")
    parser.add_argument("--calls", type=int, default=None, help="burst size (200)")
    parser.add_argument("--capacity", type=int, default=20)
    parser.add_argument("--flood", type=int, default=None, help="noisy-neighbour flood (400)")
    parser.add_argument("--interactive", type=int, default=None,
                        help="sequential interactive calls (20)")
    parser.add_argument("--retry-after", action="store_true", help="429s carry retry-after")
    parser.add_argument("--no-sensitivity", action="store_true",
                        help="skip the capacity 10 / 40 burst")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help="write the burst charts (default DIR: docs/img; needs matplotlib)")
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    calls = args.calls or (100 if args.quick else 200)
    flood = args.flood or (120 if args.quick else 400)
    interactive = args.interactive or (6 if args.quick else 20)
    sensitivity = [] if (args.quick or args.no_sensitivity) else [10, 40]

    options = {"service_time": SERVICE_TIME, "retry_after_header": args.retry_after}
    print(load_note())
    results: dict[str, Any] = {}
    with ProviderProcess(capacity=args.capacity, **options) as server:
        summary = burst(server, calls, reps, args.capacity)
        print_burst(summary, reps)
        targets = burst_targets(summary)
        print("  resilient targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}"
                                                  for k, v in targets.items()))
        results["burst"] = summary
        results["burst_targets"] = targets

        summary = warm(server, calls, reps, args.capacity, rounds=2 if args.quick else 4)
        print_warm(summary)
        targets = warm_targets(summary)
        print("  resilient targets (warm): " + ", ".join(
            f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items()))
        results["warm"] = summary
        results["warm_targets"] = targets

        nb = neighbour(server, flood, interactive, reps)
        print_neighbour(nb, args.capacity, reps)
        ok = nb["p99_ratio_priorities"] <= 2.0
        print(f"  target interactive p99 under flood ≤ 2× unloaded (with priorities): "
              f"{nb['p99_ratio_priorities']:.2f}× → {'met' if ok else 'NOT met'}")
        results["neighbour"] = nb
        results["neighbour_target_met"] = ok

    results["sensitivity"] = {}
    for capacity in sensitivity:
        with ProviderProcess(capacity=capacity, **options) as server:
            summary = burst(server, calls, reps, capacity)
            print_burst(summary, reps)
            targets = burst_targets(summary)
            print("  resilient targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}"
                                                      for k, v in targets.items()))
            results["sensitivity"][str(capacity)] = {"burst": summary, "targets": targets}

    directory = plot_dir(args.plot)
    if directory is not None:
        bursts = {args.capacity: results["burst"]}
        bursts.update({int(c): r["burst"] for c, r in results["sensitivity"].items()})
        plot(bursts, calls, reps, directory)
    write_json(args.json, {"benchmark": "overload", "reps": reps, "calls": calls,
                           "capacity": args.capacity, "service_time": SERVICE_TIME,
                           "retry_after": args.retry_after, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
