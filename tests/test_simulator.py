"""The pressure controllers as a system, in the simulator: virtual time, seeded, no sockets.

Each test runs cells of ``resilient_llm.testing.sim`` — the engine's own request plan against
simulated providers, next to a control client modelled on the official SDK — and asserts the
invariants of the pressure-control issue that hold today. Behavioural, not timing: nothing
here sleeps; the whole file takes well under a minute of CPU.
"""

from __future__ import annotations

import random
from collections.abc import Generator

import pytest

from resilient_llm import Policy
from resilient_llm._policy import Priority
from resilient_llm.fleet import FleetPressure
from resilient_llm.testing.sim import (
    MATRIX,
    REDUCED,
    CallResult,
    Cell,
    ControlClient,
    Loop,
    ProviderModel,
    Reply,
    ResilientClient,
    Traffic,
    World,
    run_cell,
    simulate,
)
from resilient_llm.testing.sim.invariants import violations
from resilient_llm.testing.sim.redis_model import RedisModel

SEEDS = range(5)


def cell(name: str) -> Cell:
    found = [c for c in MATRIX if c.name == name]
    assert found, f"no cell named {name!r}"
    return found[0]


# --- the simulator itself ----------------------------------------------------------------------


def test_runs_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    chosen = cell("Poisson 1.5x capacity (20 slots x 0.5 s)")
    first, _ = simulate(chosen, 3, "resilient")
    again, _ = simulate(chosen, 3, "resilient")
    other, _ = simulate(chosen, 4, "resilient")
    assert first == again
    assert first != other


def test_the_control_retries_twice_and_honours_retry_after() -> None:
    loop = Loop()
    world = World(loop, {"m": ProviderModel(service_time=0.1, jitter=0.0,
                                            transient=("429", "429", "429"), retry_after=0.7)}, 0)
    client = ControlClient(world, deadline=60.0, seed=0)
    results: list[CallResult] = []
    loop.spawn(client.call("m"), done=results.append)
    loop.run()
    (result,) = results
    assert not result.ok and result.attempts == 3 and result.throttled == 3
    assert result.waited == pytest.approx(1.4)  # two waits of exactly Retry-After


@pytest.mark.parametrize("kind", ["control", "resilient"])
def test_a_streamed_answer_holds_its_slot_and_its_caller_until_its_end(kind: str) -> None:
    loop = Loop()
    provider = ProviderModel(service_time=0.3, jitter=0.0, stream_tail=3.0, concurrency=1)
    world = World(loop, {"m": provider}, 0)
    client = (ControlClient(world, deadline=60.0, seed=0) if kind == "control"
              else ResilientClient(world, policy=Policy(deadline=60.0, telemetry=False), seed=0))
    results: list[CallResult] = []
    later: list[Reply] = []
    loop.spawn(client.call("m"), done=results.append)
    loop.at(loop.now + 1.0, lambda: later.append(world.serve("m")))
    loop.run()
    (streamed,) = results
    assert streamed.ok and streamed.latency == pytest.approx(3.3)  # read to the stream's end
    assert later[0].status == 429  # its one slot is still held after the first output
    assert provider.capacity == pytest.approx(1 / 3.3)


def test_calls_of_different_sizes_are_charged_their_own_tokens() -> None:
    loop = Loop()
    provider = ProviderModel(service_time=0.1, jitter=0.0, token_rate=1000.0,
                             token_headers=True)
    World(loop, {"m": provider}, 0)
    large = provider.serve(loop.now, tokens=900.0)
    assert large.status == 200
    assert large.headers["x-ratelimit-remaining-tokens"] == "100"
    assert large.headers["x-ratelimit-reset-tokens"] == "0.900s"
    assert provider.serve(loop.now, tokens=200.0).status == 429  # 100 left: too few
    assert provider.serve(loop.now, tokens=100.0).status == 200  # enough for a small one

    sizes: list[float | None] = []

    class Recorder:
        def call(self, model: str, priority: Priority = "interactive",
                 tokens: float | None = None) -> Generator[float, None, CallResult]:
            sizes.append(tokens)
            yield 0.0
            return CallResult(loop.now, loop.now, True, 1, 0, 0.0)

    results: list[CallResult] = []
    Traffic("poisson", duration=10.0, rate=20.0, tokens=(10.0, 1990.0)).spawn(
        loop, [Recorder()], "m", results, random.Random(0))
    loop.run()
    assert len(sizes) > 100 and all(s is not None and 10.0 <= s <= 1990.0 for s in sizes)
    assert len({round(s or 0) for s in sizes}) > 50  # drawn per call, not one size


