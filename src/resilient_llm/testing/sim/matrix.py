"""The matrix: cells (provider × traffic × deadline), runs over seeds, per-cell metrics.

``run_cell(cell, seeds)`` runs the resilient client and the control on the same traffic with
the same seeds and returns both clients' :class:`CellMetrics`. ``MATRIX`` is the full matrix the
benchmark prints; ``REDUCED`` the subset CI asserts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..._policy import Policy
from .clients import CallResult, ControlClient, ResilientClient, World
from .loop import Loop
from .providers import Fault, ProviderModel
from .redis_model import RedisModel
from .traffic import Client, Traffic

__all__ = ["MATRIX", "REDUCED", "Cell", "CellMetrics", "fleet_cells", "run_cell", "simulate"]

#: ``apart``: a Redis cell's processes without Redis (only for cells with ``redis``).
ClientKind = Literal["resilient", "control", "apart"]


@dataclass(frozen=True)
class Cell:
    """One scenario: a provider (built fresh per run), a traffic shape, a deadline."""

    name: str
    provider: Callable[[], ProviderModel]
    traffic: Traffic
    deadline: float = 30.0
    #: A fallback model is configured (resilient client only: the SDK has none): healthy
    #: and unlimited, with the primary's service time, unless ``fallback_model`` says.
    fallback: bool = False
    fallback_model: Callable[[], ProviderModel] | None = None
    processes: int = 1
    #: The processes are one fleet sharing a (modelled) Redis; the metrics then also have the
    #: same processes without Redis (``"apart"``), which the fleet must not do worse than.
    redis: bool = False
    #: Which invariants apply to this cell (see ``tests/test_simulator.py``).
    checks: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class CellMetrics:
    """One client's figures over every seed of a cell (calls pooled across seeds)."""

    calls: int
    success: float
    goodput: float  # successful calls per second, per seed
    goodput_ratio: float  # goodput / min(capacity, offered rate)
    attempts: float  # attempts per call
    share_429: float  # 429 answers / attempts
    late_429: float  # the same, for attempts of calls started 10 s or more into the run
    p50: float  # latency of successful calls, seconds
    p99: float
    recovery: float | None  # worst seed: last client-side wait or failure after the episode
    post_rate: float | None  # worst seed: successes / capacity from 5 s after the episode
    max_pressure: float
    max_waited: float  # longest time one call spent in the client (admission, backoff)
    fallback_share: float  # calls answered by the fallback
    interactive_p99: float | None  # ``mix`` traffic only
    batch_success: float | None  # ``mix`` traffic only


def simulate(cell: Cell, seed: int, kind: ClientKind) -> tuple[list[CallResult], float]:
    """One run of ``cell``: every call's result, and the run's start time."""
    loop = Loop()
    primary = cell.provider()
    models = {"m": primary}
    if cell.fallback:
        models["fb"] = (cell.fallback_model() if cell.fallback_model is not None
                        else ProviderModel(service_time=primary.service_time))
    world = World(loop, models, seed)
    clients: list[Client] = []
    policy = Policy(deadline=cell.deadline, telemetry=False,
                    fallbacks={"m": ("fb",)} if cell.fallback else {})
    redis = RedisModel(lambda: loop.now) if cell.redis and kind == "resilient" else None
    for process in range(cell.processes):
        if kind != "control":
            clients.append(ResilientClient(world, policy=policy, seed=seed, process=process,
                                           redis=redis))
        else:
            clients.append(ControlClient(world, deadline=cell.deadline, seed=seed,
                                         process=process))
    results: list[CallResult] = []
    t0 = loop.now
    cell.traffic.spawn(loop, clients, "m", results, random.Random(seed))
    loop.run()
    return results, t0


