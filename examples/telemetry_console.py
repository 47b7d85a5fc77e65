"""One degraded call, seen through OpenTelemetry's console exporter. No network, no API key.

    python -m pip install -e '.[openai,otel]'
    python examples/telemetry_console.py

The ``otel`` extra installs the OpenTelemetry SDK that the example configures. The in-process
fault provider answers ``gpt-4.1`` with a 500 (retried) and a 503 (overloaded: the call moves
to ``gpt-4.1-mini``, which answers). The script prints the spans as the SDK's
``ConsoleSpanExporter`` writes them, the metric points, the WARNING log line and ``outcome()``.
In production, replace the console exporter by OTLP (see docs/telemetry.md).
"""

from __future__ import annotations

import logging

import httpx2
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from resilient_llm import (
    Policy,
    attributes,  # public as resilient_llm.attributes
    outcome,
)
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider, Usage


def main() -> None:
    # 1. The application configures the SDK once (resilient-llm itself only uses the API).
    resource = Resource.create({"service.name": "telemetry-example"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()  # a console reader prints every point as JSON: too long here
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # 2. A misbehaving provider: gpt-4.1 fails twice, gpt-4.1-mini answers.
    provider = FaultProvider()
    provider.script(Fault.status(500), Fault.status(503), model="gpt-4.1")
    provider.script(Fault.ok(usage=Usage(input_tokens=1200, output_tokens=80,
                                         cache_read_tokens=1024)), model="gpt-4.1-mini")
    policy = Policy(
        fallbacks={"gpt-4.1": ["gpt-4.1-mini"]},
        prices={"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
                "gpt-4.1-mini": {"input": 0.4, "output": 1.6, "cache_read": 0.1}},
    )
    client = OpenAI(api_key="sk-example-not-a-real-key", base_url="http://fault.test/v1",
                    policy=policy, http_client=httpx2.Client(transport=provider.transport()))

    # 3. The call, attributed to a feature and a tenant.
    with client, attributes(feature="search", tenant="acme"):
        answer = client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Summarise the report."}])

    # 4. What the metrics say.
    print("\n--- metric points ---")
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        value: object = f"count={point.count} sum={point.sum:.6g}"
                    else:
                        value = getattr(point, "value", None)
                    attrs = point.attributes or {}
                    short = {k: v for k, v in attrs.items()
                             if k.startswith(("resilient_llm.", "gen_ai.token", "error"))
                             or k in ("gen_ai.request.model", "gen_ai.response.model")}
                    print(f"{metric.name} [{metric.unit}] {value} {short}")

    print("\n--- outcome(answer) ---")
    report = outcome(answer)
    print(f"served_by={report.served_by} degraded={report.degraded} reason={report.reason} "
          f"attempts={[(a.target, a.failure or 'ok') for a in report.attempts]}")


if __name__ == "__main__":
    main()