def test_thousands_of_simulated_seconds_take_seconds() -> None:
    import time

    chosen = cell("healthy, 16 in flight, 10000 ms")  # 40 simulated seconds, 2000 calls
    began = time.process_time()
    results, _ = simulate(chosen, 0, "resilient")
    assert len(results) >= 1000 and all(r.ok for r in results)
    assert results[-1].end - results[0].start > 30
    assert time.process_time() - began < 10


# --- the invariants ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["429", "503", "529", "500", "reset"])
@pytest.mark.parametrize("deadline", [1.0, 2.0])
def test_one_transient_fault_is_retried_and_succeeds(fault: str, deadline: float) -> None:
    chosen = cell(f"transient {fault}, deadline {deadline:g} s")
    metrics = run_cell(chosen, range(20))
    assert metrics["resilient"].success == 1.0
    assert metrics["resilient"].attempts == 2.0
    assert metrics["resilient"].p99 <= deadline


@pytest.mark.parametrize("name", [
    "idle provider, 0.3 ms, batch + fallback", "idle provider, 30 ms, batch + fallback",
    "idle provider, 3000 ms, batch + fallback", "idle provider, 30000 ms, batch + fallback",
])
def test_one_caller_on_an_idle_provider_sees_no_pressure(name: str) -> None:
    metrics = run_cell(cell(name), SEEDS)["resilient"]
    assert metrics.max_pressure < 0.3
    assert metrics.fallback_share == 0.0  # never "saturated": the primary serves every call
    assert metrics.success == 1.0


@pytest.mark.parametrize("name", [
    "transient 429, deadline 1 s", "transient 503, deadline 2 s",
    "healthy, 1 in flight, 1 ms", "healthy, 64 in flight, 100 ms",
    "Poisson 0.3x capacity (20 slots x 0.5 s)", "Poisson 0.9x capacity (20 slots x 0.5 s)",
    "outage 503 15 s, 4/s caller, fallback", "brownout x10 for 10 s",
    "absurd headers once, deadline 10 s", "batch flood of 400 + interactive, 20 slots",
])
def test_never_worse_than_the_official_client(name: str) -> None:
    chosen = cell(name)
    metrics = run_cell(chosen, SEEDS)
    ours, control = metrics["resilient"], metrics["control"]
    assert ours.success >= control.success
    assert ours.p99 <= max(1.1 * control.p99, chosen.deadline)


@pytest.mark.parametrize("name", [
    "Poisson 1.5x capacity (20 slots x 0.5 s)", "Retry-After huge, 1.5x of 20/s bucket",
    "token limit 2000 tokens/s (20 calls/s), 1.5x", "outage refused 10 s, 2x-capacity Poisson",
])
def test_under_overload_more_calls_succeed_with_fewer_attempts(name: str) -> None:
    metrics = run_cell(cell(name), range(2))
    ours, control = metrics["resilient"], metrics["control"]
    assert ours.success >= control.success
    if "huge" in name:  # a Retry-After past the deadline: neither retries, one attempt each
        assert ours.attempts <= control.attempts
    else:
        assert ours.attempts < control.attempts
    assert ours.share_429 < control.share_429


@pytest.mark.parametrize("name", ["healthy, 1 in flight, 1 ms", "healthy, 64 in flight, 100 ms",
                                  "healthy, 16 in flight, 10000 ms"])
def test_a_healthy_provider_is_not_throttled_by_the_client(name: str) -> None:
    metrics = run_cell(cell(name), SEEDS)
    assert metrics["resilient"].goodput >= 0.95 * metrics["control"].goodput


def test_with_a_fallback_ready_no_call_waits_on_a_down_primary() -> None:
    chosen = cell("outage 503 15 s, 4/s caller, fallback")
    for seed in SEEDS:
        results, t0 = simulate(chosen, seed, "resilient")
        assert all(r.ok for r in results)
        assert max(r.waited for r in results) <= 0.05
        during = [r for r in results if 5.0 <= r.start - t0 < 20.0]
        assert during and all(r.model == "fb" for r in during[1:])
        after = [r for r in results if r.start - t0 >= 21.0]
        # Recovered: the primary serves again within a second or two of the outage's end
        # (its breaker's probe), and nobody is paced.
        assert after and all(r.model == "m" for r in after if r.start - t0 >= 27.0)
    assert run_cell(chosen, SEEDS)["resilient"].recovery == 0.0


def test_no_single_response_keeps_a_target_unadmitted() -> None:
    chosen = cell("absurd headers once, deadline 10 s")
    for seed in SEEDS:
        results, _ = simulate(chosen, seed, "resilient")
        assert all(r.ok for r in results)
        assert max(r.waited for r in results) < 2.0