def run_cell(cell: Cell, seeds: Sequence[int]) -> dict[ClientKind, CellMetrics]:
    """Both clients' metrics for ``cell`` over ``seeds``."""
    kinds: tuple[ClientKind, ...] = ("resilient", "control", "apart") if cell.redis else (
        "resilient", "control")
    return {kind: _metrics(cell, [simulate(cell, seed, kind) for seed in seeds])
            for kind in kinds}


def _metrics(cell: Cell, runs: list[tuple[list[CallResult], float]]) -> CellMetrics:
    model = cell.provider()
    calls = [r for results, _ in runs for r in results]
    ok = [r for r in calls if r.ok]
    attempts = sum(r.attempts for r in calls) or 1
    offered = cell.traffic.offered(model.service_time)
    ideal = min(model.capacity, offered)
    goodput = len(ok) / len(runs) / cell.traffic.duration
    late = [r for results, t0 in runs for r in results if r.start - t0 >= 10.0]
    late_attempts = sum(r.attempts for r in late)
    latencies = sorted(r.latency for r in ok)
    recovery = post_rate = None
    end = model.episode_end
    if end is not None:
        recovery, post_rate = 0.0, math.inf
        for results, t0 in runs:
            after = [r for r in results if r.start - t0 >= end]
            bad = [r.start - t0 - end for r in after if not r.ok or r.waited > 0.05]
            recovery = max(recovery, max(bad, default=0.0))
            window = cell.traffic.duration - end - 5.0
            if window > 0 and math.isfinite(model.capacity):
                served = sum(1 for r in after if r.ok and r.end - t0 >= end + 5.0
                             and r.end - t0 < cell.traffic.duration)
                post_rate = min(post_rate, served / window / model.capacity)
        if not math.isfinite(post_rate):
            post_rate = None
    interactive_p99 = batch_success = None
    if cell.traffic.kind == "mix":
        inter = sorted(r.latency for r in calls if r.priority == "interactive" and r.ok)
        interactive_p99 = _quantile(inter, 0.99)
        batch = [r for r in calls if r.priority == "batch"]
        batch_success = sum(r.ok for r in batch) / max(1, len(batch))
    return CellMetrics(
        calls=len(calls),
        success=len(ok) / max(1, len(calls)),
        goodput=goodput,
        goodput_ratio=goodput / ideal if ideal > 0 else 0.0,
        attempts=attempts / max(1, len(calls)),
        share_429=sum(r.throttled for r in calls) / attempts,
        late_429=sum(r.throttled for r in late) / max(1, late_attempts),
        p50=_quantile(latencies, 0.5),
        p99=_quantile(latencies, 0.99),
        recovery=recovery,
        post_rate=post_rate,
        max_pressure=max((r.pressure for r in calls), default=0.0),
        max_waited=max((r.waited for r in calls), default=0.0),
        fallback_share=sum(r.model == "fb" for r in calls) / max(1, len(calls)),
        interactive_p99=interactive_p99,
        batch_success=batch_success,
    )


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


# --- the matrix ----------------------------------------------------------------------------------


def _p(**kw: object) -> Callable[[], ProviderModel]:
    return lambda: ProviderModel(**kw)  # type: ignore[arg-type]


def _transient(fault: Fault, deadline: float, hint: float | None = 0.5) -> Cell:
    label = "" if hint == 0.5 else (", no Retry-After" if hint is None
                                    else f", Retry-After {hint:g} s")
    return Cell(f"transient {fault}{label}, deadline {deadline:g} s",
                _p(service_time=0.2, transient=(fault,), retry_after=hint),
                Traffic("burst", duration=deadline, n=1), deadline=deadline,
                checks=frozenset({"never_worse", "transient"}))


_CAPPED = {"service_time": 0.5, "concurrency": 20, "retry_after": None}  # 40 calls/s


