"""Per-call cost of telemetry through the drop-in OpenAI client, three ways, side by side.

    python benchmarks/telemetry_overhead.py [--calls 3000] [--batch 100] [--loopback]

* ``disabled``: ``Policy(telemetry=False)`` and no listener subscribed (no tap, no events read);
* ``api``: telemetry on, OpenTelemetry API only (no SDK configured: the API's no-op
  providers) — what a library user without an observability stack pays;
* ``sdk``: the OpenTelemetry SDK with an in-memory span exporter (``SimpleSpanProcessor``) and
  an ``InMemoryMetricReader``: every span and metric point is really built.

All three run in one process, in interleaved batches (so drift and warm-up hit them alike),
against the in-process fault provider (default) or its loopback HTTP server. Batches are timed
in process CPU time (the work is CPU-bound, and a shared machine's load then does not count).
Reported: the median per-call time over batches and the median of per-round ratios to
``disabled``; then the listener alone on synthetic events. A ratio, not a timed
assertion: the tests never depend on it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient_llm import Policy
from resilient_llm.engine.registry import registry
from resilient_llm.openai import OpenAI
from resilient_llm.telemetry import otel as _telemetry
from resilient_llm.testing import FaultProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def make_client(provider: FaultProvider, base_url: str | None, *, telemetry: bool) -> OpenAI:
    if base_url is None:
        http = httpx2.Client(transport=provider.transport())
        base_url = "http://bench.test/v1"
    else:
        http = httpx2.Client()
    return OpenAI(api_key="sk-bench", base_url=base_url, http_client=http,
                  policy=Policy(telemetry=telemetry))


def run(calls: int, batch: int, loopback: bool) -> dict[str, list[float]]:
    provider = FaultProvider()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    with ExitStack() as stack:
        base_url = None
        if loopback:
            base_url = stack.enter_context(provider.serve()).openai_base_url
        off = stack.enter_context(make_client(provider, base_url, telemetry=False))
        on = stack.enter_context(make_client(provider, base_url, telemetry=True))

        def disabled() -> OpenAI:
            _telemetry.uninstall()
            _telemetry.configure()
            return off

        def api_only() -> OpenAI:
            _telemetry.install()
            _telemetry.configure()
            return on

        def sdk() -> OpenAI:
            _telemetry.install()
            _telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
            exporter.clear()
            return on

        modes: dict[str, Callable[[], OpenAI]] = {
            "disabled": disabled, "api": api_only, "sdk": sdk}
        for setup in modes.values():  # warm up every path
            client = setup()
            registry.clear()
            for _ in range(200):
                client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        per_call: dict[str, list[float]] = {name: [] for name in modes}
        rounds = max(1, calls // batch)
        for index in range(rounds):
            order = list(modes.items())
            if index % 2:
                order.reverse()
            for name, setup in order:
                client = setup()
                # The fault provider advertises 10 000 requests/min and the engine paces to
                # it: start each batch with fresh pacer state, so no batch waits for admission.
                registry.clear()
                gc.collect()
                started = time.process_time()  # CPU time: other processes' load does not count
                for _ in range(batch):
                    client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
                per_call[name].append((time.process_time() - started) / batch)
        spans = len(exporter.get_finished_spans())
    _telemetry.configure()
    _telemetry.install()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    assert spans == 2 * batch, f"the sdk mode exported {spans} spans for {batch} calls"
    return per_call


def listener_cost(repeat: int = 5, calls: int = 20_000) -> dict[str, float]:
    """The listener alone, on a synthetic successful call (five events), µs per call.

    End-to-end timings on a shared machine jitter by more than the effect measured; this
    isolates it. ``api`` is the lean path (no SDK); ``sdk`` builds two spans and ~8 points.
    """
    from resilient_llm.engine.call import end_call, start_call
    from resilient_llm.events.bus import Event, emit

    policy = Policy()
    events = [Event("waited", 0.0, seconds=1e-5, detail="admission"),
              Event("attempt_started", 0.0, attempt=1, target="gpt-4.1"),
              Event("attempt_finished", 0.001, attempt=1, target="gpt-4.1", status=200),
              Event("succeeded", 0.001, target="gpt-4.1")]

    def one_run() -> float:
        started = time.process_time()
        for _ in range(calls):
            call, token = start_call(policy, target="gpt-4.1")
            record = call.record
            record.provider, record.server_address, record.server_port = "openai", "x", 443
            record.path = "/v1/chat/completions"
            for event in events:
                emit(record, event)
            end_call(token)
        return (time.process_time() - started) / calls

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    results: dict[str, float] = {}
    for name in ("disabled", "api", "sdk"):
        if name == "disabled":
            _telemetry.uninstall()
        else:
            _telemetry.install()
        _telemetry.configure(tracer_provider=tracer_provider if name == "sdk" else None,
                             meter_provider=meter_provider if name == "sdk" else None)
        one_run()
        results[name] = min(one_run() for _ in range(repeat))
        exporter.clear()
    _telemetry.configure()
    _telemetry.install()
    return {name: (value - results["disabled"]) * 1e6 for name, value in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per mode (≥ 1000)")
    parser.add_argument("--batch", type=int, default=100, help="calls per timed batch")
    parser.add_argument("--loopback", action="store_true",
                        help="use the loopback HTTP server instead of the in-process transport")
    args = parser.parse_args()
    per_call = run(max(args.calls, 1000), args.batch, args.loopback)
    base = per_call["disabled"]
    where = "loopback HTTP" if args.loopback else "in-process transport"
    print(f"{len(base) * args.batch} calls per mode through the drop-in OpenAI client, {where}, "
          f"{len(base)} interleaved rounds of {args.batch}")
    print(f"{'mode':<10}{'min':>8}{'p25':>8}{'median':>8}{'p75':>8}  µs/call"
          f"{'vs disabled: min':>19}{'paired median':>15}")
    for name, samples in per_call.items():
        q1, median, q3 = statistics.quantiles(samples, n=4)
        # Each round times every mode back to back: the median of the per-round ratios is far
        # less sensitive to machine noise than a ratio of medians; the minimum is the cost
        # with the least interference.
        ratio = statistics.median(s / b for s, b in zip(samples, base, strict=True))
        print(f"{name:<10}{min(samples) * 1e6:>8.1f}{q1 * 1e6:>8.1f}{median * 1e6:>8.1f}"
              f"{q3 * 1e6:>8.1f}         {(min(samples) / min(base) - 1) * 100:>+10.1f}%"
              f"{(ratio - 1) * 100:>+14.1f}%")
    cost = listener_cost()
    median = statistics.median(base) * 1e6
    print("listener alone (synthetic call, min of 5 × 20 000): "
          f"api {cost['api']:.1f} µs/call ({cost['api'] / median * 100:.2f} % of a disabled "
          f"call here), sdk {cost['sdk']:.1f} µs/call ({cost['sdk'] / median * 100:.1f} %)")

if __name__ == "__main__":
    main()