def test_a_recovered_provider_is_not_paced_and_a_throttle_is_forgotten() -> None:
    """One 429 (no headers, Retry-After 0.5 s) for a 4/s caller: its calls are not held after."""
    provider = lambda: ProviderModel(service_time=0.05, transient=("429",), retry_after=0.5)  # noqa: E731
    chosen = Cell("one 429 then healthy", provider, Traffic("sequential", duration=20.0,
                                                              think=0.2), deadline=5.0)
    for seed in SEEDS:
        results, t0 = simulate(chosen, seed, "resilient")
        assert all(r.ok for r in results)
        assert all(r.waited <= 0.01 for r in results if r.start - t0 >= 1.0)


def test_priorities_hold_under_a_batch_flood_and_batch_completes() -> None:
    roomy = run_cell(cell("batch flood of 400 + interactive, 200 slots"), SEEDS)["resilient"]
    assert roomy.interactive_p99 is not None and roomy.interactive_p99 <= 2 * 0.2
    for slots in (5, 20, 200):
        metrics = run_cell(cell(f"batch flood of 400 + interactive, {slots} slots"),
                           range(2))["resilient"]
        assert metrics.batch_success == 1.0


def test_quantized_limits_are_met_by_pacing_not_by_429s() -> None:
    """Headers describe 3000/min, the provider enforces 50/s with a burst of 5: after the first
    429s the headers' burst is not believed, and pacing (not 429s) holds the rate."""
    metrics = run_cell(cell("quantized 50/s burst 5, openai headers 3000/min, 1 process"), [0])
    ours, control = metrics["resilient"], metrics["control"]
    assert ours.late_429 <= 0.01 < 0.9 < control.late_429
    assert ours.goodput_ratio >= 0.9
    assert ours.success >= 0.99 > 0.05 > control.success


# --- fleets sharing one key through Redis (modelled in memory, running the fleet's Lua) ---------


def test_fleet_runs_are_deterministic_per_seed() -> None:
    chosen = cell("fleet of 4, one 429, headers 3000/min, fallback, with Redis")
    first, _ = simulate(chosen, 1, "resilient")
    assert first == simulate(chosen, 1, "resilient")[0]
    assert first != simulate(chosen, 2, "resilient")[0]


def test_fleet_processes_share_one_target_through_the_modelled_redis() -> None:
    loop = Loop()
    world = World(loop, {"m": ProviderModel(service_time=0.05, rate=20.0, burst=20.0,
                                            header_limit=1200.0)}, 0)
    redis = RedisModel(lambda: loop.now)
    policy = Policy(deadline=10.0, telemetry=False)
    clients = [ResilientClient(world, policy=policy, seed=0, process=p, redis=redis)
               for p in range(4)]
    results: list[CallResult] = []
    Traffic("workers", duration=3.0, n=8).spawn(loop, clients, "m", results,
                                                random.Random(0))
    loop.run()
    assert results and all(r.ok for r in results)
    states = [client.state("m") for client in clients]
    assert all(isinstance(state, FleetPressure) for state in states)
    fleet = states[0].snapshot(loop.now).fleet
    assert fleet is not None and fleet.mode == "fleet" and fleet.active_workers == 4
    assert redis.evals > 0


def test_quantized_limits_are_met_by_a_fleet_with_redis() -> None:
    """4 processes, 200 workers, a provider enforcing 50/s with a burst of 5 under headers of
    3000/min: with Redis the fleet meets the quantized bound, and does no worse than the same
    processes pacing apart (``benchmarks/pressure_matrix.py --only "fleet of"`` runs 64 too)."""
    chosen = cell("fleet of 4, quantized 50/s burst 5, headers 3000/min, with Redis")
    metrics = run_cell(chosen, [0])
    assert violations(chosen, metrics) == []
    assert metrics["resilient"].late_429 <= 0.01 < metrics["control"].late_429