def _matrix() -> list[Cell]:
    never = frozenset({"never_worse"})
    faults: tuple[Fault, ...] = ("429", "503", "529", "500", "reset")
    cells = [_transient(fault, deadline) for fault in faults for deadline in (1.0, 2.0)]
    # The hint leaves 0.2 s or more of the deadline for the retry: it must be taken.
    cells += [_transient(fault, deadline, hint) for fault in ("429", "529")
              for deadline, hint in ((2.0, 1.0), (1.5, 1.0), (1.0, None), (30.0, 20.0))]
    cells += [Cell(f"idle provider, {scale * 1000:g} ms, batch + fallback",
                   # noisy answers: 0.1x to 1.9x the typical latency
                   _p(service_time=scale, jitter=0.9),
                   Traffic("sequential", duration=60 * scale + 5, think=0.1),
                   deadline=max(10.0, 4 * scale), fallback=True, checks=never | {"idle"})
              for scale in (0.0003, 0.03, 3.0, 30.0)]
    cells += [Cell(f"healthy, {inflight} in flight, {scale * 1000:g} ms",
                   _p(service_time=scale),
                   # about 2000 calls per run
                   Traffic("workers", duration=max(2.0, 2000 * scale / inflight, 4 * scale),
                           n=inflight),
                   deadline=max(30.0, 3 * scale), checks=never | {"healthy"})
              for inflight, scale in ((1, 0.001), (256, 0.001), (64, 0.1), (8, 1.0),
                                      (256, 1.0), (16, 10.0))]
    cells += [Cell(f"Poisson {load:g}x capacity (20 slots x 0.5 s)", _p(**_CAPPED),
                   Traffic("poisson", duration=30.0, rate=40 * load), deadline=10.0,
                   checks=never)
              for load in (0.3, 0.9, 1.5, 3.0)]
    cells.append(Cell("529 storm (3x capacity)", _p(**{**_CAPPED, "overload_status": 529}),
                      Traffic("poisson", duration=30.0, rate=120), deadline=10.0, checks=never))
    cells += [Cell(f"Retry-After {label}, 1.5x of 20/s bucket",
                   _p(service_time=0.2, rate=20.0, burst=20.0, retry_after=hint),
                   Traffic("poisson", duration=30.0, rate=30.0), deadline=10.0, checks=never)
              for hint, label in ((None, "absent"), (0.01, "tiny"), (3600.0, "huge"))]
    cells.append(Cell("token limit 2000 tokens/s (20 calls/s), 1.5x",
                      _p(service_time=0.2, token_rate=2000.0, tokens_per_request=100.0),
                      Traffic("poisson", duration=30.0, rate=30.0), deadline=10.0,
                      checks=never))
    quantized = {"service_time": 0.05, "rate": 50.0, "burst": 5.0, "header_limit": 3000.0}
    cells += [Cell(f"quantized 50/s burst 5, {style} headers 3000/min, 1 process",
                   _p(**quantized, header_style=style), Traffic("workers", duration=20.0, n=200),
                   deadline=30.0, checks=never | {"quantized"})
              for style in ("openai", "anthropic")]
    # Processes without Redis learn apart: only "never worse" applies (the fleet, with Redis,
    # is what meets the quantized bound together).
    cells.append(Cell("quantized 50/s burst 5, headers 3000/min, 4 processes without Redis",
                      _p(**quantized), Traffic("workers", duration=20.0, n=200), processes=4,
                      deadline=30.0, checks=never))
    cells.append(Cell("outage 503 15 s, 4/s caller, fallback",
                      _p(service_time=0.05, outage=(5.0, 20.0, "503"), retry_after=None),
                      Traffic("sequential", duration=45.0, think=0.2), deadline=10.0,
                      fallback=True, checks=never | {"recovers", "fallback_fast"}))
    cells += [Cell(f"outage {kind} 10 s, 2x-capacity Poisson",
                   _p(**{**_CAPPED, "outage": (5.0, 15.0, kind)}),
                   Traffic("poisson", duration=40.0, rate=80.0), deadline=5.0,
                   checks=never | {"recovers"})
              for kind in ("503", "refused", "silent")]
    # Closed-loop workers with no fallback: a call refused at once (open circuit, spent retry
    # budget) would bring its worker straight back with a first attempt for the down target.
    cells.append(Cell("outage 503 10 s, 16 workers, no fallback",
                      _p(service_time=0.1, outage=(5.0, 15.0, "503"), retry_after=None),
                      Traffic("workers", duration=30.0, n=16), deadline=10.0,
                      checks=never | {"recovers"}))
    cells += [Cell(f"throttle episode {kind} 10 s{', Retry-After 1 s' if hint else ''}, "
                   "4/s caller",
                   _p(service_time=0.05, outage=(5.0, 15.0, kind), retry_after=hint),
                   Traffic("sequential", duration=30.0, think=0.2), deadline=10.0,
                   checks=never | {"recovers"})
              for kind, hint in (("429", None), ("429", 1.0), ("529", None))]
    cells.append(Cell("throttle episode 429 10 s, 2x-capacity Poisson",
                      _p(**{**_CAPPED, "outage": (5.0, 15.0, "429")}),
                      Traffic("poisson", duration=40.0, rate=80.0), deadline=5.0,
                      checks=never | {"recovers"}))
    cells.append(Cell("brownout x10 for 10 s", _p(service_time=0.2, brownout=(5.0, 15.0, 10.0)),
                      Traffic("workers", duration=40.0, n=8), deadline=10.0,
                      checks=never | {"recovers"}))
    cells += [Cell(f"partial failure {ratio:.0%}, deadline 2 s",
                   _p(service_time=0.1, fail_ratio=ratio, retry_after=None),
                   # open loop: both clients get the same 1 000 calls (closed-loop workers
                   # would make more calls with whichever client fails faster)
                   Traffic("poisson", duration=20.0, rate=50.0), deadline=2.0, checks=never)
              for ratio in (0.3, 0.5, 0.8, 0.9)]
    # A brownout answered with 529s: the limit must keep what the provider holds.
    cells.append(Cell("brownout x10 for 10 s, 529s, 2x its capacity, deadline 3 s",
                      _p(service_time=0.2, brownout=(5.0, 15.0, 10.0), concurrency=20,
                         overload_status=529, retry_after=None),
                      Traffic("poisson", duration=30.0, rate=20.0), deadline=3.0,
                      checks=never))
    # Overload answers a share of requests gets whatever the load (a pool others share):
    # no evidence of a cap on how many at once.
    cells += [Cell(f"partial failure {ratio:.0%} of 529s, deadline 2 s",
                   _p(service_time=0.1, fail_ratio=ratio, fail_status=529, retry_after=None),
                   Traffic("poisson", duration=20.0, rate=50.0), deadline=2.0, checks=never)
              for ratio in (0.3, 0.5)]
    # 429s with Retry-After a provider gives a share of requests whatever the rate (a quota a
    # neighbour spends): retried as the official client retries them, not paced (above a
    # quarter, once a trial of the first cut shows the share does not follow the rate).
    cells += [Cell(f"partial failure {ratio:.0%} of 429s, Retry-After 1 s, deadline 2 s",
                   _p(service_time=0.1, fail_ratio=ratio, fail_status=429, retry_after=1.0),
                   Traffic("poisson", duration=20.0, rate=50.0), deadline=2.0, checks=never)
              for ratio in (0.05, 0.1, 0.3)]
    cells.append(Cell("absurd headers once, deadline 10 s",
                      _p(service_time=0.1, absurd_at=0), Traffic("sequential", duration=30.0),
                      deadline=10.0, checks=never | {"absurd"}))
    # benchmarks/overload.py's burst: a cold target, headers that describe the slots
    cells += [Cell(f"burst of 200 at once, {slots} slots x 0.2 s, slot headers{label}",
                   _p(service_time=0.2, concurrency=slots, capacity_headers=True,
                      retry_after=hint),
                   Traffic("burst", duration=30.0, n=200), deadline=30.0,
                   checks=never | {"drains"})
              for slots, hint, label in ((10, None, ""), (20, None, ""), (40, None, ""),
                                         (20, "auto", ", Retry-After"))]
    # The same burst again and again (a periodic batch job): each meets what the earlier
    # ones taught the client, after a pause that the measured rates average in.
    cells += [Cell(f"bursts of 200 every {every:g} s, {slots} slots x 0.2 s, slot headers",
                   _p(service_time=0.2, concurrency=slots, capacity_headers=True,
                      retry_after=None),
                   Traffic("bursts", duration=30.0, n=200, think=every), deadline=30.0,
                   checks=never | {"drains"})
              for slots, every in ((10, 6.0), (20, 4.0), (40, 3.0))]
    # Prompts of very different sizes against a token limit: each call's size drawn from
    # 10-1990 tokens (the client estimates it, the provider charges it), 2000 tokens/s.
    cells += [Cell(f"token limit 2000 tokens/s, calls of 10-1990 tokens{label}, Poisson "
                   f"{load:g}x, deadline {deadline:g} s",
                   _p(service_time=0.5, token_rate=2000.0, tokens_per_request=1000.0,
                      token_headers=headers),
                   Traffic("poisson", duration=40.0, rate=2.0 * load, tokens=(10.0, 1990.0)),
                   deadline=deadline, checks=never)
              for headers, label in ((True, ", token headers"), (False, ""))
              for load, deadline in ((0.8, 10.0), (1.5, 10.0), (1.5, 30.0))]
    # Fallbacks that are smaller, slower, down or throttled: a fallback must never serve
    # fewer calls than retrying the primary alone (the official client) would.
    capped = {"service_time": 0.5, "concurrency": 20}
    cells += [
        Cell("fallback of 5 slots, primary 20 slots x 0.5 s, Poisson 1.5x",
             _p(**capped), Traffic("poisson", duration=30.0, rate=60.0), deadline=10.0,
             fallback=True, fallback_model=_p(service_time=0.5, concurrency=5), checks=never),
        Cell("fallback 5x slower, primary 20 slots x 0.5 s, Poisson 1.25x",
             _p(**capped), Traffic("poisson", duration=30.0, rate=50.0), deadline=10.0,
             fallback=True, fallback_model=_p(service_time=2.5, concurrency=50), checks=never),
        Cell("fallback down (503), primary 20 slots x 0.5 s, Poisson 1.25x",
             _p(**capped), Traffic("poisson", duration=30.0, rate=50.0), deadline=10.0,
             fallback=True, checks=never,
             fallback_model=_p(service_time=0.5, outage=(0.0, 1e9, "503"), retry_after=None)),
        Cell("fallback throttled (429, Retry-After 5 s), primary 10% 503, 4 workers",
             _p(service_time=0.2, fail_ratio=0.1), Traffic("workers", duration=30.0, n=4),
             deadline=10.0, fallback=True, checks=never,
             fallback_model=_p(service_time=0.2, outage=(0.0, 1e9, "429"), retry_after=5.0)),
        Cell("outage 503 10 s, fallback of 2 slots, Poisson 20/s",
             _p(service_time=0.2, outage=(5.0, 15.0, "503"), retry_after=None),
             Traffic("poisson", duration=30.0, rate=20.0), deadline=10.0, fallback=True,
             fallback_model=_p(service_time=0.2, concurrency=2), checks=never),
    ]
    # Streamed answers: the first output after 0.3 s, the rest over 3 s more, each holding a
    # slot of the provider until its end (the client frees its own at the first output).
    stream = {"service_time": 0.3, "stream_tail": 3.0}
    streams_capacity = 20 / 3.3
    cells += [Cell(f"streams (3.3 s, first output at 0.3 s), 20 slots, Poisson {load:g}x",
                   _p(**stream, concurrency=20),
                   Traffic("poisson", duration=40.0, rate=load * streams_capacity),
                   deadline=60.0, checks=never)
              for load in (0.9, 1.5)]
    cells.append(Cell("streams (3.3 s, first output at 0.3 s), 20 slots, burst of 100",
                      _p(**stream, concurrency=20), Traffic("burst", duration=60.0, n=100),
                      deadline=120.0, checks=never))
    cells.append(Cell("streams (3.3 s, first output at 0.3 s), 5 requests/s, Poisson 1.5x",
                      _p(**stream, rate=5.0, burst=5.0),
                      Traffic("poisson", duration=40.0, rate=7.5), deadline=60.0, checks=never))
    cells += [Cell(f"batch flood of 400 + interactive, {slots} slots",
                   _p(service_time=0.2, concurrency=slots, jitter=0.0),
                   Traffic("mix", duration=40.0, n=400, think=0.5),
                   deadline=120.0, checks=never | {"priority"})
              for slots in (5, 20, 200)]
    return cells


def fleet_cells() -> list[Cell]:
    """Fleets of 4 and 64 processes sharing one key through Redis (modelled in memory, running
    the fleet's Lua), each next to the same processes without Redis (``apart``)."""
    never = frozenset({"never_worse", "fleet"})
    quantized = {"service_time": 0.05, "rate": 50.0, "burst": 5.0, "header_limit": 3000.0}
    cells = [Cell(f"fleet of {n}, quantized 50/s burst 5, headers 3000/min, with Redis",
                  _p(**quantized), Traffic("workers", duration=20.0, n=200), processes=n,
                  deadline=30.0, redis=True, checks=never | {"quantized"})
             for n in (4, 64)]
    # With a fallback ready, calls queued behind the fleet's pace move on to it.
    cells.append(Cell("fleet of 4, quantized 50/s burst 5, headers 3000/min, fallback, "
                      "with Redis", _p(**quantized), Traffic("workers", duration=20.0, n=200),
                      processes=4, deadline=30.0, fallback=True, redis=True, checks=never))
    cells += [Cell(f"fleet of {n}, healthy, 64 in flight, 100 ms, with Redis",
                   _p(service_time=0.1), Traffic("workers", duration=4.0, n=64), processes=n,
                   deadline=30.0, redis=True, checks=never | {"healthy"})
              for n in (4, 64)]
    # Symptom 6 of the pressure-control issue: one 503 (or a throttle: 429, 529) must not
    # block the model for the fleet, which has a fallback ready; the provider publishes limits.
    # (A throttled primary is not down: "fallback_fast" is the 503's and 529's promise.)
    cells += [Cell(f"fleet of 4, one {fault}, headers 3000/min, fallback, with Redis",
                   _p(service_time=0.05, transient=(fault,), retry_after=None,
                      header_limit=3000.0),
                   Traffic("sequential", duration=20.0, think=0.2), processes=4,
                   deadline=10.0, fallback=True, redis=True,
                   checks=never | {"transient"} | ({"fallback_fast"} if fault != "429"
                                                    else frozenset()))
              for fault in ("503", "429", "529")]
    cells.append(Cell("fleet of 4, outage 503 15 s, 4/s callers, fallback, with Redis",
                      _p(service_time=0.05, outage=(5.0, 20.0, "503"), retry_after=None),
                      Traffic("sequential", duration=45.0, think=0.2), processes=4,
                      deadline=10.0, fallback=True, redis=True,
                      checks=never | {"recovers", "fallback_fast"}))
    # An outage longer than the breaker's window, nowhere else to go: the workers that saw
    # the target serve probe it as lone clients do, so its return is seen at once (the
    # fleet-wide half-open probe alone came seconds later).
    cells.append(Cell("fleet of 4, outage 503 40 s, 8 workers, no fallback, with Redis",
                      _p(service_time=0.1, outage=(5.0, 45.0, "503"), retry_after=None),
                      Traffic("workers", duration=70.0, n=8), processes=4, deadline=10.0,
                      redis=True, checks=frozenset({"recovers", "fleet"})))
    cells += [Cell(f"fleet of {n}, Poisson 1.5x capacity (20 slots x 0.5 s), with Redis",
                   _p(**_CAPPED), Traffic("poisson", duration=30.0, rate=60.0), processes=n,
                   deadline=10.0, redis=True, checks=never)
              for n in (4, 64)]
    # Half the requests failing, nowhere else to go: the fleet's circuit must not refuse
    # what each worker alone would still try (the official client's retries serve 77 %).
    cells.append(Cell("fleet of 4, partial failure 50%, deadline 2 s, with Redis",
                      _p(service_time=0.1, fail_ratio=0.5, retry_after=None),
                      Traffic("poisson", duration=20.0, rate=50.0), processes=4,
                      deadline=2.0, redis=True, checks=never | {"fleet"}))
    # 429s given at random to processes sharing a key that publishes limits: each process
    # is given every fourth call (too evenly, and too few, to tell by the send rate), the
    # fleet judges its share in Redis. (At 50 calls/s the fleet's untried cuts still cost
    # 0.7 points against apart: docs/pressure.md.)
    cells += [Cell(f"fleet of 4, 30% of 429s at random, {rate:g} calls/s, headers 3000/min, "
                   "with Redis",
                   _p(service_time=0.1, fail_ratio=0.3, fail_status=429, retry_after=1.0,
                      header_limit=3000.0),
                   Traffic("poisson", duration=20.0, rate=rate), processes=4, deadline=2.0,
                   redis=True, checks=never)
              for rate in (25.0, 50.0)]
    return cells