def test_429s_a_provider_gives_at_random_are_retried_as_the_official_client_retries_them(
) -> None:
    """One request in ten refused with ``Retry-After: 1`` whatever the rate: both clients
    retry the refused ones, and meet the same refusals (common random numbers), so they
    serve the same calls. Paced as a rate limit, 34 % of 20 calls/s were served; the
    official client, 99 %."""
    chosen = cell("partial failure 10% of 429s, Retry-After 1 s, deadline 2 s")
    metrics = run_cell(chosen, range(3))
    ours, official = metrics["resilient"], metrics["control"]
    assert ours.success >= official.success
    assert ours.attempts == pytest.approx(official.attempts, rel=0.02)
    assert ours.p99 <= 1.1 * official.p99


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_a_share_refused_at_random_is_served_as_the_official_client_serves_it(
        share: float) -> None:
    """30 % and 50 % refused with ``Retry-After: 1`` whatever the rate, 50 calls/s, a 2 s
    deadline: over a quarter of the answers are 429s, but no more of the busier
    half-seconds than of the quiet ones, so no cut. Cut after cut, 38 % (30 %) were served
    against the official client's 91 %; cut and then tried, 87.6 %."""
    base = cell("partial failure 30% of 429s, Retry-After 1 s, deadline 2 s")
    chosen = Cell(base.name, lambda: ProviderModel(service_time=0.1, fail_ratio=share,
                                                   fail_status=429, retry_after=1.0),
                  base.traffic, deadline=base.deadline)
    metrics = run_cell(chosen, range(3))
    ours, official = metrics["resilient"], metrics["control"]
    assert ours.success >= official.success
    assert ours.p99 <= 1.1 * official.p99


@pytest.mark.parametrize("redis", [False, True], ids=["apart", "with Redis"])
def test_processes_given_few_calls_each_serve_a_share_refused_at_random_as_the_official_client(
        redis: bool) -> None:
    """Four processes given 25 calls/s between them (every fourth call: sends too even, and
    too few, to tell a limit's 429s by the send rate), 30 % refused at random with
    ``Retry-After: 1`` and headers of 3000/min, a 2 s deadline. Cut on the share alone and
    never tried, and each 429 of a cut on trial holding the process until its Retry-After,
    they served 85.7 % apart and 78.0 % with Redis, where the official client served
    91.2 % (20 seeds)."""
    chosen = Cell("4 processes, 30 % of 429s at random",
                  lambda: ProviderModel(service_time=0.1, fail_ratio=0.3, fail_status=429,
                                        retry_after=1.0, header_limit=3000.0),
                  Traffic("poisson", duration=20.0, rate=25.0), deadline=2.0, processes=4,
                  redis=redis)
    metrics = run_cell(chosen, range(3))
    ours, official = metrics["resilient"], metrics["control"]
    assert ours.success >= official.success
    assert ours.p99 <= 1.1 * official.p99
    if redis:
        assert ours.success >= metrics["apart"].success


def test_a_fleet_tries_a_cut_a_worker_made_on_a_share_refused_at_random_and_undoes_it() -> None:
    """The same four processes given 50 calls/s with Redis: in seed 3 one process's sends
    happened to read its 429s as a limit's, and the fleet's rate was cut; remembered for a
    minute, the cut made every later 429 a limit's and was renewed, cut after cut (800 of
    1 009 calls served, where the processes apart and the official client served 911). The
    fleet now tries such a cut as one process tries its own, and undoes it."""
    chosen = Cell("4 processes with Redis, 30 % of 429s at random, 50 calls/s",
                  lambda: ProviderModel(service_time=0.1, fail_ratio=0.3, fail_status=429,
                                        retry_after=1.0, header_limit=3000.0),
                  Traffic("poisson", duration=20.0, rate=50.0), deadline=2.0, processes=4,
                  redis=True)
    metrics = run_cell(chosen, [3])
    ours = metrics["resilient"]
    assert ours.success >= metrics["control"].success
    assert ours.success >= metrics["apart"].success


def test_two_clients_sending_the_same_attempt_of_the_same_call_meet_the_same_answer() -> None:
    """Common random numbers: which attempts a provider refuses at random depends on the
    call and the attempt, not on the order attempts arrive in, so two clients that retry
    alike are served alike and a difference between them is their own."""
    def refused(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bool]:
        model = ProviderModel(service_time=0.1, fail_ratio=0.5, fail_status=429)
        model.start(Loop(), seed=3)
        return {key: model.serve(0.0, key=key).status == 429 for key in keys}

    keys = [(call, attempt) for call in range(1, 40) for attempt in range(3)]
    forward, backward = refused(keys), refused(keys[::-1])
    assert forward == backward
    assert 0.3 < sum(forward.values()) / len(keys) < 0.7


@pytest.mark.parametrize("chosen", REDUCED, ids=lambda c: c.name)
def test_the_reduced_matrix_meets_every_invariant(chosen: Cell) -> None:
    """The whole acceptance list of the pressure-control issue, cell by cell
    (``resilient_llm.testing.sim.invariants``); the full matrix is
    ``benchmarks/pressure_matrix.py --check``."""
    assert violations(chosen, run_cell(chosen, range(3))) == []


def test_bursts_traffic_needs_a_period() -> None:
    with pytest.raises(ValueError, match="think > 0"):
        Traffic("bursts", n=10, think=0.0).offered(0.2)