MATRIX: list[Cell] = _matrix() + fleet_cells()
_REDUCED_NAMES = (
    "transient 429, deadline 1 s", "transient 503, deadline 2 s", "transient 529, deadline 1 s",
    "transient 500, deadline 1 s", "transient reset, deadline 1 s",
    "idle provider, 0.3 ms, batch + fallback", "idle provider, 3000 ms, batch + fallback",
    "healthy, 64 in flight, 100 ms", "Poisson 1.5x capacity (20 slots x 0.5 s)",
    "outage 503 15 s, 4/s caller, fallback", "absurd headers once, deadline 10 s",
    "partial failure 50%, deadline 2 s", "batch flood of 400 + interactive, 5 slots",
    "partial failure 50% of 529s, deadline 2 s",
    "transient 429, Retry-After 1 s, deadline 2 s", "partial failure 80%, deadline 2 s",
    "partial failure 30% of 429s, Retry-After 1 s, deadline 2 s",
    "healthy, 256 in flight, 1000 ms", "outage silent 10 s, 2x-capacity Poisson",
    "burst of 200 at once, 20 slots x 0.2 s, slot headers",
    "bursts of 200 every 4 s, 20 slots x 0.2 s, slot headers",
    "throttle episode 429 10 s, Retry-After 1 s, 4/s caller",
    "streams (3.3 s, first output at 0.3 s), 20 slots, burst of 100",
    "fallback throttled (429, Retry-After 5 s), primary 10% 503, 4 workers",
    "fallback down (503), primary 20 slots x 0.5 s, Poisson 1.25x",
)
#: The quantized cells are costly (the control's 200 workers retry in tight loops):
#: ``tests/test_simulator.py`` asserts the quantized bound on one seed of its own.
REDUCED: list[Cell] = [cell for cell in MATRIX if cell.name in _REDUCED_NAMES]
#: The fleet's cells in CI: the cheap one here; the quantized fleet of 4 on one seed of its own.
_FLEET_REDUCED = ("fleet of 4, one 503, headers 3000/min, fallback, with Redis",
                  "fleet of 4, 30% of 429s at random, 25 calls/s, headers 3000/min, with Redis")
REDUCED += [cell for cell in MATRIX if cell.name in _FLEET_REDUCED]
